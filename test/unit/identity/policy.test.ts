import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../../src/errors.ts'
import { createIdentity, defaultRoutePolicy, globMatcher, loadPolicy, parsePolicy, policyWithDenials, type Identity, type Role } from '../../../src/identity/index.ts'

const TD = 'capmesh.local'
const root = mkdtempSync(join(tmpdir(), 'capmesh-policy-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const who = (role: Role, name: string): Identity => createIdentity({ trustDomain: TD, role, name, via: 'token' })
const billing = who('client', 'billing')
const teamA = who('client', 'team-a')
const other = who('client', 'other')
const op = who('operator', 'alice')
const w13 = who('worker', 'w13')
const prom = who('metrics', 'prom')

function file (name: string, content: unknown): string {
  const path = join(root, name)
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError')
}

const EXAMPLE = {
  rules: [
    { identities: ['spiffe://capmesh.local/client/billing', 'spiffe://capmesh.local/client/team-*'], capabilities: ['invoice-*', 'echo'] },
    { identities: ['spiffe://capmesh.local/client/team-a'], capabilities: ['gpu-?', 'report*v?-*'] }
  ],
  deny: ['spiffe://capmesh.local/worker/w13', 'spiffe://capmesh.local/client/banned-*']
}

describe('globMatcher', () => {
  it('* matches any run (none included), ? exactly one character, the rest literally', () => {
    const m = globMatcher(['invoice-*', 'gpu-?', 'a*b*c', 'x.y', 'we?rd*', '*'])
    const only = (glob: string): ((s: string) => boolean) => globMatcher([glob])
    expect(only('invoice-*')('invoice-')).toBe(true)
    expect(only('invoice-*')('invoice-eu')).toBe(true)
    expect(only('invoice-*')('invoice')).toBe(false)
    expect(only('invoice-*')('xinvoice-eu')).toBe(false)
    expect(only('gpu-?')('gpu-1')).toBe(true)
    expect(only('gpu-?')('gpu-')).toBe(false)
    expect(only('gpu-?')('gpu-12')).toBe(false)
    expect(only('a*b*c')('abc')).toBe(true)
    expect(only('a*b*c')('aXbYbZc')).toBe(true)
    expect(only('a*b*c')('acb')).toBe(false)
    expect(only('a*b*c')('ab')).toBe(false)
    expect(only('*abc*abc')('abcabc')).toBe(true)
    expect(only('*ab')('ab')).toBe(true)
    expect(only('ab*ba')('aba')).toBe(false) // the two ends may not overlap
    expect(only('?*?')('a')).toBe(false)
    expect(only('?*?')('ab')).toBe(true)
    expect(only('x.y')('x.y')).toBe(true)
    expect(only('x.y')('xzy')).toBe(false) // no RegExp meaning leaks in
    expect(only('(a|b)')('a')).toBe(false)
    expect(only('(a|b)')('(a|b)')).toBe(true)
    expect(only('Echo')('echo')).toBe(false)
    expect(m('anything at all')).toBe(true)
  })

  it('stays fast where a backtracking RegExp would not', () => {
    const m = globMatcher(['*a*a*a*a*a*a*a*a*b'])
    const name = 'a'.repeat(256)
    const t = performance.now()
    for (let i = 0; i < 100; i++) expect(m(name)).toBe(false)
    expect(performance.now() - t).toBeLessThan(500)
  })
})

describe('the route policy', () => {
  it('without a file: every client and operator may route anywhere; workers and metrics never; nobody denied', () => {
    const p = defaultRoutePolicy()
    expect(p.allowsRoute(billing, 'anything')).toBe(true)
    expect(p.allowsRoute(op, 'anything')).toBe(true)
    expect(p.allowsRoute(w13, 'echo')).toBe(false)
    expect(p.allowsRoute(prom, 'echo')).toBe(false)
    expect(p.denies(w13.id)).toBe(false)
  })

  it('with a file: a client only where a rule names it and the capability', () => {
    const p = loadPolicy(file('policy.json', EXAMPLE))
    expect(p.allowsRoute(billing, 'invoice-eu')).toBe(true)
    expect(p.allowsRoute(billing, 'echo')).toBe(true)
    expect(p.allowsRoute(billing, 'gpu-1')).toBe(false)
    expect(p.allowsRoute(billing, 'echo2')).toBe(false)
    expect(p.allowsRoute(teamA, 'invoice-us')).toBe(true) // by prefix
    expect(p.allowsRoute(teamA, 'gpu-1')).toBe(true)
    expect(p.allowsRoute(teamA, 'report-v2-q3')).toBe(true)
    expect(p.allowsRoute(who('client', 'team-b'), 'gpu-1')).toBe(false)
    expect(p.allowsRoute(who('client', 'team-'), 'echo')).toBe(true) // the prefix itself matches
    expect(p.allowsRoute(other, 'echo')).toBe(false)
    // The same name in another trust domain is another identity.
    expect(p.allowsRoute(createIdentity({ trustDomain: 'other.local', role: 'client', name: 'billing', via: 'token' }), 'echo')).toBe(false)
  })

  it('operators always may, workers and metrics never, whatever the rules say', () => {
    const p = parsePolicy({ rules: [{ identities: ['spiffe://capmesh.local/worker/w1', 'spiffe://capmesh.local/metrics/prom'], capabilities: ['*'] }] })
    expect(p.allowsRoute(op, 'anything')).toBe(true)
    expect(p.allowsRoute(who('worker', 'w1'), 'echo')).toBe(false)
    expect(p.allowsRoute(prom, 'echo')).toBe(false)
    expect(parsePolicy({ rules: [] }).allowsRoute(billing, 'echo')).toBe(false)
  })

  it('deny: exact ids and prefixes, denied everything (routing included, operators too)', () => {
    const p = parsePolicy({ ...EXAMPLE, deny: [...EXAMPLE.deny, 'spiffe://capmesh.local/operator/alice'] })
    expect(p.denies(w13.id)).toBe(true)
    expect(p.denies('spiffe://capmesh.local/client/banned-7')).toBe(true)
    expect(p.denies(billing.id)).toBe(false)
    expect(p.allowsRoute(op, 'echo')).toBe(false)
    expect(p.allowsRoute(createIdentity({ trustDomain: TD, role: 'client', name: 'banned-7', via: 'token' }), 'echo')).toBe(false)
  })

  it('decides the same through a small bounded cache of decisions', () => {
    const p = parsePolicy(EXAMPLE, 'test', { cacheSize: 2 })
    for (let i = 0; i < 3; i++) {
      expect(p.allowsRoute(billing, 'invoice-eu')).toBe(true)
      expect(p.allowsRoute(billing, 'gpu-1')).toBe(false)
      expect(p.allowsRoute(teamA, 'gpu-1')).toBe(true) // evicts the oldest of a cache of 2
    }
    // A capability name holding a newline cannot pose as another (identity, capability) pair.
    expect(p.allowsRoute(billing, 'x\nspiffe://capmesh.local/client/team-a\ngpu-1')).toBe(false)
  })

  it('policyWithDenials adds --deny-identity flags to the file\'s deny list', () => {
    const p = policyWithDenials(parsePolicy(EXAMPLE), ['spiffe://capmesh.local/client/billing', 'spiffe://capmesh.local/operator/*'])
    expect(p.denies(billing.id)).toBe(true)
    expect(p.denies(w13.id)).toBe(true) // from the file
    expect(p.denies(teamA.id)).toBe(false)
    expect(p.allowsRoute(billing, 'echo')).toBe(false)
    expect(p.allowsRoute(op, 'echo')).toBe(false)
    expect(p.allowsRoute(teamA, 'echo')).toBe(true)
    const open = policyWithDenials(defaultRoutePolicy(), ['spiffe://capmesh.local/client/other'])
    expect(open.allowsRoute(other, 'echo')).toBe(false)
    expect(open.allowsRoute(billing, 'echo')).toBe(true)
    expect(policyWithDenials(open, [])).toBe(open)
    expect(configError(() => policyWithDenials(open, ['billing'])).message).toMatch(/--deny-identity "billing": .* is not spiffe:/)
    expect(configError(() => policyWithDenials(open, ['spiffe://capmesh.local/*/x'])).message).toMatch(/only at the end/)
  })
})

describe('policy files', () => {
  it.each<[string, unknown, RegExp]>([
    ['not JSON', '{"rules": [', /not JSON/],
    ['not an object', [], /must be an object/],
    ['an unknown top-level key', { rules: [], allow: [] }, /: allow: unknown key/],
    ['no rules', { deny: [] }, /: rules: must be an array/],
    ['a rule that is not an object', { rules: ['x'] }, /: rules\/0: must be an object/],
    ['an unknown key in a rule', { rules: [{ identities: ['spiffe://capmesh.local/client/a'], capabilities: ['x'], verbs: ['y'] }] }, /: rules\/0\/verbs: unknown key/],
    ['a rule without identities', { rules: [{ capabilities: ['x'] }] }, /: rules\/0\/identities: must be an array/],
    ['empty capabilities', { rules: [{ identities: ['spiffe://capmesh.local/client/a'], capabilities: [] }] }, /: rules\/0\/capabilities: must not be empty/],
    ['a capability that is not a string', { rules: [EXAMPLE.rules[0], { identities: ['spiffe://capmesh.local/client/a'], capabilities: [7] }] }, /: rules\/1\/capabilities\/0: must be a non-empty string/],
    ['an empty capability', { rules: [{ identities: ['spiffe://capmesh.local/client/a'], capabilities: ['ok', ''] }] }, /: rules\/0\/capabilities\/1: must be a non-empty string/],
    ['a capability with a control character', { rules: [{ identities: ['spiffe://capmesh.local/client/a'], capabilities: ['a\nb'] }] }, /: rules\/0\/capabilities\/0: must not hold control characters/],
    ['a too-long pattern', { rules: [{ identities: ['spiffe://capmesh.local/client/a'], capabilities: ['x'.repeat(1025)] }] }, /: rules\/0\/capabilities\/0: longer than 1024/],
    ['an identity that is not a SPIFFE id', { rules: [{ identities: ['billing'], capabilities: ['x'] }] }, /: rules\/0\/identities\/0: "billing" is not spiffe:/],
    ['an identity with an unknown role', { rules: [{ identities: ['spiffe://capmesh.local/admin/x'], capabilities: ['x'] }] }, /: rules\/0\/identities\/0: /],
    ['a star inside an identity', { rules: [{ identities: ['spiffe://capmesh.local/*/billing'], capabilities: ['x'] }] }, /: rules\/0\/identities\/0: "\*" only at the end/],
    ['a prefix without the scheme', { rules: [{ identities: ['team-*'], capabilities: ['x'] }] }, /: rules\/0\/identities\/0: a prefix pattern must start with "spiffe:\/\/"/],
    ['deny not an array', { rules: [], deny: 'spiffe://capmesh.local/worker/w13' }, /: deny: must be an array/],
    ['a bad deny entry', { rules: [], deny: ['spiffe://capmesh.local/worker/w13', 'spiffe://capmesh.local/worker/w%31'] }, /: deny\/1: /]
  ])('refuses %s with a ConfigError naming the path', (_, content, message) => {
    const path = file('bad-policy.json', content)
    const err = configError(() => loadPolicy(path))
    expect(err.message).toMatch(message)
    expect(err.message).toContain(path)
    expect(err.code).toBe('CAPMESH_ERR_CONFIG')
  })

  it('names the path in the error details too', () => {
    const err = configError(() => parsePolicy({ rules: [EXAMPLE.rules[0], { identities: ['spiffe://capmesh.local/client/a'], capabilities: ['ok', 3] }] }, 'p.json'))
    expect(err.details).toEqual({ file: 'p.json', path: 'rules/1/capabilities/1' })
  })

  it('refuses a file it cannot read', () => {
    expect(configError(() => loadPolicy(join(root, 'missing.json'))).message).toMatch(/cannot read it/)
  })
})
