/**
 * Worker health, kept beside the registry and never written into it
 * (DESIGN.md: every CRDT overwrite stays in the document for ever).
 *
 *   register ─► healthy ─(no heartbeat for unhealthyAfter)─► unhealthy ─(staleAfter)─► expired
 *                  ▲  └─(worker says draining)─► draining ─(staleAfter)─► expired
 *   restored/imported ─► pending ─(heartbeat)─► healthy
 *                          └─(no heartbeat within staleAfter)─► expired
 *
 * `expired` is not a state: the worker is reported through the `expire`
 * event and the controller removes it from the registry.
 * Times are monotonic (performance.now), so a wall-clock jump evicts no one.
 */
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import {
  DEFAULT_SELF_PRESERVATION_MAX_WINDOWS, DEFAULT_SELF_PRESERVATION_MIN_WORKERS, DEFAULT_SELF_PRESERVATION_WORKER_RATIO,
  DEFAULT_STALE_AFTER_MS, DEFAULT_UNHEALTHY_AFTER_MS
} from '../constants.ts'

import type { HealthState } from '../wire/capability.ts'

export type { HealthState }

export interface WorkerHealth {
  state: HealthState
  /** Monotonic ms of the last heartbeat (or of tracking start for a new entry). */
  lastSeen: number
  /** Wall-clock ms of the last heartbeat, null if none yet (for display only). */
  lastHeartbeatAt: number | null
  /** In-flight requests the worker reported with its last heartbeat. */
  load: number
}

export interface LivenessInit {
  /** No heartbeat for this long → unhealthy. @default 60000 */
  unhealthyAfterMs?: number
  /** No heartbeat for this long → expired. @default 120000 */
  staleAfterMs?: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
  /** Wall clock (ms), display only. @default Date.now */
  wallNow?: () => number
  /** Silent fraction of tracked workers above which nobody is evicted (self-preservation). @default 0.15 */
  selfPreservationRatio?: number
  /** Fewest tracked workers for self-preservation to apply. @default 5 */
  selfPreservationMinWorkers?: number
  /** Longest self-preservation (ms) before evicting anyway. @default 5 × staleAfterMs */
  selfPreservationMaxMs?: number
}

export interface LivenessEvents {
  /** A worker moved between states. Listeners must not block. */
  state: [workerId: string, from: HealthState, to: HealthState]
  /** A worker reported new load. */
  load: [workerId: string, load: number]
  /** A worker went silent for longer than the stale window. */
  expire: [workerId: string, last: WorkerHealth]
  /** Self-preservation switched on (true) or off (false). */
  selfPreservation: [on: boolean, silent: number, tracked: number]
}

export interface HeartbeatInput {
  /** In-flight requests on the worker. */
  load?: number
  /** The worker is shutting down: keep it listed, stop routing to it. */
  draining?: boolean
}

export class Liveness extends EventEmitter<LivenessEvents> {
  readonly unhealthyAfterMs: number
  readonly staleAfterMs: number
  private readonly now: () => number
  private readonly wallNow: () => number
  private readonly table = new Map<string, WorkerHealth>()
  private readonly spRatio: number
  private readonly spMinWorkers: number
  private readonly spMaxMs: number
  /** Monotonic ms since self-preservation is on, null when off. */
  private spSince: number | null = null

  constructor (init: LivenessInit = {}) {
    super()
    this.unhealthyAfterMs = init.unhealthyAfterMs ?? DEFAULT_UNHEALTHY_AFTER_MS
    this.staleAfterMs = init.staleAfterMs ?? DEFAULT_STALE_AFTER_MS
    this.now = init.now ?? (() => performance.now())
    this.wallNow = init.wallNow ?? Date.now
    this.spRatio = init.selfPreservationRatio ?? DEFAULT_SELF_PRESERVATION_WORKER_RATIO
    this.spMinWorkers = init.selfPreservationMinWorkers ?? DEFAULT_SELF_PRESERVATION_MIN_WORKERS
    this.spMaxMs = init.selfPreservationMaxMs ?? DEFAULT_SELF_PRESERVATION_MAX_WINDOWS * this.staleAfterMs
  }

  /** True while too many workers are silent at once to believe they all died: nobody is evicted. */
  get selfPreservation (): boolean { return this.spSince != null }

  get size (): number { return this.table.size }

