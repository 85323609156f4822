/**
 * The route client: answers `route()` in-process from a local copy of what
 * a controller routes by, kept current through that controller's
 * `GET /watch` stream.
 *
 * - **Same answers as `/route`**: the copy is indexed by routing/'s Router,
 *   the code `/route` runs (filters, strategies, affinity, idempotency keys,
 *   404 vs 503). Loads are those of the last event about each worker (the
 *   controller does not stream every heartbeat's load), so `least_loaded`
 *   sees them as of the last state change or snapshot.
 * - **Resumes**: a stream that breaks, ends or goes silent (no event and no
 *   keepalive for `idleTimeoutMs`) is reopened with the last event id seen:
 *   the controller replays what was missed (or sends a snapshot if its log
 *   no longer holds it, or it restarted).
 * - **Fails over**: a controller that cannot be reached (or refuses: 503
 *   with Retry-After) is skipped for a back-off while the next one in the
 *   list is tried; a stream from another controller starts with its
 *   snapshot. Meanwhile `route()` answers from the last copy.
 * - **Empty-push protection** (local-view.ts): a change that would leave a
 *   capability with fewer than `holdBelow` routable workers is held until
 *   another controller of the list confirms it (asked at once, then every
 *   `confirmIntervalMs`) or a snapshot arrives; with no other controller to
 *   ask, the client asks its own for a fresh snapshot.
 *
 * Loads no libp2p, Yjs or fastify: undici (HTTPS), the wire types and the router.
 */
import { EventEmitter } from 'node:events'
import * as C from '../constants.ts'
import { NoControllerError } from '../errors.ts'
import { httpsClient, type HttpsClient, type StreamResponse } from '../utils/https-client.ts'
import { readSse, SseParser } from '../utils/sse.ts'
import { WATCH_EVENT_ID, type RouteQuery, type RouteResult, type WatchEvent, type WatchEventName, type WatchSnapshot, type WorkersReply, type WorkerView } from '../wire/index.ts'
import { LocalView, type CapabilityKey, type LocalViewEvents } from './local-view.ts'

export interface RouteClientInit {
  /** Controller URLs, in order of preference: the failover list. */
  controllers: string[]
  /** The controllers' CA and this client's identity (a client or operator certificate): `{ ca, cert, key }` (PEM). */
  tls: { ca: string | string[], cert?: string, key?: string }
  /** A bearer token instead of a certificate (or a function giving the current one). @default none */
  token?: string | (() => string)
  /** Only these capabilities (the stream carries nothing else; route() refuses others). @default all */
  capabilities?: string[]
  /**
   * Empty-push protection: hold a change that would leave a capability with
   * fewer than this many routable (healthy or pending) workers, until a
   * second controller or a snapshot confirms it. 0 turns it off.
   * @default 1 (a drop to zero)
   */
  holdBelow?: number
  /** While a change is held, ask another controller to confirm it this often (ms); the first time at once. @default 5000 */
  confirmIntervalMs?: number
  /** Reopen a stream that heard nothing (not even a keepalive) for this long (ms). @default 45000 */
  idleTimeoutMs?: number
  /** First wait (ms) before retrying a controller that failed; doubles per failure in a row, with jitter. @default 100 */
  reconnectBaseMs?: number
  /** ... up to this (ms). @default 5000 */
  reconnectMaxMs?: number
  /** Connecting and a stream's headers, or a whole confirmation, must take less than this (ms). @default 10000 */
  timeoutMs?: number
}

export interface RouteClientEvents {
  /** A stream opened, resuming after `cursor` (the last event id seen), or from a snapshot (null). */
  connected: [info: { controller: string, cursor: string | null }]
  /** A snapshot replaced the local copy. */
  snapshot: [info: { controller: string, controllerId: string, index: number, workers: number }]
  /** The stream broke or ended (it is reopened). */
  disconnected: [info: { controller: string, error: Error | null }]
  /** The client moved to another controller. */
  failover: [info: { from: string, to: string }]
  /** A change is held (empty-push protection). */
  hold: LocalViewEvents['hold']
  /** A held change was applied. */
  release: LocalViewEvents['release']
  /** One event applied to the local copy. */
  change: [event: WatchEvent]
}

