/**
 * The route policy (`--policy FILE`) over real HTTPS: `client/billing` may
 * route only to `invoice-*`; other clients nowhere; operators anywhere; the
 * file's `deny` list refuses an identity everything. Rewriting the file and
 * calling `reloadPolicy()` applies the new rules; a file that does not
 * parse leaves the old policy in force (reloadPolicy throws). The same with
 * SIGHUP to a `capmesh controller` child process.
 */
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { ConfigError } from '../../src/errors.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import type { HttpsClient } from '../../src/utils/https-client.ts'
import { authFailures, callers, expectRefusal, refused, registration, SLOW_LIVENESS, spiffe, writeFile, type Callers } from '../helpers/auth.ts'
import { capability, errorOf, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

/** billing may route to invoice-*; banned is denied everything. */
const BILLING_INVOICES = {
  rules: [{ identities: [spiffe('client', 'billing')], capabilities: ['invoice-*'] }],
  deny: [spiffe('client', 'banned')]
}
/** billing may route to echo only; nobody is denied. */
const BILLING_ECHO = {
  rules: [{ identities: [spiffe('client', 'billing')], capabilities: ['echo'] }]
}
const CAPS = [capability('echo'), capability('invoice-pdf')]

let bed: TestBed
let pool: Callers
let ctl: Controller
let policyFile: string
let billing: HttpsClient
let other: HttpsClient
let banned: HttpsClient
/** Denied by --deny-identity, whatever the file says. */
let flagged: HttpsClient

beforeAll(async () => {
  bed = await testBed('auth-policy')
  pool = callers(bed.ca)
  policyFile = writeFile(bed.root, 'policy.json', BILLING_INVOICES)
  ctl = await bed.start({ id: 'p', ...SLOW_LIVENESS, policy: policyFile, denyIdentity: [spiffe('client', 'flagged')] })
  billing = pool.cert(await bed.identity('client', 'billing'))
  other = pool.cert(await bed.identity('client', 'other'))
  banned = pool.cert(await bed.identity('client', 'banned'))
  flagged = pool.cert(await bed.identity('client', 'flagged'))
  const worker = pool.cert(await bed.identity('worker', 'pw1'))
  expect((await worker.json('POST', `${ctl.url}/register`, registration('pw1', { capabilities: CAPS }))).status).toBe(200)
})
afterAll(async () => {
  await pool?.close()
  await bed?.cleanup()
})

/** POST /route for `cap` at `url` as `who`: 200 with the worker, or the refusal. */
const route = async (who: HttpsClient, cap: string, url = ctl.url) => await who.json('POST', `${url}/route`, { verb: 'invoke', capability: cap })

async function expectRoutes (who: HttpsClient, allowed: string[], denied: string[], url = ctl.url): Promise<void> {
  for (const cap of allowed) {
    const res = await route(who, cap, url)
    expect(res.status, `${cap}: ${JSON.stringify(res.body)}`).toBe(200)
    expect(res.body.worker_id).toMatch(/^pw/)
  }
  for (const cap of denied) {
    const res = await route(who, cap, url)
    expectRefusal(res, 'route_policy')
    expect(res.body.error).toBe('route_denied')
  }
}

describe('--policy', () => {
  beforeEach(() => {
    writeFile(bed.root, 'policy.json', BILLING_INVOICES)
    ctl.reloadPolicy()
  })

  it('a client routes only to the capabilities a rule names for it; operators anywhere', async () => {
    const counted = await authFailures(bed.client, ctl.url, { reason: 'route_policy', route: '/route' })
    await expectRoutes(billing, ['invoice-pdf'], ['echo'])
    // GET /route is held to the same policy.
    expect((await billing.json('GET', `${ctl.url}/route?verb=invoke&capability=invoice-pdf`)).status).toBe(200)
    await refused([ctl], 'route_policy', async () => await billing.json('GET', `${ctl.url}/route?verb=invoke&capability=echo`))
    // A client no rule names routes nowhere.
    await expectRoutes(other, [], ['echo', 'invoice-pdf'])
    await expectRoutes(bed.client, ['echo', 'invoice-pdf'], [])
    // Allowed, but nobody offers it: the policy said yes, the router says 404.
    expect((await route(billing, 'invoice-none')).status).toBe(404)
    expect(await authFailures(bed.client, ctl.url, { reason: 'route_policy', route: '/route' })).toBe(counted + 4)
  })

  it('the file\'s deny list and --deny-identity: identity_denied on every endpoint, routing included', async () => {
    await refused([ctl], 'identity_denied', async () => await flagged.json('GET', `${ctl.url}/capabilities`))
    await refused([ctl], 'identity_denied', async () => await banned.json('GET', `${ctl.url}/capabilities`))
    await refused([ctl], 'identity_denied', async () => await route(banned, 'invoice-pdf'))
    await refused([ctl], 'identity_denied', async () => await banned.json('GET', `${ctl.url}/openapi.json`))
  })

  it('reloadPolicy() applies the rewritten file: rules and deny list; --deny-identity stays', async () => {
    writeFile(bed.root, 'policy.json', { ...BILLING_ECHO, rules: [...BILLING_ECHO.rules, { identities: [spiffe('client', 'flagged')], capabilities: ['*'] }] })
    ctl.reloadPolicy()
    await expectRoutes(billing, ['echo'], ['invoice-pdf'])
    expect((await banned.json('GET', `${ctl.url}/capabilities`)).status).toBe(200)
    // A rule of the file naming it does not lift a denial given by flag.
    await refused([ctl], 'identity_denied', async () => await route(flagged, 'echo'))
  })

  it('a file that does not parse: reloadPolicy throws and the old policy stays in force', async () => {
    const broken: Array<[string, unknown]> = [
      ['not JSON', '{"rules": ['],
      ['an identity that is not a SPIFFE id', { rules: [{ identities: ['billing'], capabilities: ['echo'] }] }],
      ['an unknown key', { rules: [], allow: ['*'] }]
    ]
    for (const [what, content] of broken) {
      writeFile(bed.root, 'policy.json', content)
      expect(errorOf(() => { ctl.reloadPolicy() }), what).toBeInstanceOf(ConfigError)
      await expectRoutes(billing, ['invoice-pdf'], ['echo'])
      await refused([ctl], 'identity_denied', async () => await banned.json('GET', `${ctl.url}/capabilities`))
    }
    rmSync(policyFile)
    expect(errorOf(() => { ctl.reloadPolicy() }), 'a missing file').toBeInstanceOf(ConfigError)
    await expectRoutes(billing, ['invoice-pdf'], ['echo'])
  })
})

describe('SIGHUP to a `capmesh controller` process', () => {
  let child: ChildController
  const logged: Array<Record<string, unknown>> = []
  let childPolicy: string

  beforeAll(async () => {
    childPolicy = writeFile(bed.root, 'child-policy.json', BILLING_INVOICES)
    child = await spawnController({
      id: 'sighup',
      args: ['--id', 'sighup', '--host', '127.0.0.1', '--https-port', '0', '--p2p-port', '0', '--data-dir', join(bed.root, 'sighup'), '--tls-dir', bed.tlsDir, '--policy', childPolicy],
      onLog: line => { if (typeof line === 'object') logged.push(line) }
    })
    const worker = pool.cert(await bed.identity('worker', 'pw2'))
    expect((await worker.json('POST', `${child.url}/register`, registration('pw2', { capabilities: CAPS }))).status).toBe(200)
  })
  afterAll(async () => { await child?.stop() })

  const logLine = async (msg: string, after: number): Promise<Record<string, unknown>> =>
    (await eventually(() => logged.slice(after).find(l => l.msg === msg), `the log line "${msg}"`))!

  it('reloads a rewritten file; keeps the old policy when the new one is invalid', async () => {
    await expectRoutes(billing, ['invoice-pdf'], ['echo'], child.url)

    writeFile(bed.root, 'child-policy.json', BILLING_ECHO)
    let mark = logged.length
    process.kill(child.pid, 'SIGHUP')
    await logLine('route policy reloaded', mark)
    await expectRoutes(billing, ['echo'], ['invoice-pdf'], child.url)

    writeFile(bed.root, 'child-policy.json', '{"rules": [{"identities": ["spiffe://capmesh.local/client/billing"], "capabilities": ')
    mark = logged.length
    process.kill(child.pid, 'SIGHUP')
    const refusal = await logLine('route policy not reloaded: the file is invalid; the previous policy stays in force', mark)
    expect(refusal.level).toBe(50)
    await expectRoutes(billing, ['echo'], ['invoice-pdf'], child.url)
    expect(child.process.exitCode).toBeNull()
    expect((await bed.client.json('GET', `${child.url}/health`)).body.status).toBe('ok')
  })
})
