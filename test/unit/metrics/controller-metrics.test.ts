import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { ControllerCore, controllerView, type NodeFacts, type ViewEvents } from '../../../src/core/index.ts'
import { controllerMetrics } from '../../../src/metrics/index.ts'
import { parseMetrics } from '../../helpers/metrics.ts'

const core = (): ControllerCore => new ControllerCore({ controllerId: 'a', heartbeatIntervalMs: 1000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 })
/** A process with no mesh and no data dir yet. */
const noNode: NodeFacts = {
  peerId: () => null,
  listenAddrs: () => [],
  advertisedAddrs: () => [],
  connectedPeers: () => 0,
  peers: () => [],
  sync: () => ({ state: 'ok', behind: [] }),
  store: () => null,
  caPath: () => null,
  meshKeys: () => [],
  admission: () => ({ file: null, controllers: [], refused: [] }),
  config: () => ({ heartbeat_interval_ms: 1000, unhealthy_after_ms: 60_000, stale_after_ms: 120_000 }),
  auth: () => ({ mode: 'required', trust_domain: 'capmesh.local', health: 'open' })
}
const cap = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 1 }
/** Metrics of `c`'s view; `events` is what the composition root relays into it. */
const metricsOf = (c: ControllerCore, processMetrics = false, events = new EventEmitter<ViewEvents>()) =>
  controllerMetrics({ view: controllerView(c, noNode, events), info: { controller_id: 'a', mesh_key_id: null } }, { processMetrics })

