/**
 * Prometheus metrics of one controller, served at `GET /metrics`.
 *
 *   const metrics = controllerMetrics({ view, info })
 *   metrics.observeHttp('POST', '/route', 200, 0.0004)
 *   const text = await metrics.text()
 *
 * Gauges are read from the controller's state when scraped, so the hot paths
 * (routing, heartbeats, gossip) pay nothing for them; counters follow events.
 * Each controller has its own prom-client Registry (several controllers share
 * a process in tests and in `bench:mesh`); the Node process metrics (CPU,
 * memory, event-loop delay, GC) are one set per process, shared by all.
 */
import { Counter, Gauge, Registry } from 'prom-client'
import type { ControllerView, ViewEvents } from '../core/index.ts'
import type { HealthState } from '../wire/index.ts'
import { LabelledHistogram } from './histogram.ts'
import { exposition } from './process.ts'

export interface ControllerMetricsComponents {
  /** The controller, as everything outside its core sees it. */
  view: ControllerView
  /** Labels of `capmesh_info`. */
  info: { controller_id: string, mesh_key_id: string | null }
}

/** Why an exchange can fail (gossip/sync.ts): each reason's counter exists from the start, at 0. */
const SYNC_FAILURE_REASONS = ['too_large', 'timeout', 'closed', 'malformed', 'rejected', 'dial', 'internal']

export interface ControllerMetricsInit {
  /** Include the Node process metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean
}

/** Request latency buckets (seconds): a route decision is tens of µs, a registration a few ms, an import up to seconds. */
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
const HEALTH_STATES: HealthState[] = ['healthy', 'unhealthy', 'draining', 'pending']
const MEMBER_STATES = ['unknown', 'alive', 'silent', 'gone'] as const

export class ControllerMetrics {
  readonly registry = new Registry()
  private readonly withProcess: boolean
  /** Requests by `method route status`, counted here and handed to prom-client when scraped (no label hashing per request). */
  private readonly httpCounts = new Map<string, { labels: { method: string, route: string, status: string }, n: number }>()
  private readonly httpSeconds: LabelledHistogram
  private readonly gossip: Counter<'topic' | 'result'>
  private readonly syncs: Counter<'result'>
  private readonly syncBytes: Counter
  private readonly syncFailures: Counter<'reason'>
  private readonly detach: Array<() => void> = []

