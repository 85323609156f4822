/**
 * Worker health over real HTTPS with the local preset's short timeouts
 * (heartbeat 200 ms, unhealthy after 600 ms, removed after 1.2 s):
 * healthy → unhealthy (not routed: 503 + Retry-After) → removed (404), and
 * heartbeats keeping a worker healthy.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { JsonResponse } from '../../src/utils/https-client.ts'

let bed: TestBed
let c: Controller
const timers: NodeJS.Timeout[] = []

beforeAll(async () => { bed = await testBed('health') })
afterAll(async () => { await bed.cleanup() })
beforeEach(async () => { c = await bed.start() })
afterEach(() => { for (const t of timers.splice(0)) clearInterval(t) })

const post = async (path: string, body: unknown) => await bed.client.json('POST', c.url + path, body)
const get = async (path: string) => await bed.client.json('GET', c.url + path)
const route = async () => await post('/route', { verb: 'invoke', capability: 'echo' })

/** Routes until the answer has `status`; returns that answer. */
async function routeUntil (status: number): Promise<JsonResponse> {
  let res: JsonResponse | undefined
  await eventually(async () => {
    res = await route()
    return res.status === status
  }, `route answering ${status}`)
  return res!
}

async function register (id: string): Promise<void> {
  const res = await post('/register', { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability('echo')] })
  expect(res.status).toBe(200)
}

async function stateOf (id: string): Promise<string | undefined> {
  const res = await get('/workers')
  return res.body.workers.find((w: any) => w.worker_id === id)?.state
}

/** Heartbeats `id` every 100 ms (half the preset's interval) until the test ends. */
function keepAlive (id: string, body: Record<string, unknown> = {}): void {
  timers.push(setInterval(() => { post('/heartbeat', { worker_id: id, ...body }).catch(() => {}) }, 100))
}

describe('health transitions', () => {
  it('healthy → unhealthy (503 with Retry-After) → removed (404)', async () => {
    await register('w1')
    expect(await stateOf('w1')).toBe('healthy')
    expect((await route()).status).toBe(200)

    // No heartbeats: after unhealthy-after the worker is listed but not routed to.
    const unavailable = await routeUntil(503)
    expect(unavailable.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_HEALTHY_WORKER', capability: 'echo', verb: 'invoke' })
    const retryAfter = Number(unavailable.headers['retry-after'])
    expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true)

    // After stale-after it is gone: nobody offers the capability any more.
    const gone = await routeUntil(404)
    expect(gone.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_WORKER', capability: 'echo' })
    expect(gone.headers['retry-after']).toBeUndefined()
    expect((await get('/workers')).body.total).toBe(0)
    expect((await get('/capabilities')).body.capabilities).toEqual([])
    const late = await post('/heartbeat', { worker_id: 'w1' })
    expect(late.body).toEqual({ error: 'worker_not_registered', worker_id: 'w1' })
  })

  it('an unhealthy worker is listed as unhealthy and counted in /capabilities as not healthy', async () => {
    c = await bed.start({ unhealthyAfterMs: 300, staleAfterMs: 30_000 })
    await register('w1')
    await eventually(async () => await stateOf('w1') === 'unhealthy', 'w1 unhealthy')
    const caps = await get('/capabilities')
    expect(caps.body.capabilities).toEqual([{ verb: 'invoke', name: 'echo', versions: ['1.0.0'], workers: 1, healthy_workers: 0 }])
    const health = await get('/health')
    expect(health.body.workers).toMatchObject({ total: 1, healthy: 0, unhealthy: 1 })
  })

  it('heartbeats keep a worker healthy well past the stale window', async () => {
    await register('w1')
    keepAlive('w1')
    const end = Date.now() + 2 * 1200
    let checks = 0
    while (Date.now() < end) {
      expect(await stateOf('w1')).toBe('healthy')
      const res = await route()
      expect(res.status).toBe(200)
      expect(res.body.worker_id).toBe('w1')
      checks++
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    expect(checks).toBeGreaterThan(3)
  })

  it('a heartbeat brings an unhealthy worker back to healthy', async () => {
    c = await bed.start({ unhealthyAfterMs: 300, staleAfterMs: 30_000 })
    await register('w1')
    await routeUntil(503)
    const hb = await post('/heartbeat', { worker_id: 'w1' })
    expect(hb.body).toMatchObject({ status: 'acknowledged', state: 'healthy' })
    const res = await route()
    expect(res.status).toBe(200)
    expect(res.body.worker_id).toBe('w1')
  })

  it('a silent worker stops being chosen while a heartbeating one keeps serving', async () => {
    await register('silent')
    await register('alive')
    keepAlive('alive')
    await eventually(async () => await stateOf('silent') === 'unhealthy', 'silent unhealthy', 5000, 10)
    for (let i = 0; i < 5; i++) expect((await route()).body.worker_id).toBe('alive')
    await eventually(async () => await stateOf('silent') === undefined, 'silent removed')
    expect(await stateOf('alive')).toBe('healthy')
    expect((await get('/workers')).body.total).toBe(1)
  })

  it('a draining worker that goes silent is removed after stale-after', async () => {
    await register('w1')
    await post('/drain', { worker_id: 'w1' })
    expect(await stateOf('w1')).toBe('draining')
    const res = await route()
    expect(res.status).toBe(503)
    expect(res.headers['retry-after']).toBeDefined()
    await eventually(async () => (await get('/workers')).body.total === 0, 'draining worker removed')
    expect((await route()).status).toBe(404)
  })
})
