/**
 * When this controller runs anti-entropy exchanges (sync.ts) and with whom:
 * on a new connection and on a hint through a queue worked off one exchange
 * at a time, the periodic one with a peer that seems to differ, and the
 * answers to peers' exchanges (BUSY while in another).
 */
import type { Stream } from '@libp2p/interface'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import {
  SYNC_APPLY_MS_PER_MIB, SYNC_BEHIND_AFTER_FAILURES, SYNC_BUSY_PAUSE_MS, SYNC_BUSY_WINDOW_MS, SYNC_CHUNK_BYTES, SYNC_FAILURE_BACKOFF_MAX_MS,
  SYNC_FAILURE_BACKOFF_MS, SYNC_FAILURE_LOG_INTERVAL_MS, SYNC_IDLE_EVERY, SYNC_MAX_BUSY_RETRIES
} from '../constants.ts'
import type { NetworkFaults } from './faults.ts'
import type { PeerTable } from './peers.ts'
import {
  classify, PeerBusyError, refuseSync, syncInitiator, SyncError, syncResponder, type SyncFailureReason, type SyncOptions,
  type SyncReplica, type SyncResult
} from './sync.ts'

/** A peer whose exchanges keep failing: this controller cannot catch up with it (or it with this one). */
export interface BehindPeer {
  peerId: string
  controllerId: string | null
  /** Failed exchanges in a row. */
  failures: number
  reason: SyncFailureReason
  error: string
  /** Wall-clock ms of the last failure, and of the first of this run of failures. */
  at: number
  since: number
}

export interface ExchangesInit {
  /** This controller's id (sent in HELLO). */
  controllerId: string
  /** The replica exchanges read from and apply to. */
  replica: SyncReplica
  peers: PeerTable
  log: Logger
  /** This controller's peer id (throws while the node is not started). */
  peerId: () => string
  /** Opens a sync protocol stream to a peer. */
  dial: (peerId: string, signal: AbortSignal) => Promise<Stream>
  /** This controller's registry hash (MeshInit.registryHash). @default every peer always looks different */
  registryHash?: () => string
  /** A peer's registry hash as last known, and when it was learnt (MeshInit.peerHash). @default none known */
  peerHash?: (peerId: string) => { hash: string, at: number } | null
  /** True while links to a peer are cut (simulated partitions). */
  blocked: (peerId: string) => boolean
  /** Simulated faults: every exchange is delayed by their delay. @default none */
  faults?: NetworkFaults | null
  /** Largest delta accepted from a peer (bytes). */
  maxSyncBytes: number
  /** Give up an exchange when a read or write makes no progress for this long (ms). */
  syncTimeoutMs: number
  /** An exchange completed, either side. Called synchronously: must not block. */
  onSync: (result: SyncResult & { peerId: string, ms: number }) => void
  /** An exchange failed (not a busy peer), either side. Must not block. */
  onSyncFailed?: (peerId: string, reason: SyncFailureReason) => void
}

/** One exchange in progress: when it last moved bytes (monotonic ms), and whether it is applying the peer's delta. */
interface ExchangeState {
  progress: number
  applying: boolean
}

export class Exchanges {
  private readonly init: ExchangesInit
  private readonly peers: PeerTable
  private readonly log: Logger
  private readonly syncing = new Set<string>()
  /** The exchanges in progress, either side: when each last moved bytes (monotonic ms), and whether it is applying a delta. */
  private readonly exchanges = new Set<ExchangeState>()
  /** Failure warnings already logged, by `peer reason`: when, and how many were held back since. */
  private readonly logged = new Map<string, { at: number, held: number }>()
  /** Re-runs the wanted queue when the youngest exchange stops counting as busy. */
  private busyWaitTimer: NodeJS.Timeout | null = null
  /** Peers to sync with once this controller is free, with the BUSY answers each has given. */
  private readonly wanted = new Map<string, number>()
  private wantedTimer: NodeJS.Timeout | null = null
  private syncTicks = 0
  /** This controller's registry hash at the previous periodic tick. */
  private hashAtLastTick: string | null = null
  private stopped = false

  constructor (init: ExchangesInit) {
    this.init = init
    this.peers = init.peers
    this.log = init.log
  }

