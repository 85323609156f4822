/**
 * The worker agent: keeps one worker attached to the mesh.
 *
 * - **Closest controller**: probes every controller (median of a few
 *   `/health` round trips) and attaches to the fastest that answers, or to
 *   the `affinity` controller when it is reachable. Re-probes periodically and
 *   moves only when another controller is clearly closer (hysteresis).
 * - **Registration** with exponential back-off and jitter (p-retry), then
 *   the next controller in order of closeness. A failing controller is
 *   quarantined (skipped until the others were tried), as Eureka's client
 *   does; success clears it. Network errors, timeouts and 5xx are retried; a
 *   4xx is permanent and reported with the controller's reason.
 * - **Heartbeats** carry the worker's load and incarnation. `worker_not_registered`
 *   (or 409 `superseded`: a newer attachment of this id exists) → re-register
 *   at once. `failureThreshold` consecutive failures → fail over to the next
 *   closest controller, with a bumped incarnation so the newest attachment
 *   wins everywhere. A late answer counts as a failure but is not aborted
 *   (no reconnect storm against a slow controller).
 * - **Detached** (every controller failed): attach rounds back off from one
 *   to eight heartbeat intervals, with jitter.
 *
 * Only the wire contract is used: any controller speaking it will do.
 *
 * **Tracing** through @opentelemetry/api alone (a no-op unless the
 * application registered an OpenTelemetry SDK): attaching, draining and
 * deregistering are spans of the agent (`capmesh.agent.*`), and every call
 * carries the active context (utils/https-client.ts), so the controller's
 * `/register` span and its apply on every other controller join the
 * worker's trace. Heartbeats and the attach rounds they trigger run in the
 * root context: they do not join whatever trace `start()` was called in.
 */
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import { ROOT_CONTEXT, SpanStatusCode, context, trace, type Attributes } from '@opentelemetry/api'
import pRetry, { AbortError } from 'p-retry'
import * as C from '../constants.ts'
import {
  ControllerTimeoutError, ControllerUnavailableError, NoControllerError, RegistrationRejectedError
} from '../errors.ts'
import type {
  Capability, DeregisterReply, DeregisterRequest, DrainReply, DrainRequest, ErrorBody, HeartbeatReply, HeartbeatRequest, RegisterReply,
  RegisterRequest, SupersededReply
} from '../wire/index.ts'
import { httpsClient, type HttpsClient } from '../utils/https-client.ts'
import { probeControllers, type ProbeResult } from './probe.ts'

export interface WorkerAgentInit {
  /** The worker's id (printable ASCII, no spaces). */
  workerId: string
  /** Where the worker serves (https://host:port). */
  workerUrl: string
  /** What it offers (the full CapabilitySchema). */
  capabilities: Capability[]
  /** Controller URLs: the failover list. */
  controllers: string[]
  /** PEM CA certificate(s) to trust. Required unless `client` is given. */
  ca?: string | string[]
  /** The controllers' CA and the worker's identity as a client certificate (mutual TLS): `{ ca, cert, key }` (PEM). @default `ca` alone */
  tls?: { ca: string | string[], cert?: string, key?: string }
  /** The worker's identity as a bearer token (JWT), or a function giving the current one (for callers without a certificate). @default none */
  token?: string | (() => string)
  /** A shared HTTPS client (the agent does not close it). @default one of its own */
  client?: HttpsClient
  /** Heartbeat interval (ms). @default 30000 */
  heartbeatIntervalMs?: number
  /** Preferred controller id: attach there when it is reachable. @default none */
  affinity?: string
  /** Registration retries per controller. @default 3 */
  retries?: number
  /** First retry delay (ms), doubling, with jitter. @default 100 */
  retryBaseMs?: number
  /** Per-attempt timeout (ms) of a registration. @default 30000 */
  attemptTimeoutMs?: number
  /** Consecutive heartbeat failures before failing over. @default 2 */
  failureThreshold?: number
  /** How long a failed controller is skipped (ms). @default 30000 */
  quarantineMs?: number
  /** /health round trips per controller when probing. @default 3 */
  probes?: number
  /** Re-probe closeness this often (ms); 0 = never. @default 60000 */
  reprobeIntervalMs?: number
  /** Move only to a controller faster by this fraction of the current RTT ... @default 0.5 */
  hysteresisRatio?: number
  /** ... and by at least this many ms. @default 5 */
  hysteresisMinMs?: number
  /** In-flight requests, sent with each heartbeat. @default () => 0 */
  load?: () => number
  /** Closeness already measured (registerBatch probes once for all). @default probe on start */
  ranking?: ProbeResult[]
}

