/**
 * Every route filter and strategy over real HTTPS: controller affinity
 * (with workers owned by another controller, imported through
 * /state/export → /state/import), version, requires_gpu, slo_constraints,
 * budget_tokens, idempotency_key, least_loaded, round-robin, and when the
 * answer is 404 (nobody offers it) versus 503 (offered, nothing healthy).
 *
 * Preference between *healthy* workers of different owners cannot be set
 * up on one controller (a foreign worker becomes ours when it heartbeats
 * here); test/unit/routing/router.test.ts covers it.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import type { Controller } from '../../src/controller/index.ts'

let bed: TestBed
let c: Controller
const timers: NodeJS.Timeout[] = []

beforeAll(async () => { bed = await testBed('routing') })
afterAll(async () => { await bed.cleanup() })
beforeEach(async () => { c = await bed.start() })
afterEach(() => { for (const t of timers.splice(0)) clearInterval(t) })

const post = async (path: string, body: unknown, on = c) => await bed.client.json('POST', on.url + path, body)
const get = async (path: string, on = c) => await bed.client.json('GET', on.url + path)

async function register (id: string, caps: Array<Record<string, unknown>>, on = c): Promise<any> {
  const res = await post('/register', { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: caps }, on)
  expect(res.status).toBe(200)
  return res.body
}

async function route (q: Record<string, unknown>): Promise<any> {
  const res = await post('/route', { verb: 'invoke', capability: 'echo', ...q })
  expect(res.status).toBe(200)
  return res.body
}

/** Worker ids chosen by `n` route calls with the same query. */
async function picks (q: Record<string, unknown>, n = 8): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < n; i++) out.push((await route(q)).worker_id)
  return out
}

function keepAlive (ids: string[]): void {
  timers.push(setInterval(() => {
    for (const id of ids) post('/heartbeat', { worker_id: id }).catch(() => {})
  }, 60))
}

describe('controller affinity', () => {
  let other: Controller
  let n = 0

  beforeEach(async () => {
    // Long timeouts here: the other controller is never heard from (no mesh link), so
    // after stale-after this one would rightly drop its entries as those of a gone owner.
    c = await bed.start({ heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 })
    // The other controller's id is 'other-N': its own data dir per test.
    other = await bed.start({ id: `other-${n++}` })
    await register('o1', [capability('echo')], other)
    await register('o2', [capability('echo')], other)
    const exported = await get('/state/export', other)
    expect(exported.status).toBe(200)
    expect(exported.body).toMatchObject({ format: 'capmesh-state', controller_id: other.config.id, workers: 2 })
    await register('own', [capability('echo')])
    const imported = await post('/state/import', exported.body)
    expect(imported.status).toBe(200)
    expect(imported.body).toEqual({ status: 'imported', added: 2, workers: 3 })
  })

  it('imported workers keep their owner and are pending until a heartbeat here', async () => {
    const res = await get('/workers')
    const byId = Object.fromEntries(res.body.workers.map((w: any) => [w.worker_id, w]))
    expect(byId.o1).toMatchObject({ state: 'pending', controller_id: other.config.id, last_heartbeat: null })
    expect(byId.o2).toMatchObject({ state: 'pending', controller_id: other.config.id })
    expect(byId.own).toMatchObject({ state: 'healthy', controller_id: c.config.id })
    // Importing the same document again adds nothing (merge, idempotent).
    const again = await post('/state/import', (await get('/state/export', other)).body)
    expect(again.body).toMatchObject({ added: 0, workers: 3 })
  })

  it('with no affinity the answering controller prefers its own workers', async () => {
    expect(new Set(await picks({}))).toEqual(new Set(['own']))
    expect((await route({})).controller_id).toBe(c.config.id)
  })

  it('affinity to a controller with no healthy worker here falls back to the others', async () => {
    for (const affinity of [other.config.id, 'nobody']) {
      const res = await route({ affinity })
      expect(res.worker_id).toBe('own')
    }
    const viaGet = await get(`/route?verb=invoke&capability=echo&affinity=${other.config.id}`)
    expect(viaGet.status).toBe(200)
    expect(viaGet.body.worker_id).toBe('own')
  })

  it('another controller\'s pending workers are used only when no healthy worker is left', async () => {
    await post('/drain', { worker_id: 'own' })
    const res = await route({ affinity: other.config.id })
    expect(res).toMatchObject({ state: 'pending', controller_id: other.config.id })
    expect(['o1', 'o2']).toContain(res.worker_id)
  })

  it('a heartbeat here adopts a foreign worker: owned by this controller, healthy, a higher incarnation', async () => {
    const before = (await get('/workers')).body.workers.find((w: any) => w.worker_id === 'o1')
    const hb = await post('/heartbeat', { worker_id: 'o1' })
    expect(hb.body).toMatchObject({ status: 'acknowledged', state: 'healthy' })
    const after = (await get('/workers')).body.workers.find((w: any) => w.worker_id === 'o1')
    expect(after).toMatchObject({ state: 'healthy', controller_id: c.config.id })
    expect(after.incarnation).toBeGreaterThan(before.incarnation)
    expect(new Set(await picks({}))).toEqual(new Set(['own', 'o1']))
    expect(new Set(await picks({ affinity: c.config.id }))).toEqual(new Set(['own', 'o1']))
  })
})