export interface RouteClientCounters {
  events: number
  snapshots: number
  /** Streams opened, the first included. */
  connects: number
  /** Streams that resumed from the last event seen (no snapshot needed). */
  resumes: number
  failovers: number
  holds: number
  releases: number
  /** Confirmations asked of other controllers. */
  confirmations: number
}

/** A promise settled from outside (Promise.withResolvers, which this project's TypeScript lib predates). */
function deferred (): { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void } {
  let resolve = (): void => {}
  let reject = (_err: Error): void => {}
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms).unref()) }
const jitter = (ms: number): number => ms * (0.75 + Math.random() / 2)

/** Why a stream attempt ended. */
type Outcome = { served: boolean, retryAfterMs: number | null, error: Error | null }

export class RouteClient extends EventEmitter<RouteClientEvents> {
  readonly counters: RouteClientCounters = { events: 0, snapshots: 0, connects: 0, resumes: 0, failovers: 0, holds: 0, releases: 0, confirmations: 0 }
  private readonly init: RouteClientInit
  private readonly http: HttpsClient
  private readonly view: LocalView
  private readonly controllerUrls: string[]
  private readonly notBefore = new Map<string, number>()
  private readonly failures = new Map<string, number>()
  private current: string
  private stream: StreamResponse | null = null
  private closed = false
  private loop: Promise<void> | null = null
  private confirmTimer: NodeJS.Timeout | null = null
  private confirming = false
  /** The next stream starts without a cursor (a fresh snapshot was asked for). */
  private wantSnapshot = false
  private readonly firstSnapshot = deferred()

  constructor (init: RouteClientInit) {
    super()
    if (init.controllers.length === 0) throw new NoControllerError([])
    this.init = init
    this.controllerUrls = init.controllers.map(u => u.replace(/\/+$/, ''))
    this.current = this.controllerUrls[0]
    this.http = httpsClient({ ca: init.tls.ca, cert: init.tls.cert, key: init.tls.key, token: init.token, timeoutMs: init.timeoutMs ?? C.DEFAULT_ROUTE_CLIENT_TIMEOUT_MS })
    this.view = new LocalView({ holdBelow: init.holdBelow ?? C.DEFAULT_ROUTE_CLIENT_HOLD_BELOW, capabilities: init.capabilities != null ? new Set(init.capabilities) : null })
    this.view.on('hold', info => {
      this.counters.holds++
      this.emit('hold', info)
      this.scheduleConfirm(0)
    })
    this.view.on('release', info => {
      this.counters.releases++
      this.emit('release', info)
    })
    this.firstSnapshot.promise.catch(() => {})
  }

  /** The controller whose stream the copy follows now (URL), and its id once known. */
  get controller (): { url: string, id: string | null } { return { url: this.current, id: this.view.controllerId } }

  /** True while a stream is open. */
  get connected (): boolean { return this.stream != null }

  /** The last event applied (`<epoch>-<index>`), what a reconnect resumes from. */
  get cursor (): string | null {
    const c = this.view.cursor
    return c == null ? null : `${c.epoch}-${c.index}`
  }

  /**
   * Opens the stream and resolves once the first snapshot is in: from then
   * on route() answers. Rejects with NoControllerError when every controller
   * failed once before any snapshot (the client keeps trying until close()).
   */
  async start (): Promise<void> {
    this.loop ??= this.run()
    await this.firstSnapshot.promise
  }

  /** Picks a worker as `/route` at the followed controller would (NoWorkerError 404 / NoHealthyWorkerError 503 alike). */
  route (q: RouteQuery): RouteResult {
    return this.view.route(q)
  }