  private options (exchange: ExchangeState, peerId: string): SyncOptions {
    return {
      onPeer: controllerId => { this.peers.state(peerId).controllerId = controllerId },
      controllerId: this.init.controllerId,
      maxDeltaBytes: this.init.maxSyncBytes,
      chunkBytes: SYNC_CHUNK_BYTES,
      timeoutMs: this.init.syncTimeoutMs,
      applyMsPerMiB: SYNC_APPLY_MS_PER_MIB,
      onProgress: () => { exchange.progress = performance.now() },
      onApplying: applying => {
        exchange.applying = applying
        exchange.progress = performance.now()
      }
    }
  }

  private get peerId (): string { return this.init.peerId() }

  stop (): void {
    this.stopped = true
    if (this.wantedTimer != null) clearTimeout(this.wantedTimer)
    if (this.busyWaitTimer != null) clearTimeout(this.busyWaitTimer)
    this.wanted.clear()
  }

  /**
   * Runs anti-entropy with one peer now. Resolves to null if it could not
   * (including when the peer answered BUSY). A `background` exchange (on
   * connect, on a hint, periodic) is skipped while this controller is in
   * another exchange: overlapping exchanges carry deltas computed against
   * soon-stale state vectors, so after a heal each link would pull the same
   * large delta again. Connect and hint exchanges are queued (`want`) and
   * run as soon as this controller is free.
   */
  async syncWith (peerId: string, opts: { background?: boolean } = {}): Promise<SyncResult | null> {
    if (this.syncing.has(peerId) || this.stopped || this.init.blocked(peerId)) return null
    if (opts.background === true && (this.busy || this.backingOff(peerId))) return null
    this.syncing.add(peerId)
    const exchange = this.begin()
    const t0 = performance.now()
    let stream: Stream | undefined
    try {
      await this.init.faults?.exchange()
      try {
        stream = await this.init.dial(peerId, AbortSignal.timeout(this.init.syncTimeoutMs))
      } catch (err) {
        throw new SyncError('dial', `cannot open a sync stream: ${(err as Error).message}`, { cause: err })
      }
      const res = await syncInitiator(stream, this.init.replica, this.options(exchange, peerId))
      this.wanted.delete(peerId)
      this.recordSync(peerId, res, performance.now() - t0)
      return res
    } catch (err) {
      if (err instanceof PeerBusyError) {
        // A busy peer with the smaller id calls back once free (see respond); ask another meanwhile.
        if (peerId < this.peerId) {
          this.wanted.delete(peerId)
          return null
        }
        // Otherwise ask again shortly, a bounded number of times; the periodic exchange covers the rest.
        const busy = this.wanted.get(peerId)
        if (busy != null && busy < SYNC_MAX_BUSY_RETRIES) this.wanted.set(peerId, busy + 1)
        else this.wanted.delete(peerId)
        return null
      }
      this.wanted.delete(peerId)
      // A failed exchange must not leave its stream open: libp2p caps streams per protocol and connection.
      stream?.abort(err as Error)
      this.failed(peerId, classify(err))
      return null
    } finally {
      this.syncing.delete(peerId)
      this.end(exchange)
    }
  }

  /**
   * True while this controller takes part in a sync exchange, either side,
   * that is applying a delta or moved bytes less than SYNC_BUSY_WINDOW_MS
   * ago: an exchange a peer stalls (up to the sync timeout) must not hold off
   * everyone else's, but one applying a whole registry (seconds) is not
   * stalled, and a second exchange meanwhile would carry the same delta
   * again (computed against the state vector of a half-applied one).
   */
  get busy (): boolean { return this.busyForMs() > 0 }

  /** Connected peers whose exchanges keep failing (SYNC_BEHIND_AFTER_FAILURES in a row, or one for size). */
  behind (): BehindPeer[] {
    const out: BehindPeer[] = []
    for (const [id, s] of this.peers) {
      const f = s.syncFailure
      if (f == null || !this.peers.connected.has(id)) continue
      if (f.count < SYNC_BEHIND_AFTER_FAILURES && f.reason !== 'too_large') continue
      out.push({ peerId: id, controllerId: s.controllerId, failures: f.count, reason: f.reason, error: f.error, at: f.at, since: f.since })
    }
    return out
  }

  /** True while exchanges with `peerId` are held back after failures. */
  private backingOff (peerId: string): boolean {
    const f = this.peers.get(peerId)?.syncFailure
    return f != null && performance.now() < f.retryAt
  }