  constructor (components: ControllerMetricsComponents, init: ControllerMetricsInit = {}) {
    const { view } = components
    const registers = [this.registry]
    this.withProcess = init.processMetrics ?? true

    new Gauge({ name: 'capmesh_info', help: 'This controller: its id and the public id of its mesh key (value always 1).', labelNames: ['controller_id', 'mesh_key_id'], registers })
      .set({ controller_id: components.info.controller_id, mesh_key_id: components.info.mesh_key_id ?? '' }, 1)

    // ---- registry and liveness: read when scraped
    new Gauge({
      name: 'capmesh_workers',
      help: 'Workers in this controller\'s registry, by the health state it routes them by.',
      labelNames: ['state'],
      registers,
      collect () {
        const counts = view.stateCounts()
        for (const s of HEALTH_STATES) this.set({ state: s }, counts[s])
      }
    })
    new Gauge({
      name: 'capmesh_own_workers',
      help: 'Workers attached to this controller (it holds their heartbeats), by health state.',
      labelNames: ['state'],
      registers,
      collect () {
        const counts = view.ownCounts()
        for (const s of HEALTH_STATES) this.set({ state: s }, counts[s])
      }
    })
    new Gauge({
      name: 'capmesh_registry_segments',
      help: 'Segments in the registry document, all owners (compaction rotates a controller to a new one).',
      registers,
      collect () { this.set(view.registryStats().segments) }
    })
    new Gauge({
      name: 'capmesh_registry_own_garbage',
      help: 'Dead entries in this controller\'s current segment (compaction starts a new segment past a threshold).',
      registers,
      collect () { this.set(view.registryStats().ownGarbage) }
    })
    new Counter({
      name: 'capmesh_registry_compactions_total',
      help: 'Segment generations this controller rotated through since it started.',
      registers,
      collect () {
        this.reset()
        this.inc(view.registryStats().compactions)
      }
    })
    new Gauge({
      name: 'capmesh_store_bytes',
      help: 'Size of the data dir\'s files.',
      labelNames: ['file'],
      registers,
      collect () {
        const s = view.store()
        if (s == null) return
        this.set({ file: 'log' }, s.logBytes)
        this.set({ file: 'snapshot' }, s.snapshotBytes)
      }
    })
    new Gauge({
      name: 'capmesh_self_preservation',
      help: '1 while self-preservation holds entries instead of evicting them, by what went silent (workers or peers).',
      labelNames: ['kind'],
      registers,
      collect () {
        const sp = view.selfPreservation()
        this.set({ kind: 'workers' }, sp.workers ? 1 : 0)
        this.set({ kind: 'peers' }, sp.peers ? 1 : 0)
      }
    })

    // ---- the mesh: read when scraped
    new Gauge({
      name: 'capmesh_mesh_connected_peers',
      help: 'libp2p peers this controller is connected to.',
      registers,
      collect () { this.set(view.connectedPeers()) }
    })
    new Gauge({
      name: 'capmesh_mesh_controllers',
      help: 'Other controllers this one knows of, by the status of their liveness digests.',
      labelNames: ['status'],
      registers,
      collect () {
        const counts = new Map<string, number>(MEMBER_STATES.map(s => [s, 0]))
        for (const m of Object.values(view.members())) counts.set(m.status, (counts.get(m.status) ?? 0) + 1)
        for (const [s, n] of counts) this.set({ status: s }, n)
      }
    })
    new Gauge({
      name: 'capmesh_mesh_peer_in_sync',
      help: 'Per controller heard from (alive): 1 if the registry hash in its last digest equals this controller\'s (0 for a moment after every write).',
      labelNames: ['peer'],
      registers,
      collect () {
        this.reset()
        for (const [id, m] of Object.entries(view.members())) {
          if (m.status !== 'alive') continue
          this.set({ peer: id }, m.registry_hash_matches === true ? 1 : 0)
        }
      }
    })

    // ---- events
    this.gossip = new Counter({ name: 'capmesh_gossip_messages_total', help: 'Gossip messages checked by the topic validator, by topic and verdict (rejected: malformed; ignored: out of order, left to anti-entropy).', labelNames: ['topic', 'result'], registers })
    this.syncs = new Counter({ name: 'capmesh_sync_exchanges_total', help: 'Anti-entropy exchanges, either side, by result.', labelNames: ['result'], registers })
    this.syncBytes = new Counter({ name: 'capmesh_sync_received_bytes_total', help: 'Registry bytes received in anti-entropy exchanges.', registers })
    this.syncFailures = new Counter({ name: 'capmesh_sync_failures_total', help: 'Failed anti-entropy exchanges, either side, by reason (too_large: a delta beyond max-sync-bytes; timeout, closed, malformed, rejected, dial, internal).', labelNames: ['reason'], registers })
    for (const r of SYNC_FAILURE_REASONS) this.syncFailures.inc({ reason: r }, 0)
    new Gauge({
      name: 'capmesh_sync_peers_behind',
      help: 'Connected peers whose anti-entropy exchanges with this controller keep failing (it reports itself behind while > 0).',
      registers,
      collect () { this.set(view.sync().behind.length) }
    })
    const expired = new Counter({ name: 'capmesh_workers_expired_total', help: 'Workers this controller removed because they went silent (or were never confirmed).', registers })
    const dropped = new Counter({ name: 'capmesh_owner_drops_total', help: 'Times the entries of a controller gone for the stale window were dropped.', registers })
    const selfPreservation = new Counter({ name: 'capmesh_self_preservation_entered_total', help: 'Times self-preservation switched on, by what went silent.', labelNames: ['kind'], registers })
    for (const s of ['ok', 'failed']) this.syncs.inc({ result: s }, 0)
    for (const k of ['workers', 'peers']) selfPreservation.inc({ kind: k }, 0)
    const httpCounts = this.httpCounts
    new Counter({
      name: 'capmesh_http_requests_total',
      help: 'HTTPS requests answered, by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
      collect () {
        this.reset()
        for (const { labels, n } of httpCounts.values()) this.inc(labels, n)
      }
    })
    this.httpSeconds = new LabelledHistogram({ name: 'capmesh_http_request_duration_seconds', help: 'Time from request to response, by route.', label: 'route', buckets: HTTP_BUCKETS, registers })

    this.follow(view, 'expired', () => { expired.inc() })
    this.follow(view, 'dropped', () => { dropped.inc() })
    this.follow(view, 'selfPreservation', (kind, on) => { if (on) selfPreservation.inc({ kind }) })
    this.follow(view, 'gossip', (topic, result) => { this.gossip.inc({ topic, result }) })
    this.follow(view, 'sync', r => {
      this.syncs.inc({ result: r.ok ? 'ok' : 'failed' })
      if (r.ok) this.syncBytes.inc(r.bytesReceived)
      else this.syncFailures.inc({ reason: r.reason })
    })
  }

  /** Listens to `event` until close(). */
  private follow<K extends keyof ViewEvents> (view: ControllerView, event: K, fn: (...args: ViewEvents[K]) => void): void {
    view.on(event, fn)
    this.detach.push(() => { view.off(event, fn) })
  }

  /** One answered HTTPS request. `route` is the route's pattern (never the raw URL: bounded labels). */
  observeHttp (method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${route} ${status}`
    const c = this.httpCounts.get(key)
    if (c != null) c.n++
    else this.httpCounts.set(key, { labels: { method, route, status: String(status) }, n: 1 })
    this.httpSeconds.observe(route, seconds)
  }

  /** The exposition format's content type. */
  get contentType (): string { return this.registry.contentType }

  /** Every metric in the Prometheus text format. */
  async text (): Promise<string> {
    return await exposition(this.registry, this.withProcess)
  }

  /** Stops following events. */
  close (): void {
    for (const f of this.detach.splice(0)) f()
  }
}

/** Creates a controller's metrics (see ControllerMetrics). */
export function controllerMetrics (components: ControllerMetricsComponents, init?: ControllerMetricsInit): ControllerMetrics {
  return new ControllerMetrics(components, init)
}
