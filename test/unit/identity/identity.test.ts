import { describe, expect, it } from 'vitest'
import { covers, createIdentity, isIdentityName, parseSpiffeId, parseSpiffeUri, spiffeId } from '../../../src/identity/index.ts'

const TD = 'capmesh.local'

describe('parseSpiffeId', () => {
  it('reads the role and name of a capmesh SPIFFE id in the trust domain', () => {
    expect(parseSpiffeId('spiffe://capmesh.local/worker/w1', TD)).toEqual({ role: 'worker', name: 'w1' })
    expect(parseSpiffeId('spiffe://capmesh.local/client/billing', TD)).toEqual({ role: 'client', name: 'billing' })
    expect(parseSpiffeId('spiffe://capmesh.local/operator/alice', TD)).toEqual({ role: 'operator', name: 'alice' })
    expect(parseSpiffeId('spiffe://capmesh.local/metrics/prom', TD)).toEqual({ role: 'metrics', name: 'prom' })
    // Any printable ASCII but the URI's structural characters.
    expect(parseSpiffeId('spiffe://capmesh.local/worker/gpu:7.a_b-c~!$&()*+,;=@', TD)).toEqual({ role: 'worker', name: 'gpu:7.a_b-c~!$&()*+,;=@' })
    expect(parseSpiffeId(`spiffe://capmesh.local/worker/${'x'.repeat(256)}`, TD)?.name).toHaveLength(256)
  })

  it.each([
    ['another trust domain', 'spiffe://other.local/worker/w1'],
    ['a trust domain that only starts the same', 'spiffe://capmesh.local.evil/worker/w1'],
    ['upper-case trust domain', 'spiffe://CAPMESH.local/worker/w1'],
    ['upper-case scheme', 'SPIFFE://capmesh.local/worker/w1'],
    ['another scheme', 'https://capmesh.local/worker/w1'],
    ['no scheme', 'capmesh.local/worker/w1'],
    ['a port', 'spiffe://capmesh.local:443/worker/w1'],
    ['user info', 'spiffe://u@capmesh.local/worker/w1'],
    ['one segment', 'spiffe://capmesh.local/worker'],
    ['three segments', 'spiffe://capmesh.local/worker/w1/x'],
    ['a trailing slash', 'spiffe://capmesh.local/worker/w1/'],
    ['an empty role', 'spiffe://capmesh.local//w1'],
    ['an empty name', 'spiffe://capmesh.local/worker/'],
    ['an unknown role', 'spiffe://capmesh.local/admin/root'],
    ['an upper-case role', 'spiffe://capmesh.local/Worker/w1'],
    ['percent-encoding', 'spiffe://capmesh.local/worker/w%31'],
    ['an encoded slash', 'spiffe://capmesh.local/worker/a%2Fb'],
    ['a query', 'spiffe://capmesh.local/worker/w1?x=1'],
    ['a fragment', 'spiffe://capmesh.local/worker/w1#f'],
    ['a space', 'spiffe://capmesh.local/worker/w 1'],
    ['a control character', 'spiffe://capmesh.local/worker/w\n1'],
    ['non-ASCII', 'spiffe://capmesh.local/worker/wé'],
    ['a name over 256 characters', `spiffe://capmesh.local/worker/${'x'.repeat(257)}`],
    ['the empty string', '']
  ])('refuses %s', (_, uri) => {
    expect(parseSpiffeId(uri, TD)).toBeNull()
  })

  it('refuses everything when the trust domain given is not a valid one', () => {
    expect(parseSpiffeId('spiffe:///worker/w1', '')).toBeNull()
  })

  it('parseSpiffeUri reads the trust domain too', () => {
    expect(parseSpiffeUri('spiffe://other.local/client/c')).toEqual({ trustDomain: 'other.local', role: 'client', name: 'c' })
    expect(parseSpiffeUri('spiffe://Other/client/c')).toBeNull()
  })
})

describe('identities', () => {
  it('spiffeId builds the id and refuses invalid parts', () => {
    expect(spiffeId(TD, 'worker', 'w1')).toBe('spiffe://capmesh.local/worker/w1')
    expect(() => spiffeId(TD, 'worker', 'a/b')).toThrow(TypeError)
    expect(() => spiffeId('Bad', 'worker', 'w1')).toThrow(TypeError)
    expect(() => spiffeId(TD, 'root' as 'worker', 'w1')).toThrow(TypeError)
    expect(isIdentityName('a%b')).toBe(false)
    expect(isIdentityName('')).toBe(false)
  })

  it('createIdentity gives each role its worker ids, frozen', () => {
    const worker = createIdentity({ trustDomain: TD, role: 'worker', name: 'w1', via: 'certificate' })
    expect(worker).toEqual({ id: 'spiffe://capmesh.local/worker/w1', role: 'worker', name: 'w1', workerIds: ['w1'], via: 'certificate' })
    expect(Object.isFrozen(worker)).toBe(true)
    expect(Object.isFrozen(worker.workerIds)).toBe(true)
    expect(() => { worker.workerIds!.push('w2') }).toThrow(TypeError)
    expect(createIdentity({ trustDomain: TD, role: 'worker', name: 'pool', via: 'token', workerIds: ['a', 'b', 'a'] }).workerIds).toEqual(['a', 'b'])
    expect(createIdentity({ trustDomain: TD, role: 'operator', name: 'op', via: 'token' }).workerIds).toBeNull()
    expect(createIdentity({ trustDomain: TD, role: 'client', name: 'c', via: 'token', workerIds: ['x'] }).workerIds).toEqual([])
    expect(createIdentity({ trustDomain: TD, role: 'metrics', name: 'm', via: 'certificate' }).workerIds).toEqual([])
    expect(() => createIdentity({ trustDomain: TD, role: 'worker', name: 'w', via: 'token', workerIds: ['has space'] })).toThrow(TypeError)
  })

  it('covers: an operator any worker, a worker its own ids, clients and metrics none', () => {
    const op = createIdentity({ trustDomain: TD, role: 'operator', name: 'op', via: 'token' })
    const w1 = createIdentity({ trustDomain: TD, role: 'worker', name: 'w1', via: 'certificate' })
    const pool = createIdentity({ trustDomain: TD, role: 'worker', name: 'pool', via: 'token', workerIds: ['a', 'b'] })
    const client = createIdentity({ trustDomain: TD, role: 'client', name: 'w1', via: 'token' })
    const metrics = createIdentity({ trustDomain: TD, role: 'metrics', name: 'w1', via: 'token' })
    expect(covers(op, 'anything')).toBe(true)
    expect(covers(w1, 'w1')).toBe(true)
    expect(covers(w1, 'w2')).toBe(false)
    expect(covers(pool, 'a')).toBe(true)
    expect(covers(pool, 'b')).toBe(true)
    expect(covers(pool, 'pool')).toBe(false)
    expect(covers(client, 'w1')).toBe(false)
    expect(covers(metrics, 'w1')).toBe(false)
    // A hand-made worker identity with workerIds null covers nothing (null means "any" only for operators).
    expect(covers({ ...w1, workerIds: null }, 'w1')).toBe(false)
  })
})
