/**
 * `GET /workers?index=N&wait=D` as Consul's blocking queries, over real
 * HTTPS: every listing carries the change index it is consistent with (field
 * and `x-capmesh-index`); with an index it answers at once when something
 * changed after it, else when something does (a registration at another
 * controller included) or at the timeout; a capability narrows what wakes
 * it; an index this controller never reached answers at once; a malformed or
 * enormous `wait` is a 400 naming it; a client that leaves frees its slot.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('blocking') })
afterEach(async () => { await bed.cleanup() })

/** Nobody heartbeats the workers registered here: they stay healthy (a health change is a change too). */
const PATIENT = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }
const register = async (c: Controller, id: string, cap = 'echo'): Promise<void> => {
  expect((await bed.client.json('POST', `${c.url}/register`, { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(cap)] })).status).toBe(200)
}
const list = async (c: Controller, query: string): Promise<{ status: number, body: any, ms: number, header: string }> => {
  const t0 = performance.now()
  const res = await bed.client.json('GET', `${c.url}/workers${query}`)
  return { status: res.status, body: res.body, ms: performance.now() - t0, header: String(res.headers['x-capmesh-index']) }
}

describe('GET /workers as a blocking query', () => {
  it('carries its index; answers at once when something changed after it, else on the next change, with the new index', async () => {
    const a = await bed.start({ id: 'a', ...PATIENT })
    const first = await list(a, '')
    expect(first.status).toBe(200)
    expect(first.body.index).toBe(a.view.changes().index)
    expect(first.header).toBe(String(first.body.index))

    await register(a, 'w1')
    const atOnce = await list(a, `?index=${first.body.index}&wait=10s`)
    expect(atOnce.ms).toBeLessThan(2000)
    expect(atOnce.body.workers.map((w: any) => w.worker_id)).toEqual(['w1'])
    expect(atOnce.body.index).toBeGreaterThan(first.body.index)

    const waiting = list(a, `?index=${atOnce.body.index}&wait=20s`)
    await new Promise(resolve => setTimeout(resolve, 300))
    await register(a, 'w2')
    const woke = await waiting
    expect(woke.ms).toBeGreaterThanOrEqual(250)
    expect(woke.ms).toBeLessThan(5000)
    expect(woke.body.workers.map((w: any) => w.worker_id).sort()).toEqual(['w1', 'w2'])
    expect(woke.body.index).toBeGreaterThan(atOnce.body.index)
    expect(woke.header).toBe(String(woke.body.index))
  })

  it('answers at the timeout when nothing of its capability changed: only changes of its capability wake it', async () => {
    // x1 going unhealthy would be a change of x.
    const a = await bed.start({ id: 'a', ...PATIENT })
    await register(a, 'x1', 'x')
    const { body } = await list(a, '?capability=x')
    const waiting = list(a, `?capability=x&index=${body.index}&wait=1500ms`)
    await new Promise(resolve => setTimeout(resolve, 200))
    await register(a, 'y1', 'y')
    const timedOut = await waiting
    expect(timedOut.ms).toBeGreaterThanOrEqual(1400)
    expect(timedOut.body.workers.map((w: any) => w.worker_id)).toEqual(['x1'])
    // The index moved (y1), the listing of x did not.
    expect(timedOut.body.index).toBeGreaterThan(body.index)
  })

  it('wakes on a change that happened at another controller of the mesh', async () => {
    const a = await bed.start({ id: 'a' })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(() => a.p2p.connectedPeers().length === 1, 'a and b linked')
    const { body } = await list(a, '')
    const waiting = list(a, `?index=${body.index}&wait=20s`)
    await new Promise(resolve => setTimeout(resolve, 200))
    await register(b, 'wb')
    const woke = await waiting
    expect(woke.ms).toBeLessThan(10_000)
    expect(woke.body.workers.map((w: any) => [w.worker_id, w.controller_id])).toEqual([['wb', 'b']])
  })

  it('answers at once for an index this controller never reached (another controller\'s, a previous life\'s), and for wait=0', async () => {
    const a = await bed.start({ id: 'a' })
    const ahead = await list(a, `?index=${a.view.changes().index + 1000}&wait=30s`)
    expect(ahead.status).toBe(200)
    expect(ahead.ms).toBeLessThan(2000)
    const zero = await list(a, `?index=${a.view.changes().index}&wait=0`)
    expect(zero.ms).toBeLessThan(2000)
  })

  it('refuses a malformed, enormous or orphan wait and a malformed index with 400 naming the field, and stays up', async () => {
    const a = await bed.start({ id: 'a' })
    const cases: Array<[string, string]> = [
      ['?index=0&wait=soon', 'querystring/wait'],
      ['?index=0&wait=-1s', 'querystring/wait'],
      ['?index=0&wait=6m', 'querystring/wait'],
      ['?index=0&wait=99999999999999999999h', 'querystring/wait'],
      ['?index=0&wait=1e400', 'querystring/wait'],
      [`?index=0&wait=${'9'.repeat(10_000)}`, 'querystring/wait'],
      ['?wait=5s', 'querystring/wait'],
      ['?index=-1', 'querystring/index'],
      ['?index=1.5', 'querystring/index'],
      ['?index=99999999999999999999', 'querystring/index']
    ]
    for (const [query, field] of cases) {
      const res = await list(a, query)
      expect(res.status, query.slice(0, 80)).toBe(400)
      expect(res.body.code).toBe('CAPMESH_ERR_VALIDATION')
      expect(res.body.details.map((d: any) => d.field), query.slice(0, 80)).toContain(field)
    }
    expect(a.view.changes().watchers).toBe(0)
    expect((await list(a, '')).status).toBe(200)
  })

  it('a client that leaves while waiting frees its watcher slot at once', async () => {
    const a = await bed.start({ id: 'a' })
    const ac = new AbortController()
    const pending = bed.client.json('GET', `${a.url}/workers?index=${a.view.changes().index}&wait=60s`, undefined, { signal: ac.signal }).catch(() => null)
    await eventually(() => a.view.changes().watchers === 1, 'the query to wait')
    ac.abort()
    await pending
    await eventually(() => a.view.changes().watchers === 0, 'its slot to be freed', 5000)
  })
})
