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

/** Counts and times one answered request of a given method and route (see `ControllerMetrics.httpRecorder`). */
export type HttpRecorder = (status: number, seconds: number) => void

export interface ControllerMetricsComponents {
  /** The controller, as everything outside its core sees it. */
  view: ControllerView
  /** Labels of `capmesh_info` (`mesh_key_id`: until the view knows its keys; then the primary's id when scraped). */
  info: { controller_id: string, mesh_key_id: string | null }
}

/** Why an exchange can fail (gossip/sync.ts): each reason's counter exists from the start, at 0. */
const SYNC_FAILURE_REASONS = ['too_large', 'timeout', 'closed', 'malformed', 'rejected', 'dial', 'internal']
/** Where a peer the allow list does not admit was turned away (gossip/admission.ts): each exists from the start, at 0. */
const REFUSAL_REASONS = ['inbound', 'outbound', 'dial', 'introduced', 'gossip', 'revoked']

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
  private readonly authFailures: Counter<'reason' | 'route'>
  private readonly detach: Array<() => void> = []

  constructor (components: ControllerMetricsComponents, init: ControllerMetricsInit = {}) {
    const { view } = components
    const registers = [this.registry]
    this.withProcess = init.processMetrics ?? true

    const info = components.info
    new Gauge({
      name: 'capmesh_info',
      help: 'This controller: its id and the public id of its primary mesh key (value always 1).',
      labelNames: ['controller_id', 'mesh_key_id'],
      registers,
      collect () {
        // The primary changes with a key rotation: one series, the current one.
        this.reset()
        this.set({ controller_id: info.controller_id, mesh_key_id: view.meshKeyIds()[0] ?? info.mesh_key_id ?? '' }, 1)
      }
    })
    new Gauge({
      name: 'capmesh_mesh_keys',
      help: 'Mesh keys this controller accepts (more than 1 only while a key rotation is under way).',
      registers,
      collect () { this.set(view.meshKeyIds().length) }
    })

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

    // ---- watchers: read when scraped
    new Gauge({
      name: 'capmesh_watchers',
      help: 'Open watchers: GET /watch streams and waiting blocking GET /workers queries (at most --max-watchers).',
      registers,
      collect () { this.set(view.changes().watchers) }
    })
    new Gauge({
      name: 'capmesh_watch_index',
      help: 'The index of the last change in this controller\'s change log (per process: it restarts at 0).',
      registers,
      collect () { this.set(view.changes().index) }
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
    const refused = new Counter({ name: 'capmesh_peers_refused_total', help: 'Peers turned away because the peer allow list does not admit them, by where (inbound, outbound, dial, introduced, gossip, revoked).', labelNames: ['reason'], registers })
    for (const r of REFUSAL_REASONS) refused.inc({ reason: r }, 0)
    const mismatches = new Counter({ name: 'capmesh_mesh_key_mismatch_total', help: 'Connections aborted because the peer keyed them with none of the accepted mesh keys.', registers })
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
    this.authFailures = new Counter({ name: 'capmesh_auth_failures_total', help: 'Requests refused for their identity (401, 403), by reason (credentials_missing, certificate_untrusted, token_expired, role_not_allowed, worker_owned_by_other, route_policy, ...) and route pattern.', labelNames: ['reason', 'route'], registers })
    this.httpSeconds = new LabelledHistogram({ name: 'capmesh_http_request_duration_seconds', help: 'Time from request to response, by route.', label: 'route', buckets: HTTP_BUCKETS, registers })

    this.follow(view, 'expired', () => { expired.inc() })
    this.follow(view, 'refused', reason => { refused.inc({ reason }) })
    this.follow(view, 'meshKeyMismatch', () => { mismatches.inc() })
    this.follow(view, 'dropped', () => { dropped.inc() })
    this.follow(view, 'selfPreservation', (kind, on) => { if (on) selfPreservation.inc({ kind }) })
    const dataRefused = new Counter({ name: 'capmesh_registry_refused_total', help: 'Registry data refused whole, by where it came from (remote: a peer\'s gossip or sync; import; load: the data dir) and why (unsigned: a segment changed without its owner\'s seal, or sealed by a key not admitted for it; malformed).', labelNames: ['origin', 'kind'], registers })
    for (const origin of ['remote', 'import', 'load']) for (const kind of ['unsigned', 'malformed']) dataRefused.inc({ origin, kind }, 0)
    this.follow(view, 'dataRefused', (origin, kind) => { dataRefused.inc({ origin, kind }) })
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

  /** A request refused for its identity: why (an AUTH_REASONS key) and on which route pattern. */
  observeAuthFailure (reason: string, route: string): void {
    this.authFailures.inc({ reason, route })
  }

  /** One answered HTTPS request. `route` is the route's pattern (never the raw URL: bounded labels). */
  observeHttp (method: string, route: string, status: number, seconds: number): void {
    this.httpCount(method, route, status).n++
    this.httpSeconds.observe(route, seconds)
  }

  /**
   * `observeHttp` for one method and route pattern, as a function the API's
   * per-route hook keeps: it builds and hashes no key per request (that cost
   * ~1 µs a request in a profile of `/route` under load).
   */
  httpRecorder (method: string, route: string): HttpRecorder {
    const byStatus = new Map<number, { n: number }>()
    const series = this.httpSeconds.seriesOf(route)
    const histogram = this.httpSeconds
    return (status, seconds) => {
      let c = byStatus.get(status)
      if (c == null) byStatus.set(status, c = this.httpCount(method, route, status))
      c.n++
      histogram.record(series, seconds)
    }
  }

  /** The request counter of method + route + status, created at 0. */
  private httpCount (method: string, route: string, status: number): { n: number } {
    const key = `${method} ${route} ${status}`
    let c = this.httpCounts.get(key)
    if (c == null) this.httpCounts.set(key, c = { labels: { method, route, status: String(status) }, n: 0 })
    return c
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