  /**
   * Records a failed exchange: back-off doubling per failure in a row (a
   * size failure waits the longest at once: it does not heal by retrying),
   * a warning per distinct (peer, reason) at most once per
   * SYNC_FAILURE_LOG_INTERVAL_MS, and the failure event.
   */
  private failed (peerId: string, err: Error): void {
    if (this.stopped || err instanceof PeerBusyError) return
    const e = err instanceof SyncError ? err : new SyncError('internal', err.message)
    const s = this.peers.state(peerId)
    const now = performance.now()
    const count = (s.syncFailure?.count ?? 0) + 1
    const wait = e.reason === 'too_large' ? SYNC_FAILURE_BACKOFF_MAX_MS : Math.min(SYNC_FAILURE_BACKOFF_MAX_MS, SYNC_FAILURE_BACKOFF_MS * 2 ** (count - 1))
    s.syncFailure = { count, reason: e.reason, error: e.message, at: Date.now(), since: s.syncFailure?.since ?? Date.now(), retryAt: now + wait * (0.75 + Math.random() / 2) }
    const key = `${peerId} ${e.reason}`
    const l = this.logged.get(key)
    if (l == null || now - l.at >= SYNC_FAILURE_LOG_INTERVAL_MS) {
      this.logged.set(key, { at: now, held: 0 })
      this.log.warn({ peer: peerId, controller: s.controllerId, reason: e.reason, err: e.message, failures: count, held_back: l?.held ?? 0 }, `sync exchange failed (${e.reason}) with ${s.controllerId ?? peerId}: ${e.message}`)
    } else {
      l.held++
    }
    this.init.onSyncFailed?.(peerId, e.reason)
  }

  /** Exchanges queued or in progress (a mesh that just formed or healed works through one per new link). */
  get backlog (): number { return this.wanted.size + this.exchanges.size }

  private busyForMs (): number {
    const now = performance.now()
    let left = 0
    // An apply in progress counts as fresh progress (its end runs the queue).
    for (const e of this.exchanges) left = Math.max(left, (e.applying ? now : e.progress) + SYNC_BUSY_WINDOW_MS - now)
    return left
  }

  private begin (): ExchangeState {
    const e = { progress: performance.now(), applying: false }
    this.exchanges.add(e)
    return e
  }

  private end (e: ExchangeState): void {
    this.exchanges.delete(e)
    if (this.busyWaitTimer != null) {
      clearTimeout(this.busyWaitTimer)
      this.busyWaitTimer = null
    }
    this.runWanted()
  }

  /**
   * A new connection to `peerId`: exchanges with it may start again at once
   * (a peer that restarted, perhaps with another configuration, deserves a
   * new try). Its run of failures still counts towards "behind".
   */
  connected (peerId: string): void {
    const f = this.peers.get(peerId)?.syncFailure
    if (f != null) f.retryAt = 0
  }

  /** Syncs with `peerId` as soon as this controller is free. */
  want (peerId: string): void {
    if (!this.wanted.has(peerId)) this.wanted.set(peerId, 0)
    this.runWanted()
  }

  /** Starts the next wanted exchange if free; after a BUSY answer, after a short random pause. */
  private runWanted (): void {
    if (this.stopped || this.wantedTimer != null || this.busyWaitTimer != null || this.wanted.size === 0) return
    const busyFor = this.busyForMs()
    if (busyFor > 0) {
      // Normally an exchange ends first (end() runs the queue); a stalled one stops counting after the window.
      this.busyWaitTimer = setTimeout(() => {
        this.busyWaitTimer = null
        this.runWanted()
      }, busyFor + 1)
      this.busyWaitTimer.unref()
      return
    }
    const connected = this.peers.connected
    const mine = this.init.registryHash?.()
    for (const p of this.wanted.keys()) {
      // Nothing to exchange with a peer that said, on this connection, that it holds what this controller holds.
      const s = this.peers.get(p)
      const theirs = this.init.peerHash?.(p)
      const agrees = s != null && mine != null && theirs != null && theirs.hash === mine && theirs.at >= s.connectedAt
      // A peer in back-off after failures is left to the periodic exchange once the back-off is over.
      if (!connected.has(p) || this.init.blocked(p) || agrees || this.backingOff(p)) this.wanted.delete(p)
    }
    // A peer whose exchange with this controller is still open (stalled past the busy window) waits for its end.
    const next = [...this.wanted].filter(([p]) => !this.syncing.has(p)).sort((a, b) => a[1] - b[1])[0]
    if (next == null) return
    const [peer, busyAnswers] = next
    if (busyAnswers === 0) {
      void this.syncWith(peer, { background: true })
      return
    }
    // Random pauses break the tie between two controllers that keep finding each other busy.
    this.wantedTimer = setTimeout(() => {
      this.wantedTimer = null
      if (!this.busy && this.wanted.has(peer)) {
        void this.syncWith(peer, { background: true })
        // Cut off or in back-off since the pause began, it started nothing (no end() to run the queue): go on with the rest.
        if (!this.syncing.has(peer)) this.runWanted()
      } else {
        this.runWanted()
      }
    }, SYNC_BUSY_PAUSE_MS * (0.5 + Math.random()) * busyAnswers)
    this.wantedTimer.unref()
  }