export interface AgentCounters {
  registrations: { ok: number, failed: number, rejected: number }
  retries: number
  failovers: number
  moves: number
  reregistrations: number
  heartbeats: { ok: number, failed: number }
  /** Last and average (EWMA) heartbeat round trip, ms. */
  heartbeatRttMs: { last: number | null, avg: number | null }
}

export interface AgentEvents {
  attached: [info: { controller: string, controllerId: string | null, rttMs: number | null, reason: AttachReason }]
  registered: [info: { controller: string, incarnation: number }]
  heartbeat_failed: [info: { controller: string, error: Error, consecutive: number }]
  failover: [info: { from: string, to: string, incarnation: number }]
  reregistered: [info: { controller: string, incarnation: number }]
  draining: [info: { controller: string | null }]
  stopped: []
  /** Attaching failed everywhere (the agent keeps trying at each heartbeat), or a permanent rejection. */
  error: [error: Error]
}

export type AttachReason = 'start' | 'failover' | 'move' | 'reregister' | 'retry'

/** The endpoints the agent calls: request body, and the replies it may get besides an error body. */
interface Endpoints {
  '/register': [RegisterRequest, RegisterReply]
  '/heartbeat': [HeartbeatRequest, HeartbeatReply | SupersededReply]
  '/drain': [DrainRequest, DrainReply | SupersededReply]
  '/deregister': [DeregisterRequest, DeregisterReply]
}
type Answer<P extends keyof Endpoints> = { status: number, body: Endpoints[P][1] | ErrorBody, retryAfterMs: number | null }

/** A Retry-After header's delay (ms): seconds, or an HTTP date; null if absent or unreadable. */
function retryAfterOf (h: string | string[] | undefined): number | null {
  const v = Array.isArray(h) ? h[0] : h
  if (v == null || v === '') return null
  const s = Number(v)
  if (Number.isFinite(s)) return Math.max(0, s * 1000)
  const at = Date.parse(v)
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : null
}

/** The agent's spans go to the process's global tracer provider (none, a no-op, unless the application registered one). */
const tracer = trace.getTracer('capmesh-agent')

/** `ms` give or take a quarter, so that workers told the same wait do not come back in step. */
const jitter = (ms: number): number => ms * (0.75 + Math.random() / 2)
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms).unref()) }
export type AgentState = 'idle' | 'attached' | 'detached' | 'draining' | 'stopped'

export class WorkerAgent extends EventEmitter<AgentEvents> {
  readonly workerId: string
  readonly counters: AgentCounters = {
    registrations: { ok: 0, failed: 0, rejected: 0 },
    retries: 0,
    failovers: 0,
    moves: 0,
    reregistrations: 0,
    heartbeats: { ok: 0, failed: 0 },
    heartbeatRttMs: { last: null, avg: null }
  }