  /** The workers routes are chosen from (held changes not applied). */
  workers (): WorkerView[] { return this.view.workers() }

  /** Changes held by empty-push protection. */
  held (): Array<{ workerId: string, capabilities: CapabilityKey[] }> { return this.view.heldChanges() }

  async close (): Promise<void> {
    this.closed = true
    if (this.confirmTimer != null) clearTimeout(this.confirmTimer)
    this.confirmTimer = null
    this.stream?.close()
    this.firstSnapshot.reject(new Error('route client closed'))
    await this.loop?.catch(() => {})
    await this.http.close()
  }

  // ---------------------------------------------------------------- streams

  private async run (): Promise<void> {
    const n = this.controllerUrls.length
    const failedBeforeReady = new Set<string>()
    const base = this.init.reconnectBaseMs ?? C.DEFAULT_ROUTE_CLIENT_RECONNECT_BASE_MS
    let lastAttempt = -Infinity
    while (!this.closed) {
      const url = this.pick()
      // At most one attempt per reconnectBaseMs, whatever happens: a controller that accepts and at once ends every stream costs a few requests a second.
      const wait = Math.max((this.notBefore.get(url) ?? 0) - performance.now(), lastAttempt + base - performance.now())
      if (wait > 0) await sleep(wait)
      lastAttempt = performance.now()
      if (this.closed) break
      if (url !== this.current) {
        this.counters.failovers++
        this.emit('failover', { from: this.current, to: url })
        this.current = url
      }
      const out = await this.follow(url)
      if (this.closed) break
      if (out.served) {
        // It served: reopen it at once and resume; only a failure to reconnect moves on.
        this.failures.set(url, 0)
        this.notBefore.delete(url)
        continue
      }
      const k = (this.failures.get(url) ?? 0) + 1
      this.failures.set(url, k)
      const backoff = jitter(Math.min(this.init.reconnectMaxMs ?? C.DEFAULT_ROUTE_CLIENT_RECONNECT_MAX_MS, base * 2 ** (k - 1)))
      this.notBefore.set(url, performance.now() + Math.max(backoff, out.retryAfterMs ?? 0))
      if (!this.view.ready) {
        failedBeforeReady.add(url)
        if (failedBeforeReady.size === n) {
          this.firstSnapshot.reject(new NoControllerError(this.controllerUrls.map(c => ({ controller: c, error: c === url ? String(out.error?.message ?? out.error) : 'failed' }))))
        }
      }
    }
  }

  /** The current controller unless it is backing off; else the next in the list that is not; else the one free soonest. */
  private pick (): string {
    const now = performance.now()
    const start = this.controllerUrls.indexOf(this.current)
    let soonest = this.current
    for (let i = 0; i < this.controllerUrls.length; i++) {
      const url = this.controllerUrls[(start + i) % this.controllerUrls.length]
      const at = this.notBefore.get(url) ?? 0
      if (at <= now) return url
      if (at < (this.notBefore.get(soonest) ?? 0)) soonest = url
    }
    return soonest
  }