describe('controller metrics', () => {
  it('read the registry and the liveness of owned workers when scraped', async () => {
    const c = core()
    const m = metricsOf(c)
    for (const id of ['w1', 'w2', 'w3']) c.register({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap] })
    c.heartbeat({ worker_id: 'w2', status: 'draining' })
    let s = parseMetrics(await m.text())
    expect(s.sum('capmesh_own_workers', { state: 'healthy' })).toBe(2)
    expect(s.sum('capmesh_own_workers', { state: 'draining' })).toBe(1)
    expect(s.sum('capmesh_workers')).toBe(3)
    expect(s.sum('capmesh_registry_segments')).toBe(1)
    // No mesh and no store yet: zero peers, no store series, nothing thrown.
    expect(s.sum('capmesh_mesh_connected_peers')).toBe(0)
    expect(s.sum('capmesh_store_bytes')).toBe(0)
    c.deregister('w3')
    s = parseMetrics(await m.text())
    expect(s.sum('capmesh_workers')).toBe(2)
    expect(s.sum('capmesh_own_workers', { state: 'healthy' })).toBe(1)
    // Three registrations, a drain, a removal: five changes; one watcher open.
    const w = c.changes.watch(null, { capabilities: null, kinds: null })
    s = parseMetrics(await m.text())
    expect(s.sum('capmesh_watch_index')).toBe(5)
    expect(s.sum('capmesh_watchers')).toBe(1)
    w.close()
    expect(parseMetrics(await m.text()).sum('capmesh_watchers')).toBe(0)
  })

  it('count the controller\'s events until closed', async () => {
    const c = core()
    const events = new EventEmitter<ViewEvents>()
    const m = metricsOf(c, false, events)
    events.emit('gossip', 'capmesh/registry/3', 'accepted')
    events.emit('gossip', 'capmesh/registry/3', 'rejected')
    events.emit('gossip', 'capmesh/liveness/3', 'ignored')
    events.emit('sync', { ok: true, bytesReceived: 1000 })
    events.emit('sync', { ok: true, bytesReceived: 24 })
    events.emit('sync', { ok: false, reason: 'timeout' })
    events.emit('selfPreservation', 'peers', true)
    events.emit('selfPreservation', 'peers', false)
    events.emit('expired', 'w1', 'unhealthy')
    events.emit('dropped', 'b', 2)
    let s = parseMetrics(await m.text())
    expect(s.sum('capmesh_gossip_messages_total', { topic: 'capmesh/registry/3' })).toBe(2)
    expect(s.sum('capmesh_gossip_messages_total', { result: 'ignored' })).toBe(1)
    expect(s.sum('capmesh_sync_exchanges_total', { result: 'ok' })).toBe(2)
    expect(s.sum('capmesh_sync_exchanges_total', { result: 'failed' })).toBe(1)
    expect(s.sum('capmesh_sync_received_bytes_total')).toBe(1024)
    // Switching on counts; switching off does not.
    expect(s.sum('capmesh_self_preservation_entered_total', { kind: 'peers' })).toBe(1)
    expect(s.sum('capmesh_self_preservation_entered_total', { kind: 'workers' })).toBe(0)
    expect(s.sum('capmesh_workers_expired_total')).toBe(1)
    expect(s.sum('capmesh_owner_drops_total')).toBe(1)

    expect(s.sum('capmesh_sync_failures_total', { reason: 'timeout' })).toBe(1)
    expect(s.sum('capmesh_sync_failures_total', { reason: 'too_large' })).toBe(0)

    m.close()
    events.emit('sync', { ok: false, reason: 'timeout' })
    events.emit('expired', 'w2', 'unhealthy')
    s = parseMetrics(await m.text())
    expect(s.sum('capmesh_sync_exchanges_total', { result: 'failed' })).toBe(1)
    expect(s.sum('capmesh_workers_expired_total')).toBe(1)
    expect(events.listenerCount('gossip') + events.listenerCount('expired')).toBe(0)
  })

  it('time requests into buckets by route', async () => {
    const m = metricsOf(core())
    m.observeHttp('POST', '/route', 200, 0.0003)
    m.observeHttp('POST', '/route', 200, 0.003)
    m.observeHttp('POST', '/route', 404, 3)
    const s = parseMetrics(await m.text())
    expect(s.sum('capmesh_http_requests_total', { route: '/route' })).toBe(3)
    expect(s.sum('capmesh_http_requests_total', { route: '/route', status: '404' })).toBe(1)
    expect(s.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '0.0005' })).toBe(1)
    expect(s.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '0.005' })).toBe(2)
    expect(s.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '2.5' })).toBe(2)
    expect(s.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '+Inf' })).toBe(3)
  })

  it('count through a per-route recorder into the same series as observeHttp', async () => {
    const m = metricsOf(core())
    const post = m.httpRecorder('POST', '/route')
    post(200, 0.0003)
    post(503, 0.003)
    m.observeHttp('POST', '/route', 200, 3)
    m.httpRecorder('GET', '/route')(200, 0.0003)
    const s = parseMetrics(await m.text())
    expect(s.sum('capmesh_http_requests_total', { method: 'POST', route: '/route', status: '200' })).toBe(2)
    expect(s.sum('capmesh_http_requests_total', { method: 'POST', route: '/route', status: '503' })).toBe(1)
    expect(s.sum('capmesh_http_requests_total', { method: 'GET', route: '/route' })).toBe(1)
    expect(s.sum('capmesh_http_request_duration_seconds_bucket', { route: '/route', le: '0.0005' })).toBe(2)
    expect(s.sum('capmesh_http_request_duration_seconds_count', { route: '/route' })).toBe(4)
  })

  it('include Node\'s process metrics only when asked, one set per process', async () => {
    const without = parseMetrics(await metricsOf(core()).text())
    expect(() => without.sum('process_cpu_seconds_total')).toThrow(/no metric/)
    const one = parseMetrics(await metricsOf(core(), true).text())
    const two = parseMetrics(await metricsOf(core(), true).text())
    expect(one.sum('process_cpu_seconds_total')).toBeGreaterThan(0)
    expect(two.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge')
    // Each metric family once per scrape: the two outputs concatenated stay valid.
    expect(one.samples.filter(x => x.name === 'process_cpu_seconds_total')).toHaveLength(1)
  })
})
