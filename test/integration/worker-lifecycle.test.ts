/**
 * The wire contract end to end over real HTTPS (the project's own CA):
 * register → heartbeat → route (POST and GET) → deregister, the listings,
 * the `worker_not_registered` path, re-registration and draining.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import type { Controller } from '../../src/controller/index.ts'

let bed: TestBed
let c: Controller

beforeAll(async () => { bed = await testBed('lifecycle') })
afterAll(async () => { await bed.cleanup() })
beforeEach(async () => { c = await bed.start() })

const post = async (path: string, body: unknown) => await bed.client.json('POST', c.url + path, body)
const get = async (path: string) => await bed.client.json('GET', c.url + path)

async function register (id: string, caps = [capability('echo')], url = `https://127.0.0.1:7000/${id}`) {
  const res = await post('/register', { worker_id: id, worker_url: url, capabilities: caps })
  expect(res.status).toBe(200)
  return res.body
}

async function workerView (id: string): Promise<any> {
  const res = await get('/workers')
  expect(res.status).toBe(200)
  return res.body.workers.find((w: any) => w.worker_id === id)
}

describe('register → heartbeat → route → deregister', () => {
  it('runs the whole cycle with the platform replies', async () => {
    const reg = await register('w1', [capability('echo')], 'https://127.0.0.1:7001')
    expect(reg).toMatchObject({ status: 'registered', worker_id: 'w1', controller_id: c.config.id })
    expect(reg.incarnation).toBeGreaterThanOrEqual(1)

    // Registration counts as the first heartbeat: healthy and listed with a last heartbeat.
    const listed = await workerView('w1')
    expect(listed).toMatchObject({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7001', state: 'healthy', controller_id: c.config.id })
    expect(Number.isNaN(Date.parse(listed.last_heartbeat))).toBe(false)

    const hb = await post('/heartbeat', { worker_id: 'w1' })
    expect(hb.status).toBe(200)
    expect(hb.body.status).toBe('acknowledged')
    expect(Number.isNaN(Date.parse(hb.body.timestamp))).toBe(false)
    const afterHb = await workerView('w1')
    expect(afterHb.state).toBe('healthy')
    expect(Date.parse(afterHb.last_heartbeat)).toBeGreaterThanOrEqual(Date.parse(listed.last_heartbeat))

    const routed = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(routed.status).toBe(200)
    expect(routed.body).toMatchObject({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7001', verb: 'invoke', capability: 'echo', version: '1.0.0', state: 'healthy' })

    const viaGet = await get('/route?verb=invoke&capability=echo')
    expect(viaGet.status).toBe(200)
    expect(viaGet.body).toMatchObject({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7001' })

    const dereg = await post('/deregister', { worker_id: 'w1' })
    expect(dereg.status).toBe(200)
    expect(dereg.body).toMatchObject({ status: 'deregistered', worker_id: 'w1', known: true })

    const gone = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(gone.status).toBe(404)
    expect(gone.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_WORKER', capability: 'echo' })
    expect((await get('/workers')).body.total).toBe(0)

    // After deregistration the worker is unknown again: the platform's re-register signal.
    const late = await post('/heartbeat', { worker_id: 'w1' })
    expect(late.status).toBe(200)
    expect(late.body).toEqual({ error: 'worker_not_registered', worker_id: 'w1' })
  })

  it('deregistering an unknown worker is idempotent', async () => {
    const res = await post('/deregister', { worker_id: 'never-seen' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'deregistered', worker_id: 'never-seen', known: false })
  })

  it('GET /route carries the same answer as POST /route, filters included', async () => {
    await register('cpu', [capability('embed', { version: '1.0.0' })])
    await register('gpu', [capability('embed', { version: '2.0.0', requires_gpu: true })])
    const viaGet = await get('/route?verb=invoke&capability=embed&requires_gpu=true')
    expect(viaGet.status).toBe(200)
    expect(viaGet.body.worker_id).toBe('gpu')
    const versioned = await get('/route?verb=invoke&capability=embed&version=1.0.0')
    expect(versioned.body.worker_id).toBe('cpu')
    const none = await get('/route?verb=invoke&capability=embed&version=9.9.9')
    expect(none.status).toBe(404)
    expect(none.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })
})

describe('listings', () => {
  it('/workers shows every worker with state and last heartbeat, and filters by state and capability', async () => {
    await register('a', [capability('echo'), capability('sum', { verb: 'compute' })])
    await register('b', [capability('echo', { version: '2.0.0' })])
    await post('/drain', { worker_id: 'b' })

    const all = await get('/workers')
    expect(all.status).toBe(200)
    expect(all.body.total).toBe(2)
    const byId = Object.fromEntries(all.body.workers.map((w: any) => [w.worker_id, w]))
    expect(byId.a.state).toBe('healthy')
    expect(byId.b.state).toBe('draining')
    for (const w of all.body.workers) {
      expect(typeof w.last_heartbeat).toBe('string')
      expect(w.controller_id).toBe(c.config.id)
      expect(w.load).toBe(0)
    }
    expect(byId.a.capabilities.map((x: any) => x.name).sort()).toEqual(['echo', 'sum'])

    const draining = await get('/workers?state=draining')
    expect(draining.body.total).toBe(1)
    expect(draining.body.workers[0].worker_id).toBe('b')
    const sum = await get('/workers?capability=sum')
    expect(sum.body.workers.map((w: any) => w.worker_id)).toEqual(['a'])
    const page = await get('/workers?limit=1&offset=1')
    expect(page.body.total).toBe(2)
    expect(page.body.workers).toHaveLength(1)
  })

  it('/capabilities lists each verb + name with versions and worker counts', async () => {
    await register('a', [capability('echo'), capability('sum', { verb: 'compute' })])
    await register('b', [capability('echo', { version: '2.0.0' })])
    await post('/drain', { worker_id: 'b' })
    const res = await get('/capabilities')
    expect(res.status).toBe(200)
    expect(res.body.capabilities).toEqual([
      { verb: 'compute', name: 'sum', versions: ['1.0.0'], workers: 1, healthy_workers: 1 },
      { verb: 'invoke', name: 'echo', versions: ['1.0.0', '2.0.0'], workers: 2, healthy_workers: 1 }
    ])
  })

  it('/health reports the controller and counts of workers per state', async () => {
    await register('a')
    await register('b')
    await post('/drain', { worker_id: 'b' })
    const res = await get('/health')
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      status: 'ok',
      controller_id: c.config.id,
      workers: { total: 2, healthy: 1, draining: 1, unhealthy: 0, pending: 0 }
    })
    expect(res.body.config).toMatchObject({ heartbeat_interval_ms: 200, unhealthy_after_ms: 600, stale_after_ms: 1200 })
  })
})

describe('worker_not_registered and re-registration', () => {
  it('a heartbeat from an unknown worker gets HTTP 200 worker_not_registered and registers nothing', async () => {
    const res = await post('/heartbeat', { worker_id: 'ghost', load: 3 })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ error: 'worker_not_registered', worker_id: 'ghost' })
    expect((await get('/workers')).body.total).toBe(0)
    expect((await post('/route', { verb: 'invoke', capability: 'echo' })).status).toBe(404)
  })

  it('re-registering after a deregistration is routable at once', async () => {
    await register('w1')
    await post('/deregister', { worker_id: 'w1' })
    expect((await post('/route', { verb: 'invoke', capability: 'echo' })).status).toBe(404)
    await register('w1', [capability('echo')], 'https://127.0.0.1:7999')
    const res = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7999', state: 'healthy' })
  })

  it('re-registering an unhealthy worker makes it routable at once, without waiting for a heartbeat', async () => {
    // A long stale window so the worker stays listed (unhealthy) for as long as the test needs.
    c = await bed.start({ unhealthyAfterMs: 300, staleAfterMs: 30_000 })
    const first = await register('w1')
    await eventually(async () => (await workerView('w1'))?.state === 'unhealthy', 'w1 unhealthy')
    expect((await post('/route', { verb: 'invoke', capability: 'echo' })).status).toBe(503)
    const again = await register('w1')
    // A re-attach of a known worker is a new incarnation (it wins over the old entry everywhere).
    expect(again.incarnation).toBeGreaterThan(first.incarnation)
    const res = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ worker_id: 'w1', state: 'healthy' })
    expect((await workerView('w1')).state).toBe('healthy')
  })

  it('re-registering with new capabilities replaces the old ones', async () => {
    await register('w1', [capability('old')])
    await register('w1', [capability('new')])
    expect((await post('/route', { verb: 'invoke', capability: 'new' })).body.worker_id).toBe('w1')
    const old = await post('/route', { verb: 'invoke', capability: 'old' })
    expect(old.status).toBe(404)
    expect(old.body.code).toBe('CAPMESH_ERR_NO_WORKER')
  })
})

describe('draining', () => {
  it('POST /drain stops routing to a worker but keeps it listed', async () => {
    await register('a')
    await register('b')
    const res = await post('/drain', { worker_id: 'a' })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ status: 'draining', worker_id: 'a' })
    for (let i = 0; i < 6; i++) {
      expect((await post('/route', { verb: 'invoke', capability: 'echo' })).body.worker_id).toBe('b')
    }
    expect((await workerView('a')).state).toBe('draining')
    await post('/drain', { worker_id: 'b' })
    const none = await post('/route', { verb: 'invoke', capability: 'echo' })
    expect(none.status).toBe(503)
    expect(none.body).toMatchObject({ error: 'no_worker_available', code: 'CAPMESH_ERR_NO_HEALTHY_WORKER', capability: 'echo' })
    expect((await get('/workers')).body.total).toBe(2)
  })

  it('a heartbeat with status "draining" drains; later plain heartbeats keep it draining; "ready" brings it back', async () => {
    await register('a')
    await register('b')
    const hb = await post('/heartbeat', { worker_id: 'a', status: 'draining' })
    expect(hb.body).toMatchObject({ status: 'acknowledged', state: 'draining' })
    expect((await workerView('a')).state).toBe('draining')
    for (let i = 0; i < 4; i++) {
      expect((await post('/route', { verb: 'invoke', capability: 'echo' })).body.worker_id).toBe('b')
    }
    const plain = await post('/heartbeat', { worker_id: 'a' })
    expect(plain.body.state).toBe('draining')
    const ready = await post('/heartbeat', { worker_id: 'a', status: 'ready' })
    expect(ready.body.state).toBe('healthy')
    const seen = new Set<string>()
    for (let i = 0; i < 4; i++) seen.add((await post('/route', { verb: 'invoke', capability: 'echo' })).body.worker_id)
    expect(seen).toEqual(new Set(['a', 'b']))
  })

  it('draining an unknown worker answers worker_not_registered', async () => {
    const res = await post('/drain', { worker_id: 'ghost' })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ error: 'worker_not_registered', worker_id: 'ghost' })
  })
})