  private readonly init: WorkerAgentInit
  private readonly client: HttpsClient
  private readonly ownClient: boolean
  private readonly interval: number
  private readonly quarantineMs: number
  private readonly threshold: number
  private ranking: ProbeResult[] = []
  private readonly quarantine = new Map<string, number>()
  private current: { url: string, id: string | null } | null = null
  private _incarnation = 0
  private _state: AgentState = 'idle'
  private failures = 0
  private timer: NodeJS.Timeout | null = null
  private reprobeTimer: NodeJS.Timeout | null = null
  private busy: Promise<void> | null = null
  /** The heartbeat still awaiting its answer (see beat()). */
  private inflight: { url: string, answer: Promise<Answer<'/heartbeat'>> } | null = null
  /** Attach rounds failed in a row while detached (sets the back-off). */
  private detachedRounds = 0
  /** No heartbeat before this (monotonic ms): a controller's Retry-After. */
  private holdOffUntil = 0

  constructor (init: WorkerAgentInit) {
    super()
    if (init.controllers.length === 0) throw new NoControllerError([])
    if (init.client == null && init.ca == null && init.tls == null) throw new TypeError('WorkerAgent needs `tls` (or `ca`, or a shared `client`)')
    this.init = init
    this.workerId = init.workerId
    this.ownClient = init.client == null
    this.client = init.client ?? httpsClient({
      ca: init.tls?.ca ?? init.ca!,
      cert: init.tls?.cert,
      key: init.tls?.key,
      token: init.token,
      timeoutMs: init.attemptTimeoutMs ?? C.DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS
    })
    this.interval = init.heartbeatIntervalMs ?? C.DEFAULT_HEARTBEAT_INTERVAL_MS
    this.quarantineMs = init.quarantineMs ?? C.DEFAULT_AGENT_QUARANTINE_MS
    this.threshold = init.failureThreshold ?? C.DEFAULT_AGENT_FAILURE_THRESHOLD
  }

  get state (): AgentState { return this._state }
  get incarnation (): number { return this._incarnation }
  /** The controller the worker is attached to, or null. */
  get controller (): { url: string, id: string | null } | null { return this.current }

  /**
   * Probes, attaches, and starts heartbeating. Rejects with
   * RegistrationRejectedError (permanent: the agent gives up) or
   * NoControllerError (none reachable right now: the agent keeps trying at
   * every heartbeat interval until stop(), emitting `attached` when it gets
   * through).
   */
  async start (): Promise<void> {
    if (this._state === 'stopped') throw new Error('agent was stopped')
    this.ranking = this.init.ranking ?? await this.probe()
    try {
      await this.attach('start')
    } finally {
      // Keep trying in the background unless the worker itself was rejected.
      if (this._state !== 'idle' || this.current != null) this.schedule()
    }
    const every = this.init.reprobeIntervalMs ?? C.DEFAULT_AGENT_REPROBE_MS
    if (every > 0) {
      this.reprobeTimer = setInterval(() => { context.with(ROOT_CONTEXT, () => { void this.exclusive(async () => { await this.reprobe() }) }) }, every)
      this.reprobeTimer.unref()
    }
  }

  /** Marks the worker draining: still listed, no new routes. */
  async drain (): Promise<void> {
    this._state = 'draining'
    const current = this.current
    if (current != null) {
      await this.traced('capmesh.agent.drain', { 'server.address': current.url }, async () => {
        await this.call(current.url, '/drain', { worker_id: this.workerId, incarnation: this._incarnation }, this.interval)
      }).catch(() => {})
    }
    this.emit('draining', { controller: this.current?.url ?? null })
  }

  /**
   * Stops heartbeating *without* deregistering: what a crashed worker looks
   * like to the mesh. For tests and the simulation harness.
   */
  abandon (): void {
    this._state = 'stopped'
    if (this.timer != null) clearTimeout(this.timer)
    if (this.reprobeTimer != null) clearInterval(this.reprobeTimer)
    if (this.ownClient) void this.client.close()
  }

