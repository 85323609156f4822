/**
 * Who may call what, over real HTTPS: every endpoint against every kind of
 * caller — a worker (acting for its own id), a client, an operator, a
 * metrics scraper and nobody — with the identity in a client certificate
 * the bed's CA issued and, the same identities, in a bearer token. Each
 * cell: the exact status and reason; a refusal counted once in
 * `capmesh_auth_failures_total{reason, route}`; and a refusal changed
 * nothing. Then GET /health with `--health-auth required`, and `--auth off`.
 */
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { workerAgent } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { AuthReason } from '../../src/errors.ts'
import type { HttpsClient, JsonResponse } from '../../src/utils/https-client.ts'
import { agentCapability, authFailures, callers, refused, registration, registryState, signingKey, signToken, SLOW_LIVENESS, spiffe, writeFile, type Callers } from '../helpers/auth.ts'
import { capability, testBed, type TestBed } from '../helpers/controllers.ts'

type Caller = 'worker' | 'client' | 'operator' | 'metrics' | 'none'
const CALLERS: Caller[] = ['worker', 'client', 'operator', 'metrics', 'none']
/** What a cell expects: 200 (or 404), or the reason of the refusal. */
type Cell = 200 | 404 | AuthReason
const OK = 200
const ROLE: AuthReason = 'role_not_allowed'
const NONE: AuthReason = 'credentials_missing'

/** The worker id the worker identity acts for (its own), registered before every cell. */
const WORKER = 'm1'
const NAMES: Record<Exclude<Caller, 'none'>, string> = { worker: WORKER, client: 'app', operator: 'root', metrics: 'prom' }

interface Endpoint {
  method: 'GET' | 'POST'
  path: string
  /** The route pattern the metrics label it with. */
  route: string
  body?: () => unknown
  /** What a 200 says, beyond its status. */
  ok?: (body: any) => void
  cells: Cell[]
}

let exported: unknown
const row = (method: Endpoint['method'], path: string, cells: Cell[], more: Partial<Endpoint> = {}): Endpoint => ({ method, path, route: path.split('?')[0], cells, ...more })

// One row per endpoint; columns in the order of CALLERS.
const MATRIX: Endpoint[] = [
  //                                                    worker client operator metrics none
  row('POST', '/register', /*                       */ [OK, ROLE, OK, ROLE, NONE], { body: () => registration(WORKER, { capabilities: [capability('echo')] }), ok: b => { expect(b).toMatchObject({ status: 'registered', worker_id: WORKER }) } }),
  row('POST', '/heartbeat', /*                      */ [OK, ROLE, OK, ROLE, NONE], { body: () => ({ worker_id: WORKER }), ok: b => { expect(b).toMatchObject({ status: 'acknowledged', state: 'healthy' }) } }),
  row('POST', '/drain', /*                          */ [OK, ROLE, OK, ROLE, NONE], { body: () => ({ worker_id: WORKER }), ok: b => { expect(b).toEqual({ status: 'draining', worker_id: WORKER }) } }),
  row('POST', '/deregister', /*                     */ [OK, ROLE, OK, ROLE, NONE], { body: () => ({ worker_id: WORKER }), ok: b => { expect(b).toMatchObject({ status: 'deregistered', worker_id: WORKER, known: true }) } }),
  row('POST', '/route', /*                          */ [ROLE, OK, OK, ROLE, NONE], { body: () => ({ verb: 'invoke', capability: 'echo' }), ok: b => { expect(b.worker_id).toBe(WORKER) } }),
  row('GET', '/route?verb=invoke&capability=echo', /**/ [ROLE, OK, OK, ROLE, NONE], { ok: b => { expect(b.worker_id).toBe(WORKER) } }),
  row('GET', '/capabilities', /*                    */ [ROLE, OK, OK, ROLE, NONE], { ok: b => { expect(b.capabilities.map((c: { name: string }) => c.name)).toContain('echo') } }),
  row('GET', '/workers', /*                         */ [ROLE, OK, OK, ROLE, NONE], { ok: b => { expect(b.workers.map((w: { worker_id: string }) => w.worker_id)).toEqual([WORKER]) } }),
  row('GET', '/health', /*                          */ [OK, OK, OK, OK, OK], { ok: b => { expect(b.auth).toEqual({ mode: 'required', trust_domain: 'capmesh.local', health: 'open' }) } }),
  row('GET', '/mesh', /*                            */ [ROLE, ROLE, OK, ROLE, NONE], { ok: b => { expect(typeof b.peer_id).toBe('string') } }),
  row('GET', '/metrics', /*                         */ [ROLE, ROLE, OK, OK, NONE], { ok: b => { expect(b).toContain('capmesh_info{') } }),
  row('GET', '/state/export', /*                    */ [ROLE, ROLE, OK, ROLE, NONE], { ok: b => { expect(b.workers).toBe(1) } }),
  row('POST', '/state/import', /*                   */ [ROLE, ROLE, OK, ROLE, NONE], { body: () => exported, ok: b => { expect(b.status).toBe('imported') } }),
  row('GET', '/openapi.json', /*                    */ [OK, OK, OK, OK, NONE], { ok: b => { expect(Object.keys(b.paths)).toContain('/register') } }),
  // An unknown path: any identity may learn it does not exist; nobody may not.
  row('GET', '/no-such-endpoint', /*                */ [404, 404, 404, 404, NONE], { route: 'unmatched' })
]