describe('filters', () => {
  it('version: only workers offering that exact version', async () => {
    await register('v1', [capability('echo', { version: '1.0.0' })])
    await register('v2', [capability('echo', { version: '2.0.0' })])
    await register('both', [capability('echo', { version: '1.0.0' }), capability('echo', { version: '2.0.0' })])
    const chosen = []
    for (let i = 0; i < 8; i++) {
      const res = await route({ version: '2.0.0' })
      expect(res.version).toBe('2.0.0')
      chosen.push(res.worker_id)
    }
    expect(new Set(chosen)).toEqual(new Set(['v2', 'both']))
    expect(new Set(await picks({ version: '1.0.0' }))).toEqual(new Set(['v1', 'both']))
    const none = await post('/route', { verb: 'invoke', capability: 'echo', version: '3.0.0' })
    expect(none.status).toBe(404)
    expect(none.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_WORKER', capability: 'echo' })
  })

  it('requires_gpu: only GPU workers; false does not exclude them', async () => {
    await register('gpu', [capability('echo', { requires_gpu: true })])
    await register('cpu', [capability('echo')])
    expect(new Set(await picks({ requires_gpu: true }))).toEqual(new Set(['gpu']))
    expect(new Set(await picks({ requires_gpu: false }))).toEqual(new Set(['gpu', 'cpu']))
    await post('/drain', { worker_id: 'gpu' })
    const unavailable = await post('/route', { verb: 'invoke', capability: 'echo', requires_gpu: true })
    expect(unavailable.status).toBe(503)
    expect(unavailable.body.code).toBe('CAPMESH_ERR_NO_HEALTHY_WORKER')
    await post('/deregister', { worker_id: 'gpu' })
    const none = await post('/route', { verb: 'invoke', capability: 'echo', requires_gpu: true })
    expect(none.status).toBe(404)
    expect(none.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })

  it('slo_constraints: workers whose declared latency_p95_ms is above the asked one are skipped', async () => {
    await register('fast', [capability('echo', { slo: { latency_p95_ms: 50 } })])
    await register('slow', [capability('echo', { slo: { latency_p95_ms: 500 } })])
    expect(new Set(await picks({ slo_constraints: { latency_p95_ms: 100 } }))).toEqual(new Set(['fast']))
    expect(new Set(await picks({ slo_constraints: { latency_p95_ms: 1000 } }))).toEqual(new Set(['fast', 'slow']))
    const viaGet = await get('/route?verb=invoke&capability=echo&latency_p95_ms=100')
    expect(viaGet.body.worker_id).toBe('fast')
    const none = await post('/route', { verb: 'invoke', capability: 'echo', slo_constraints: { latency_p95_ms: 10 } })
    expect(none.status).toBe(404)
    expect(none.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })

  it('budget_tokens: skips workers costing more, cheapest first', async () => {
    await register('cheap', [capability('echo', { cost_tokens_per_invocation: 2 })])
    await register('mid', [capability('echo', { cost_tokens_per_invocation: 5 })])
    await register('pricey', [capability('echo', { cost_tokens_per_invocation: 20 })])
    const res = await route({ budget_tokens: 10 })
    expect(res).toMatchObject({ worker_id: 'cheap', cost_tokens_per_invocation: 2 })
    expect(new Set(await picks({ budget_tokens: 10 }))).toEqual(new Set(['cheap']))
    await post('/drain', { worker_id: 'cheap' })
    expect(new Set(await picks({ budget_tokens: 10 }))).toEqual(new Set(['mid']))
    const viaGet = await get('/route?verb=invoke&capability=echo&budget_tokens=10')
    expect(viaGet.body.worker_id).toBe('mid')
    // Without a budget, price does not matter: round-robin over everyone healthy.
    expect(new Set(await picks({}))).toEqual(new Set(['mid', 'pricey']))
    const none = await post('/route', { verb: 'invoke', capability: 'echo', budget_tokens: 1 })
    expect(none.status).toBe(404)
    expect(none.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })

  it('idempotency_key: the same worker while it stays healthy, another one after it goes unhealthy', async () => {
    c = await bed.start({ unhealthyAfterMs: 300, staleAfterMs: 30_000 })
    for (const id of ['a', 'b', 'c']) await register(id, [capability('echo')])
    const first = (await route({ idempotency_key: 'job-1' })).worker_id
    expect(new Set(await picks({ idempotency_key: 'job-1' }, 10))).toEqual(new Set([first]))
    // Without the key, round-robin moves on.
    expect(new Set(await picks({}, 6)).size).toBe(3)

    // The chosen worker goes silent; the others keep heartbeating.
    keepAlive(['a', 'b', 'c'].filter(id => id !== first))
    const moved = await eventually(async () => {
      const res = await route({ idempotency_key: 'job-1' })
      return res.worker_id !== first ? res.worker_id as string : undefined
    }, 'idempotency key moving to a healthy worker')
    expect(new Set(await picks({ idempotency_key: 'job-1' }, 6))).toEqual(new Set([moved]))
  })
})

describe('strategies', () => {
  it('round-robin by default spreads evenly over the healthy workers', async () => {
    const ids = ['r1', 'r2', 'r3', 'r4']
    for (const id of ids) await register(id, [capability('echo')])
    const counts: Record<string, number> = {}
    for (const id of await picks({}, 40)) counts[id] = (counts[id] ?? 0) + 1
    expect(counts).toEqual({ r1: 10, r2: 10, r3: 10, r4: 10 })
    const explicit = await route({ strategy: 'round_robin' })
    expect(explicit.strategy).toBe('round_robin')
  })

  it('least_loaded follows the load reported by heartbeats', async () => {
    for (const id of ['l1', 'l2', 'l3']) await register(id, [capability('echo', { max_concurrency: 100 })])
    await post('/heartbeat', { worker_id: 'l1', load: 7 })
    await post('/heartbeat', { worker_id: 'l2', load: 1 })
    await post('/heartbeat', { worker_id: 'l3', load: 3 })
    const res = await route({ strategy: 'least_loaded' })
    expect(res).toMatchObject({ worker_id: 'l2', load: 1, strategy: 'least_loaded' })
    expect(new Set(await picks({ strategy: 'least_loaded' }))).toEqual(new Set(['l2']))
    await post('/heartbeat', { worker_id: 'l2', load: 10 })
    expect((await route({ strategy: 'least_loaded' })).worker_id).toBe('l3')
    const viaGet = await get('/route?verb=invoke&capability=echo&strategy=least_loaded')
    expect(viaGet.body.worker_id).toBe('l3')
    const listed = (await get('/workers')).body.workers.find((w: any) => w.worker_id === 'l1')
    expect(listed.load).toBe(7)
  })

  it('a worker at its max_concurrency is skipped; all saturated is a 503', async () => {
    await register('small', [capability('echo', { max_concurrency: 2 })])
    await register('big', [capability('echo', { max_concurrency: 50 })])
    await post('/heartbeat', { worker_id: 'small', load: 2 })
    expect(new Set(await picks({}))).toEqual(new Set(['big']))
    await post('/heartbeat', { worker_id: 'big', load: 50 })
    const res = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(res.status).toBe(503)
    expect(res.body.code).toBe('CAPMESH_ERR_NO_HEALTHY_WORKER')
    await post('/heartbeat', { worker_id: 'small', load: 0 })
    expect((await route({})).worker_id).toBe('small')
  })
})

describe('404 versus 503', () => {
  it('404 when nobody offers the verb + capability, 503 with Retry-After when offered but nothing is routable', async () => {
    await register('w1', [capability('echo'), capability('sum', { verb: 'compute' })])

    const unknown = await post('/route', { verb: 'invoke', capability: 'nope' })
    expect(unknown.status).toBe(404)
    expect(unknown.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_WORKER', capability: 'nope', verb: 'invoke' })
    expect(unknown.headers['retry-after']).toBeUndefined()

    // The name exists, but under another verb.
    const wrongVerb = await post('/route', { verb: 'invoke', capability: 'sum' })
    expect(wrongVerb.status).toBe(404)

    const viaGet = await get('/route?verb=invoke&capability=nope')
    expect(viaGet.status).toBe(404)
    expect(viaGet.body).toMatchObject({ error: 'no_worker_available', capability: 'nope' })

    await post('/drain', { worker_id: 'w1' })
    const unavailable = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(unavailable.status).toBe(503)
    expect(unavailable.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_HEALTHY_WORKER', capability: 'echo', verb: 'invoke' })
    expect(Number(unavailable.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    const unavailableGet = await get('/route?verb=invoke&capability=echo')
    expect(unavailableGet.status).toBe(503)
    expect(unavailableGet.headers['retry-after']).toBeDefined()

    // Offered, but no worker in any state matches the filter: waiting will not help.
    const filtered = await post('/route', { verb: 'invoke', capability: 'echo', version: '9.0.0' })
    expect(filtered.status).toBe(404)
    expect(filtered.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })
})