  /**
   * Stops heartbeating and deregisters: at the controller it is attached to,
   * or, if that one cannot be reached, at the next one that knows the worker.
   * Any controller can remove a worker (it leaves a tombstone that wins over
   * the owner's entry), so a worker that shuts down while its controller is
   * down is not left listed until that controller comes back and expires it.
   */
  async stop (): Promise<void> {
    if (this._state === 'stopped') return
    this._state = 'stopped'
    if (this.timer != null) clearTimeout(this.timer)
    if (this.reprobeTimer != null) clearInterval(this.reprobeTimer)
    await this.busy?.catch(() => {})
    if (this.current != null) await this.deregisterSomewhere(this.current.url)
    if (this.ownClient) await this.client.close()
    this.emit('stopped')
  }

  private async deregisterSomewhere (attached: string): Promise<void> {
    await this.traced('capmesh.agent.deregister', {}, async () => { await this.deregisterAt(attached) })
  }

  private async deregisterAt (attached: string): Promise<void> {
    const timeoutMs = Math.min(this.interval, 5000)
    for (const url of [attached, ...this.order(attached).filter(u => u !== attached)]) {
      try {
        const res = await this.call(url, '/deregister', { worker_id: this.workerId }, timeoutMs)
        // Its own controller has removed it (or no longer knows it); another one has only if it knew it.
        if (res.status === 200 && (url === attached || ('known' in res.body && res.body.known))) return
      } catch {
        // Unreachable: the next one.
      }
    }
  }

  // ---------------------------------------------------------------- attach

  private async probe (): Promise<ProbeResult[]> {
    return await probeControllers(this.client, this.init.controllers, {
      probes: this.init.probes ?? C.DEFAULT_AGENT_PROBES,
      timeoutMs: Math.min(this.init.attemptTimeoutMs ?? C.DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS, 5000)
    })
  }

  /** Controllers to try, best first: affinity (if reachable), then by closeness; quarantined ones last. */
  private order (exclude?: string): string[] {
    const now = performance.now()
    const ranked = [...this.ranking]
    for (const url of this.init.controllers) if (!ranked.some(r => r.url === url)) ranked.push({ url, controllerId: null, rttMs: Infinity })
    const aff = this.init.affinity
    ranked.sort((a, b) => {
      const pa = aff != null && a.controllerId === aff && a.rttMs < Infinity ? 0 : 1
      const pb = aff != null && b.controllerId === aff && b.rttMs < Infinity ? 0 : 1
      return pa !== pb ? pa - pb : a.rttMs - b.rttMs
    })
    const urls = ranked.map(r => r.url).filter(u => u !== exclude)
    const open = urls.filter(u => (this.quarantine.get(u) ?? 0) <= now)
    const held = urls.filter(u => (this.quarantine.get(u) ?? 0) > now).sort((a, b) => this.quarantine.get(a)! - this.quarantine.get(b)!)
    // The excluded (just failed) controller goes last: it may be the only one left.
    return [...open, ...held, ...(exclude != null ? [exclude] : [])]
  }

  /** Runs `fn` as a span of the agent (recording its failure). */
  private async traced<T> (name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
    return await tracer.startActiveSpan(name, { attributes: { [C.SPAN_ATTR.workerId]: this.workerId, ...attributes } }, async span => {
      try {
        return await fn()
      } catch (err) {
        span.recordException(err as Error)
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
        throw err
      } finally {
        span.end()
      }
    })
  }

  private async attach (reason: AttachReason, exclude?: string): Promise<void> {
    await this.traced('capmesh.agent.attach', { 'capmesh.attach.reason': reason }, async () => { await this.attachNow(reason, exclude) })
  }