let bed: TestBed
let ctl: Controller
let pool: Callers
/** Per way of proving an identity: the client of each caller. */
let as: Record<'certificate' | 'token', Record<Caller, HttpsClient>>

beforeAll(async () => {
  bed = await testBed('auth-matrix')
  pool = callers(bed.ca)
  const key = await signingKey('EdDSA')
  ctl = await bed.start({ id: 'm', ...SLOW_LIVENESS, tokenKey: [writeFile(bed.root, 'token-key.pem', key.publicPem)] })
  const both = async (role: Exclude<Caller, 'none'>): Promise<{ certificate: HttpsClient, token: HttpsClient }> =>
    ({ certificate: pool.cert(await bed.identity(role, NAMES[role])), token: pool.token(await signToken(key, { sub: NAMES[role], role })) })
  const [worker, client, operator, metrics] = await Promise.all((['worker', 'client', 'operator', 'metrics'] as const).map(both))
  const none = pool.cert()
  as = {
    certificate: { worker: worker.certificate, client: client.certificate, operator: operator.certificate, metrics: metrics.certificate, none },
    token: { worker: worker.token, client: client.token, operator: operator.token, metrics: metrics.token, none }
  }
  expect((await as.certificate.worker.json('POST', `${ctl.url}/register`, registration(WORKER, { capabilities: [capability('echo')] }))).status).toBe(200)
  exported = (await bed.client.json('GET', `${ctl.url}/state/export`)).body
})
afterAll(async () => {
  await pool?.close()
  await bed?.cleanup()
})

/** m1 registered by its own identity, healthy and ready, before every cell. */
async function workerReady (): Promise<void> {
  const worker = as.certificate.worker
  if (ctl.core.registry.get(WORKER) == null) expect((await worker.json('POST', `${ctl.url}/register`, registration(WORKER, { capabilities: [capability('echo')] }))).status).toBe(200)
  expect((await worker.json('POST', `${ctl.url}/heartbeat`, { worker_id: WORKER, status: 'ready' })).body.status).toBe('acknowledged')
  expect(ctl.core.registry.get(WORKER)?.identity).toBe(spiffe('worker', WORKER))
}

const call = async (client: HttpsClient, e: Endpoint): Promise<JsonResponse> => await client.json(e.method, ctl.url + e.path, e.body?.())

describe.each(['certificate', 'token'] as const)('the role x endpoint matrix, identities in a %s', (via) => {
  beforeEach(workerReady)

  const cells = MATRIX.flatMap(e => CALLERS.map((caller, i) => ({ e, caller, expected: e.cells[i] })))
  it.each(cells.map(c => [`${c.e.method} ${c.e.path} as ${c.caller}`, c] as const))('%s', async (_name, { e, caller, expected }) => {
    const failuresBefore = await authFailures(bed.client, ctl.url)
    if (typeof expected === 'number') {
      const res = await call(as[via][caller], e)
      expect(res.status, JSON.stringify(res.body)).toBe(expected)
      if (expected === 200) e.ok?.(res.body)
      expect(await authFailures(bed.client, ctl.url)).toBe(failuresBefore)
    } else {
      const countedBefore = await authFailures(bed.client, ctl.url, { reason: expected, route: e.route })
      await refused([ctl], expected, async () => await call(as[via][caller], e))
      // Counted once, under its reason and the route's pattern.
      expect(await authFailures(bed.client, ctl.url, { reason: expected, route: e.route })).toBe(countedBefore + 1)
      expect(await authFailures(bed.client, ctl.url)).toBe(failuresBefore + 1)
    }
  })
})

