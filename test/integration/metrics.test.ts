/**
 * GET /metrics on a mesh of two real controllers (in-process, real TCP
 * libp2p on loopback, real HTTPS with the project CA): what each one holds,
 * how its mesh is doing, and what it answered, in the Prometheus text format.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { scrape } from '../helpers/metrics.ts'

let bed: TestBed
let a: Controller
let b: Controller

beforeEach(async () => {
  bed = await testBed('metrics')
  a = await bed.start({ id: 'a' })
  b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
  await eventually(() => a.p2p.connectedPeers().includes(b.p2p.peerId), 'a and b connected')
})
afterEach(async () => { await bed.cleanup() })

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const register = async (c: Controller, id: string) => await post(c.url, '/register', { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] })

describe('GET /metrics', () => {
  it('shows the registry, the liveness of owned workers and the mesh, as each controller sees them', async () => {
    expect((await register(a, 'w1')).status).toBe(200)
    expect((await post(a.url, '/heartbeat', { worker_id: 'w1' })).status).toBe(200)
    // Healthy at b once a's liveness digest has told it so.
    const mb = (await eventually(async () => {
      const m = await scrape(bed.client, b.url)
      return m.sum('capmesh_workers', { state: 'healthy' }) === 1 ? m : null
    }, 'b to count w1 healthy'))!
    const ma = await scrape(bed.client, a.url)
    expect(ma.samples.find(s => s.name === 'capmesh_info')?.labels).toEqual({ controller_id: 'a', mesh_key_id: expect.stringMatching(/^[0-9a-f]{16}$/) })
    // The same mesh key on both, as /mesh says.
    expect(mb.samples.find(s => s.name === 'capmesh_info')?.labels.mesh_key_id).toBe(ma.samples.find(s => s.name === 'capmesh_info')?.labels.mesh_key_id)
    // a owns w1 and holds its heartbeat; b routes to it on a's word.
    expect(ma.sum('capmesh_own_workers', { state: 'healthy' })).toBe(1)
    expect(mb.sum('capmesh_own_workers')).toBe(0)
    expect(mb.sum('capmesh_workers', { state: 'healthy' })).toBe(1)
    expect(mb.sum('capmesh_workers')).toBe(1)
    for (const m of [ma, mb]) {
      expect(m.sum('capmesh_mesh_connected_peers')).toBe(1)
      expect(m.sum('capmesh_mesh_controllers', { status: 'alive' })).toBe(1)
      expect(m.sum('capmesh_self_preservation')).toBe(0)
      expect(m.types.get('capmesh_http_request_duration_seconds')).toBe('histogram')
      // Node's own metrics come along (one set per process).
      expect(m.sum('process_cpu_seconds_total')).toBeGreaterThan(0)
    }
    // a's liveness digests reach b on their topic (every 150 ms at least, in the local preset), each checked.
    await eventually(async () => (await scrape(bed.client, b.url)).sum('capmesh_gossip_messages_total', { topic: 'capmesh/liveness/3', result: 'accepted' }) > 0, 'b to accept a digest of a')
    expect(mb.sum('capmesh_gossip_messages_total', { result: 'rejected' })).toBe(0)
    // The link's first anti-entropy exchange counts on both sides.
    for (const c of [a, b]) await eventually(async () => (await scrape(bed.client, c.url)).sum('capmesh_sync_exchanges_total', { result: 'ok' }) > 0, `${c.config.id} to count its first exchange`)
    expect(ma.sum('capmesh_store_bytes', { file: 'log' })).toBeGreaterThan(0)
    await eventually(async () => (await scrape(bed.client, b.url)).sum('capmesh_mesh_peer_in_sync', { peer: 'a' }) === 1, 'b to see a\'s registry hash equal to its own')

    // A deregistration leaves both.
    expect((await post(b.url, '/deregister', { worker_id: 'w1' })).status).toBe(200)
    await eventually(async () => (await scrape(bed.client, a.url)).sum('capmesh_workers') === 0, 'a to count no worker')
    expect((await scrape(bed.client, b.url)).sum('capmesh_workers')).toBe(0)
  })

  it('counts and times every answer by route pattern and status, never by raw URL', async () => {
    const before = await scrape(bed.client, a.url)
    expect((await register(a, 'w2')).status).toBe(200)
    expect((await post(a.url, '/route', { verb: 'invoke', capability: 'cap-w2' })).status).toBe(200)
    expect((await post(a.url, '/route', { verb: 'invoke', capability: 'nobody-has-this' })).status).toBe(404)
    expect((await post(a.url, '/route', { verb: 42 })).status).toBe(400)
    expect((await bed.client.json('GET', `${a.url}/workers?state=healthy&limit=5`)).status).toBe(200)
    expect((await bed.client.json('GET', `${a.url}/no/such/path-${Date.now()}`)).status).toBe(404)

    const m = await scrape(bed.client, a.url)
    const delta = (labels: Record<string, string>): number => m.sum('capmesh_http_requests_total', labels) - before.sum('capmesh_http_requests_total', labels)
    expect(delta({ method: 'POST', route: '/register', status: '200' })).toBe(1)
    expect(delta({ method: 'POST', route: '/route', status: '200' })).toBe(1)
    expect(delta({ method: 'POST', route: '/route', status: '404' })).toBe(1)
    expect(delta({ method: 'POST', route: '/route', status: '400' })).toBe(1)
    expect(delta({ method: 'GET', route: '/workers', status: '200' })).toBe(1)
    expect(delta({ route: 'unmatched', status: '404' })).toBe(1)
    // Labels stay few: no query strings, no raw paths.
    expect(m.samples.filter(s => s.name === 'capmesh_http_requests_total' && /[?]|no\/such/.test(s.labels.route))).toEqual([])
    // Every counted request was timed, and each lies within the histogram's buckets.
    const routeCount = m.sum('capmesh_http_request_duration_seconds_count', { route: '/route' })
    expect(routeCount).toBe(m.sum('capmesh_http_requests_total', { route: '/route' }))
    expect(m.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '+Inf' })).toBe(routeCount)
  })

  it('counts workers expired for silence', async () => {
    expect((await register(a, 'silent')).status).toBe(200)
    // No heartbeat ever comes: pending, then gone after the stale window (1.2 s in the local preset).
    await eventually(async () => (await scrape(bed.client, a.url)).sum('capmesh_workers_expired_total') === 1, 'a to expire the silent worker', 10_000, 100)
    expect((await scrape(bed.client, a.url)).sum('capmesh_own_workers')).toBe(0)
  })
})