  private async attachNow (reason: AttachReason, exclude?: string): Promise<void> {
    const failures: Array<{ controller: string, error: string }> = []
    for (const url of this.order(exclude)) {
      // stop() may have been called while a failover was in flight: don't attach anywhere new.
      if (this._state === 'stopped') break
      try {
        const controllerId = await this.registerWithRetry(url)
        this.quarantine.delete(url)
        const from = this.current?.url
        const r = this.ranking.find(x => x.url === url)
        this.current = { url, id: controllerId ?? r?.controllerId ?? null }
        this.failures = 0
        this.detachedRounds = 0
        // Never resurrect a stopped agent (stop() deregisters at `current` once this returns).
        const now = this._state as AgentState
        if (now !== 'draining' && now !== 'stopped') this._state = 'attached'
        this.emit('attached', { controller: url, controllerId: this.current.id, rttMs: r != null && r.rttMs < Infinity ? r.rttMs : null, reason })
        if (reason === 'failover' && from != null) {
          this.counters.failovers++
          this.emit('failover', { from, to: url, incarnation: this._incarnation })
        }
        return
      } catch (err) {
        if (err instanceof RegistrationRejectedError) {
          this.counters.registrations.rejected++
          this.emit('error', err)
          throw err
        }
        this.counters.registrations.failed++
        this.quarantine.set(url, performance.now() + this.quarantineMs)
        failures.push({ controller: url, error: (err as Error).message })
      }
    }
    if ((this._state as AgentState) !== 'stopped') this._state = 'detached'
    this.current = null
    const err = new NoControllerError(failures)
    this.emit('error', err)
    throw err
  }

  /** Registers at `url` (retrying); resolves with the controller id it answered with, if any. */
  private async registerWithRetry (url: string): Promise<string | null> {
    const timeoutMs = this.init.attemptTimeoutMs ?? C.DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS
    return await pRetry(async () => {
      try {
        return await this.registerOnce(url, timeoutMs)
      } catch (err) {
        if (err instanceof RegistrationRejectedError) throw new AbortError(err)
        throw err
      }
    }, {
      retries: this.init.retries ?? C.DEFAULT_AGENT_RETRIES,
      minTimeout: this.init.retryBaseMs ?? C.DEFAULT_AGENT_RETRY_BASE_MS,
      factor: 2,
      randomize: true,
      shouldRetry: () => this._state !== 'stopped',
      onFailedAttempt: async ({ error, retriesLeft }) => {
        if (retriesLeft === 0) return
        this.counters.retries++
        // The controller said when to come back (429 rate limited, 503 overloaded): wait that long
        // (jittered, so that many workers told the same do not return at once), then back off as usual.
        const after = (error as ControllerUnavailableError).retryAfterMs
        if (after != null && this._state !== 'stopped') await sleep(jitter(after))
      }
    })
  }

  private async registerOnce (url: string, timeoutMs: number): Promise<string | null> {
    this._incarnation++
    const body: RegisterRequest = {
      worker_id: this.workerId,
      worker_url: this.init.workerUrl,
      capabilities: this.init.capabilities,
      incarnation: this._incarnation
    }
    const res = await this.call(url, '/register', body, timeoutMs)
    // 408 and 429 say "not now", not "never": retried like an unavailable controller, after its Retry-After.
    if (res.status === 408 || res.status === 429) throw new ControllerUnavailableError(url, `HTTP ${res.status} (try later)`, { retryAfterMs: res.retryAfterMs })
    if (res.status >= 400 && res.status < 500) throw new RegistrationRejectedError(url, res.status, res.body)
    const reply = res.body as Partial<RegisterReply>
    if (res.status !== 200 || reply.status !== 'registered') {
      throw new ControllerUnavailableError(url, `unexpected answer to /register (HTTP ${res.status}): ${JSON.stringify(res.body).slice(0, 200)}`)
    }
    if (Number.isInteger(reply.incarnation) && reply.incarnation! > this._incarnation) this._incarnation = reply.incarnation!
    this.counters.registrations.ok++
    this.emit('registered', { controller: url, incarnation: this._incarnation })
    return typeof reply.controller_id === 'string' ? reply.controller_id : null
  }