  /** Answers an exchange `peerId` opened on `stream`. */
  respond (stream: Stream, peerId: string): void {
    const t0 = performance.now()
    if (this.busy) {
      // Even a refusal reads the HELLO first: garbage is logged and aborted as in an exchange.
      // The smaller peer id of the two takes the exchange over: it calls back once free, and the
      // other stops asking. Without that, a controller refused by every peer of the other side
      // after a heal kept polling them; with both calling back, two would refuse each other for ever.
      refuseSync(stream, this.init.replica, this.options({ progress: 0, applying: false }, peerId)).then(() => {
        if (this.peerId < peerId) this.want(peerId)
      }, (err: Error) => { this.syncAborted(stream, peerId, err) })
      return
    }
    const exchange = this.begin()
    const delay = this.init.faults?.exchange() ?? Promise.resolve()
    delay.then(async () => await syncResponder(stream, this.init.replica, this.options(exchange, peerId))).then(res => {
      this.wanted.delete(peerId)
      this.recordSync(peerId, res, performance.now() - t0)
    }, (err: Error) => { this.syncAborted(stream, peerId, err) }).finally(() => { this.end(exchange) })
  }

  /** An answered exchange failed: abort the stream (a no-op if it ended), record the failure. */
  private syncAborted (stream: Stream, peerId: string, err: Error): void {
    stream.abort(err)
    this.failed(peerId, classify(err))
  }

  private recordSync (peerId: string, res: SyncResult, ms: number): void {
    const s = this.peers.state(peerId)
    s.syncFailure = null
    s.controllerId = res.peerController
    s.lastSyncAt = Date.now()
    // Each side now holds what the other had (membership records that on the sync event).
    s.lastSyncMs = ms
    s.inSync = res.wasInSync
    const r = (v: number): number => Math.round(v)
    this.log.debug({ peer: peerId, controller: res.peerController, ms: r(ms), encode_ms: r(res.phases.encodeMs), send_ms: r(res.phases.sendMs), receive_ms: r(res.phases.receiveMs), apply_ms: r(res.phases.applyMs), bytes_sent: res.bytesSent, bytes_received: res.bytesReceived },
      `sync exchange with ${res.peerController} done in ${r(ms)} ms`)
    this.init.onSync({ ...res, peerId, ms })
  }

  /** The periodic exchange: with a peer that seems to differ, or now and then with any (IDLE_SYNC_EVERY). */
  async syncRandomPeer (): Promise<void> {
    const candidates = [...this.peers.connected].filter(p => this.peers.get(p)?.controllerId != null || !this.peers.loggedBadPeers.has(p))
    if (candidates.length === 0) return
    const mine = this.init.registryHash?.()
    // While this registry changes, gossip is busy delivering and the peers' hashes are moving targets.
    const settled = mine == null || mine === this.hashAtLastTick
    this.hashAtLastTick = mine ?? null
    const differ = !settled ? [] : mine == null ? candidates : candidates.filter(p => this.init.peerHash?.(p)?.hash !== mine)
    const pool = differ.length > 0 ? differ : ++this.syncTicks % SYNC_IDLE_EVERY === 0 ? candidates : []
    if (pool.length === 0) return
    await this.syncWith(pool[Math.floor(Math.random() * pool.length)], { background: true })
  }
}