  /** Follows one stream until it breaks, ends or goes silent. */
  private async follow (url: string): Promise<Outcome> {
    const cursor = this.wantSnapshot ? null : this.cursor
    this.wantSnapshot = false
    const query = this.init.capabilities != null ? '?' + this.init.capabilities.map(c => `capability=${encodeURIComponent(c)}`).join('&') : ''
    let res: StreamResponse
    try {
      res = await this.http.stream(`${url}/watch${query}`, { headers: cursor != null ? { 'last-event-id': cursor } : {} })
    } catch (err) {
      return { served: false, retryAfterMs: null, error: err as Error }
    }
    if (res.status !== 200) {
      let text = ''
      try {
        for await (const chunk of res.body) text += Buffer.from(chunk).toString()
      } catch {}
      res.close()
      const retry = Number(res.headers['retry-after'])
      return { served: false, retryAfterMs: Number.isFinite(retry) ? retry * 1000 : null, error: new Error(`${url}/watch: HTTP ${res.status} ${text.slice(0, 200)}`) }
    }
    if (this.closed) {
      res.close()
      return { served: true, retryAfterMs: null, error: null }
    }
    this.stream = res
    this.counters.connects++
    this.emit('connected', { controller: url, cursor })
    let resumed = cursor != null
    let error: Error | null = null
    const idleMs = this.init.idleTimeoutMs ?? C.DEFAULT_ROUTE_CLIENT_IDLE_TIMEOUT_MS
    let idle = setTimeout(() => { res.close() }, idleMs)
    const alive = (): void => { idle.refresh() }
    try {
      for await (const e of readSse(res.body, new SseParser(), alive)) {
        if (e.event === 'overflow') continue
        if (e.event === 'snapshot') {
          const s = JSON.parse(e.data) as WatchSnapshot
          this.view.snapshot(s)
          this.counters.snapshots++
          resumed = false
          this.emit('snapshot', { controller: url, controllerId: s.controller_id, index: s.index, workers: s.workers.length })
          this.firstSnapshot.resolve()
          continue
        }
        const m = e.id != null ? WATCH_EVENT_ID.exec(e.id) : null
        if (m == null || this.view.cursor == null) continue
        const event = { id: e.id, index: Number(m[2]), event: e.event as WatchEventName, data: JSON.parse(e.data) } as WatchEvent
        this.view.apply(event)
        this.counters.events++
        this.emit('change', event)
      }
    } catch (err) {
      error = err as Error
    } finally {
      clearTimeout(idle)
      idle = null as never
      res.close()
      this.stream = null
    }
    if (resumed) this.counters.resumes++
    if (!this.closed) this.emit('disconnected', { controller: url, error })
    return { served: true, retryAfterMs: null, error }
  }

  // ----------------------------------------------------------- confirmations

  private scheduleConfirm (ms: number): void {
    if (this.closed || this.confirmTimer != null || this.confirming) return
    this.confirmTimer = setTimeout(() => {
      this.confirmTimer = null
      void this.confirm()
    }, ms)
    this.confirmTimer.unref()
  }

  /**
   * Asks another controller of the list about each capability a held change
   * would leave short; with none answering, asks the followed controller for
   * a fresh snapshot (the stream is reopened without a cursor).
   */
  private async confirm (): Promise<void> {
    this.confirming = true
    try {
      for (const key of this.view.heldCapabilities()) {
        let answered = false
        for (const other of this.controllerUrls) {
          if (other === this.current || this.closed) continue
          this.counters.confirmations++
          const count = await this.routableAt(other, key)
          if (count == null) continue
          answered = true
          this.view.confirm(key, count)
          break
        }
        if (!answered && !this.closed) {
          this.wantSnapshot = true
          this.stream?.close()
          break
        }
      }
    } finally {
      this.confirming = false
    }
    if (this.view.heldCapabilities().length > 0) this.scheduleConfirm(this.init.confirmIntervalMs ?? C.DEFAULT_ROUTE_CLIENT_CONFIRM_INTERVAL_MS)
  }

  /** Routable (healthy or pending) workers offering `key` at `controller`, or null if it did not answer. */
  private async routableAt (controller: string, key: CapabilityKey): Promise<number | null> {
    try {
      const res = await this.http.json<WorkersReply>('GET', `${controller}/workers?capability=${encodeURIComponent(key.name)}&limit=${C.MAX_WORKERS_PAGE}`)
      if (res.status !== 200) return null
      return res.body.workers.filter(w => (w.state === 'healthy' || w.state === 'pending') && w.capabilities.some(c => c.verb === key.verb && c.name === key.name)).length
    } catch {
      return null
    }
  }
}

/** Creates a route client; `await client.start()` before routing. */
export function routeClient (init: RouteClientInit): RouteClient {
  return new RouteClient(init)
}