  /** One HTTPS call with the agent's error types: unavailable (network, TLS, 5xx) or timeout. */
  private async call<P extends keyof Endpoints> (url: string, path: P, body: Endpoints[P][0], timeoutMs: number): Promise<Answer<P>> {
    let res
    try {
      // With a shared client (a batch, a harness), this worker's own token rides on each request.
      const token = typeof this.init.token === 'function' ? this.init.token() : this.init.token
      res = await this.client.json<Endpoints[P][1] | ErrorBody>('POST', this.endpoint(url, path), body, { timeoutMs, token })
    } catch (err) {
      const e = err as Error & { code?: string }
      if (e.name === 'TimeoutError' || e.name === 'AbortError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT') {
        throw new ControllerTimeoutError(url, timeoutMs, { cause: err })
      }
      throw new ControllerUnavailableError(url, e.code != null ? `${e.code} ${e.message}` : e.message, { cause: err })
    }
    const retryAfterMs = retryAfterOf(res.headers['retry-after'])
    if (res.status >= 500) throw new ControllerUnavailableError(url, `HTTP ${res.status}`, { retryAfterMs })
    if (typeof res.body !== 'object' || res.body == null) throw new ControllerUnavailableError(url, `not a JSON answer (HTTP ${res.status})`)
    return { status: res.status, body: res.body, retryAfterMs }
  }

  private endpoint (base: string, path: string): string {
    return new URL(path, base).href
  }

  // ------------------------------------------------------------- heartbeat

  /**
   * Heartbeats at a fixed rate: the next one is due an interval after the
   * previous one *started*, so a slow answer does not stretch the period and
   * failover stays within failureThreshold × interval — unless the
   * controller said to come back later (Retry-After on a 429 or 503).
   */
  private schedule (delay = this.interval): void {
    if (this._state === 'stopped') return
    // Beats run in the root context: not in the trace of whatever called start().
    this.timer = setTimeout(() => context.with(ROOT_CONTEXT, () => {
      const started = performance.now()
      void this.exclusive(async () => { await this.beat() }).finally(() => {
        const now = performance.now()
        this.schedule(this.current == null ? this.detachedDelay() : Math.max(0, this.interval - (now - started), this.holdOffUntil - now))
      })
    }), delay)
    this.timer.unref()
  }

  /**
   * While detached, the next round of attach attempts waits one interval,
   * doubling per failed round up to 8 intervals, with jitter: when every
   * controller is overloaded, a thousand workers retrying in step every
   * interval is what keeps them so.
   */
  private detachedDelay (): number {
    const ceiling = this.interval * Math.min(8, 2 ** this.detachedRounds++)
    return ceiling / 2 + Math.random() * ceiling / 2
  }

  /** Runs `fn` unless another attach/heartbeat is in progress (they never overlap). */
  private async exclusive (fn: () => Promise<void>): Promise<void> {
    if (this.busy != null || this._state === 'stopped') return
    this.busy = fn().catch(() => {}).finally(() => { this.busy = null })
    await this.busy
  }