  get (workerId: string): WorkerHealth | undefined { return this.table.get(workerId) }

  entries (): IterableIterator<[string, WorkerHealth]> { return this.table.entries() }

  /**
   * Starts tracking a worker. `healthy` for a fresh registration (it counts
   * as the first heartbeat), `pending` for one restored or learnt elsewhere.
   * Re-tracking a known worker as healthy refreshes it; as pending keeps it.
   */
  track (workerId: string, state: 'healthy' | 'pending'): void {
    const cur = this.table.get(workerId)
    if (cur != null && state === 'pending') return
    const now = this.now()
    const next: WorkerHealth = {
      state,
      lastSeen: now,
      lastHeartbeatAt: state === 'healthy' ? this.wallNow() : (cur?.lastHeartbeatAt ?? null),
      load: cur?.load ?? 0
    }
    this.table.set(workerId, next)
    if (cur != null && cur.state !== state) this.emit('state', workerId, cur.state, state)
  }

  /**
   * Puts back a worker's record as it was: its entry was removed and put
   * back within one turn (a peer dropped this controller's segment, which
   * republishes it), and a dead worker must not come back as `pending`.
   */
  restore (workerId: string, health: WorkerHealth): void {
    if (this.table.has(workerId)) return
    this.table.set(workerId, health)
  }

  untrack (workerId: string): void {
    this.table.delete(workerId)
  }

  /** Records a heartbeat. Returns false for an unknown worker. */
  heartbeat (workerId: string, input: HeartbeatInput = {}): boolean {
    const h = this.table.get(workerId)
    if (h == null) return false
    h.lastSeen = this.now()
    h.lastHeartbeatAt = this.wallNow()
    if (input.load != null && input.load !== h.load) {
      h.load = input.load
      this.emit('load', workerId, h.load)
    }
    // Draining sticks until the worker says otherwise (draining: false).
    const draining = input.draining ?? h.state === 'draining'
    this.move(workerId, h, draining ? 'draining' : 'healthy')
    return true
  }

  /** Marks a worker draining (listed, not routed to). Returns false for an unknown worker. */
  drain (workerId: string): boolean {
    const h = this.table.get(workerId)
    if (h == null) return false
    this.move(workerId, h, 'draining')
    return true
  }

  /**
   * Applies the timeouts. Called on a timer by the controller; cheap enough
   * to run every few hundred ms with 100k workers (one pass, no allocation
   * unless something changes).
   */
  sweep (): void {
    const now = this.now()
    const expired: Array<[string, WorkerHealth]> = []
    // Pending entries (restored, imported) were never confirmed: they don't count as contact lost.
    let silentCount = 0
    let tracked = 0
    for (const [id, h] of this.table) {
      const silent = now - h.lastSeen
      if (h.state !== 'pending') {
        tracked++
        if (silent >= this.unhealthyAfterMs) silentCount++
      }
      if (silent >= this.staleAfterMs) expired.push([id, h])
      else if (h.state === 'healthy' && silent >= this.unhealthyAfterMs) this.move(id, h, 'unhealthy')
    }
    // Many workers silent at once more likely means this controller is cut off than that they all died.
    const partitioned = tracked >= this.spMinWorkers && silentCount / tracked > this.spRatio
    if (partitioned && this.spSince == null) {
      this.spSince = now
      this.emit('selfPreservation', true, silentCount, tracked)
    } else if (!partitioned && this.spSince != null) {
      this.spSince = null
      this.emit('selfPreservation', false, silentCount, tracked)
    }
    const preserve = this.spSince != null && now - this.spSince < this.spMaxMs
    for (const [id, h] of expired) {
      if (preserve && h.state !== 'pending') {
        if (h.state === 'healthy') this.move(id, h, 'unhealthy')
        continue
      }
      this.table.delete(id)
      this.emit('expire', id, h)
    }
  }

  /** Count of workers per state. */
  counts (): Record<HealthState, number> {
    const c: Record<HealthState, number> = { healthy: 0, unhealthy: 0, draining: 0, pending: 0 }
    for (const h of this.table.values()) c[h.state]++
    return c
  }

  private move (workerId: string, h: WorkerHealth, to: HealthState): void {
    if (h.state === to) return
    const from = h.state
    h.state = to
    this.emit('state', workerId, from, to)
  }
}