describe('--health-auth required', () => {
  let h: Controller
  let h2: Controller
  beforeAll(async () => {
    [h, h2] = await Promise.all([
      bed.start({ id: 'h', ...SLOW_LIVENESS, healthAuth: 'required' }),
      bed.start({ id: 'h2', ...SLOW_LIVENESS, healthAuth: 'required' })
    ])
  })

  // Any identity will do (a worker agent measures closeness with it); nobody will not.
  //                                         worker client operator metrics none
  const cells: Cell[] = /*               */ [OK, OK, OK, OK, NONE]
  it.each(CALLERS.map((caller, i) => [caller, cells[i]] as const))('GET /health as %s: %s', async (caller, expected) => {
    const client = as.certificate[caller]
    if (expected === OK) {
      const res = await client.json('GET', `${h.url}/health`)
      expect(res.status).toBe(200)
      expect(res.body.auth).toEqual({ mode: 'required', trust_domain: 'capmesh.local', health: 'required' })
    } else {
      await refused([h], expected as AuthReason, async () => await client.json('GET', `${h.url}/health`))
      expect(await authFailures(bed.client, h.url, { reason: expected as string, route: '/health' })).toBeGreaterThan(0)
    }
  })

  it('a worker agent still measures closeness with /health: it attaches where its affinity says', async () => {
    const agent = workerAgent({
      workerId: WORKER,
      workerUrl: 'https://127.0.0.1:7200',
      capabilities: [agentCapability('echo')],
      controllers: [h.url, h2.url],
      affinity: 'h2',
      tls: await bed.identity('worker', WORKER),
      heartbeatIntervalMs: 1000,
      reprobeIntervalMs: 0
    })
    const counted = await authFailures(bed.client, h.url)
    try {
      await agent.start()
      expect(agent.controller).toEqual({ url: h2.url, id: 'h2' })
    } finally {
      await agent.stop()
    }
    expect(await authFailures(bed.client, h.url)).toBe(counted)
  })
})

describe('--auth off', () => {
  let off: Controller
  const logged: Array<{ level: number, msg: string }> = []
  beforeAll(async () => {
    const sink = new Writable({ write (chunk: Buffer, _enc, done) { logged.push(JSON.parse(chunk.toString())); done() } })
    off = await bed.start({ id: 'off', ...SLOW_LIVENESS, auth: 'off' }, { logger: pino({ level: 'info' }, sink) })
  })

  it('warns at start that nobody is asked who they are', () => {
    expect(logged.filter(l => l.level === 40 && l.msg.startsWith('auth is off:'))).toHaveLength(1)
  })

  it('lets anyone without an identity do everything, and /health says so', async () => {
    const nobody = as.certificate.none
    const go = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<any> => {
      const res = await nobody.json(method, off.url + path, body)
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(200)
      return res.body
    }
    expect((await go('GET', '/health')).auth).toEqual({ mode: 'off', trust_domain: 'capmesh.local', health: 'open' })
    await go('POST', '/register', registration('any-1', { capabilities: [capability('echo')] }))
    // Nobody is bound to it: no identity was recorded.
    expect(off.core.registry.get('any-1')?.identity).toBeUndefined()
    await go('POST', '/heartbeat', { worker_id: 'any-1' })
    expect((await go('POST', '/route', { verb: 'invoke', capability: 'echo' })).worker_id).toBe('any-1')
    expect((await go('GET', '/route?verb=invoke&capability=echo')).worker_id).toBe('any-1')
    await go('GET', '/capabilities')
    await go('GET', '/workers')
    await go('GET', '/mesh')
    expect(await go('GET', '/metrics')).toContain('capmesh_info{')
    const doc = await go('GET', '/state/export')
    await go('POST', '/state/import', doc)
    await go('GET', '/openapi.json')
    await go('POST', '/drain', { worker_id: 'any-1' })
    await go('POST', '/deregister', { worker_id: 'any-1' })
    expect(registryState(off).size).toBe(0)
    // Nothing was counted as refused.
    expect(await authFailures(bed.client, off.url)).toBe(0)
  })
})