  private async beat (): Promise<void> {
    if (this.current == null) {
      // Detached: every controller failed last time; try them again, best first. No re-probe
      // here (that is 3 round trips to every controller per worker, the moment they are
      // struggling); the periodic re-probe fixes closeness once attached.
      await this.attach('retry').catch(() => {})
      return
    }
    const url = this.current.url
    // The incarnation tells a controller this worker has since left (failed over) that a heartbeat
    // it gets late is from the old attachment, not a move back (409 superseded instead of an adopt).
    const body: HeartbeatRequest = { worker_id: this.workerId, load: Math.max(0, Math.floor(this.init.load?.() ?? 0)), incarnation: this._incarnation }
    if (this._state === 'draining') body.status = 'draining'
    const t0 = performance.now()
    try {
      const res = await this.heartbeatCall(url, body)
      const error = 'error' in res.body ? res.body.error : null
      if (error === 'worker_not_registered' || (res.status === 409 && error === 'superseded')) {
        // The controller lost its state (restart with an empty data dir), or it holds a newer
        // attachment of this worker id elsewhere than here: register again right away.
        this.counters.reregistrations++
        await this.traced('capmesh.agent.attach', { 'capmesh.attach.reason': 'reregister' }, async () => await this.registerWithRetry(url))
        this.emit('reregistered', { controller: url, incarnation: this._incarnation })
        if (this._state === 'draining') await this.drain()
        return
      }
      if (res.status === 429) throw new ControllerUnavailableError(url, 'HTTP 429 (rate limited)', { retryAfterMs: res.retryAfterMs })
      if (res.status !== 200 || !('status' in res.body) || res.body.status !== 'acknowledged') throw new ControllerUnavailableError(url, `unexpected heartbeat answer (HTTP ${res.status})`)
      const rtt = performance.now() - t0
      this.counters.heartbeats.ok++
      this.counters.heartbeatRttMs.last = rtt
      this.counters.heartbeatRttMs.avg = this.counters.heartbeatRttMs.avg == null ? rtt : 0.8 * this.counters.heartbeatRttMs.avg + 0.2 * rtt
      this.failures = 0
    } catch (err) {
      this.counters.heartbeats.failed++
      this.failures++
      // Told to come back later (429, 503 overloaded): the next heartbeat waits at least that long, jittered.
      const after = err instanceof ControllerUnavailableError ? err.retryAfterMs : null
      if (after != null) this.holdOffUntil = performance.now() + jitter(after)
      this.emit('heartbeat_failed', { controller: url, error: err as Error, consecutive: this.failures })
      if (this.failures >= this.threshold) {
        this.quarantine.set(url, performance.now() + this.quarantineMs)
        await this.attach('failover', url).catch(() => {})
        if (this._state === 'draining' && this.current != null) await this.drain()
      }
    }
  }

  /**
   * Sends a heartbeat, or keeps waiting for the one still in flight there.
   * An answer later than one interval counts as a failure (so a hung
   * controller is left after failureThreshold intervals, like a dead one),
   * but the request is not aborted: it may finish within the per-attempt
   * timeout. Aborting would close its connection, and every worker of a
   * slow controller reconnecting with a new TLS handshake each beat is what
   * turns an overloaded controller (or host) into a dead one.
   */
  private async heartbeatCall (url: string, body: HeartbeatRequest): Promise<Answer<'/heartbeat'>> {
    let answer = this.inflight?.url === url ? this.inflight.answer : null
    if (answer == null) {
      const hardMs = Math.max(this.interval, this.init.attemptTimeoutMs ?? C.DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS)
      const sent = answer = this.call(url, '/heartbeat', body, hardMs)
      this.inflight = { url, answer: sent }
      sent.finally(() => { if (this.inflight?.answer === sent) this.inflight = null }).catch(() => {})
    }
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new ControllerTimeoutError(url, this.interval)) }, this.interval)
    })
    try {
      return await Promise.race([answer, late])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Moves to a clearly closer controller (never on jitter). */
  private async reprobe (): Promise<void> {
    if (this.current == null || this._state !== 'attached') return
    this.ranking = await this.probe()
    const cur = this.ranking.find(r => r.url === this.current!.url)
    const best = this.ranking[0]
    if (cur == null || best == null || best.url === cur.url || best.rttMs === Infinity) return
    if (this.init.affinity != null && cur.controllerId === this.init.affinity) return
    const margin = Math.max(this.init.hysteresisMinMs ?? C.DEFAULT_AGENT_HYSTERESIS_MIN_MS, (this.init.hysteresisRatio ?? C.DEFAULT_AGENT_HYSTERESIS_RATIO) * cur.rttMs)
    if (cur.rttMs - best.rttMs < margin) return
    try {
      await this.registerWithRetry(best.url)
      this.current = { url: best.url, id: best.controllerId }
      this.counters.moves++
      this.emit('attached', { controller: best.url, controllerId: best.controllerId, rttMs: best.rttMs, reason: 'move' })
    } catch {
      // Staying where we are is fine.
    }
  }
}

/** Creates an agent (not started). */
export function workerAgent (init: WorkerAgentInit): WorkerAgent {
  return new WorkerAgent(init)
}
