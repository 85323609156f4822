import { describe, expect, it } from 'vitest'
import { ControllerCore } from '../../../src/core/index.ts'
import * as Y from 'yjs'
import { Origin } from '../../../src/registry/index.ts'

const core = (id: string): ControllerCore => new ControllerCore({ controllerId: id, heartbeatIntervalMs: 1000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 })
const cap = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 1 }
const reg = (c: ControllerCore, id: string, incarnation?: number): void => { c.register({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap], incarnation }) }

describe('ControllerCore registry hash', () => {
  it('is the same for the same entries in any order, and returns to the empty value when they leave', () => {
    const a = core('a')
    const empty = a.registryHash
    expect(empty).toMatch(/^[0-9a-f]{16}$/)
    for (let i = 0; i < 200; i++) reg(a, `w${i}`)
    const b = core('b')
    Y.applyUpdate(b.registry.doc, Y.encodeStateAsUpdate(a.registry.doc), Origin.remote)
    expect(b.registryHash).toBe(a.registryHash)
    expect(a.registryHash).not.toBe(empty)
    const hashes = new Set<string>([empty])
    for (let i = 199; i >= 0; i--) {
      a.deregister(`w${i}`)
      hashes.add(a.registryHash)
    }
    expect(a.registryHash).toBe(empty)
    // 199 intermediate sets and the empty one: every one hashed differently.
    expect(hashes.size).toBe(200)
  })

  it('tells apart the same worker at another incarnation or owner', () => {
    const a = core('a')
    const b = core('b')
    reg(a, 'w', 1)
    reg(b, 'w', 1)
    expect(a.registryHash).not.toBe(b.registryHash)
    const a2 = core('a')
    reg(a2, 'w', 2)
    expect(a2.registryHash).not.toBe(a.registryHash)
  })
})

describe('ControllerCore routing of other owners\' workers', () => {
  const route = (c: ControllerCore, id: string): { worker_id: string, state: string } => c.router.route({ verb: 'invoke', capability: 'echo' }) as { worker_id: string, state: string }

  it('waits for the owner\'s first digest before calling its workers healthy (a peer that was only heard from)', () => {
    const b = core('b')
    reg(b, 'w1')
    reg(b, 'w2')
    b.heartbeat({ worker_id: 'w1' })
    // w2 is shutting down: b's digest lists it as draining (not routable).
    b.heartbeat({ worker_id: 'w2', status: 'draining' })
    const a = core('a')
    Y.applyUpdate(a.registry.doc, Y.encodeStateAsUpdate(b.registry.doc), Origin.remote)
    expect(a.stateCounts().pending).toBe(2)
    // A sync or a registry update from b: b is alive, but what of its workers is not known yet.
    a.membership.heard('b')
    expect(a.stateCounts()).toMatchObject({ healthy: 0, pending: 2 })
    // Pending workers are still a last resort when nothing healthy offers the capability.
    expect(['w1', 'w2']).toContain(route(a, 'echo').worker_id)
    expect(route(a, 'echo').state).toBe('pending')
    // b's word: w1 healthy, w2 draining.
    a.membership.receive('b', 'peer-b', b.membership.digest())
    expect(a.stateCounts()).toMatchObject({ healthy: 1, draining: 1, pending: 0 })
    for (let i = 0; i < 5; i++) expect(route(a, 'echo')).toMatchObject({ worker_id: 'w1', state: 'healthy' })
  })
})

describe('ControllerCore: a peer drops this controller\'s segment (it thought it gone)', () => {
  it('the entries put back keep what this controller knew of its workers: a healthy one stays healthy, a draining (or dead) one is not made routable', async () => {
    const a = core('a')
    reg(a, 'live')
    reg(a, 'leaving')
    a.heartbeat({ worker_id: 'leaving', status: 'draining' })
    expect(a.router.stateOf('live')).toBe('healthy')
    expect(a.router.stateOf('leaving')).toBe('draining')
    const b = core('b')
    Y.applyUpdate(b.registry.doc, Y.encodeStateAsUpdate(a.registry.doc), Origin.remote)
    expect(b.registry.dropOwner('a')).toBe(1)
    // The drop reaches a (a partition heals): its segment is deleted there, and put back in the same turn.
    Y.applyUpdate(a.registry.doc, Y.encodeStateAsUpdate(b.registry.doc), Origin.remote)
    await new Promise(resolve => setImmediate(resolve))
    expect(a.registry.size).toBe(2)
    expect(a.router.stateOf('live')).toBe('healthy')
    expect(a.router.stateOf('leaving')).toBe('draining')
    expect(a.router.route({ verb: 'invoke', capability: 'echo' })).toMatchObject({ worker_id: 'live' })
  })
})
