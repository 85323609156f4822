/**
 * What this controller knows about the health of workers it does not own:
 * the word of their owners. Each owner publishes a compact digest
 * periodically (every owned worker healthy except the listed exceptions);
 * any message from an owner also proves it is alive.
 *
 *   unknown ─(heard)─► alive ─(silent unhealthyAfter)─► silent ─(silent staleAfter)─► gone
 *      └──────────────(never heard within staleAfter)───────────────────────────────► gone
 *
 * A worker of an `alive` owner has the state its owner reports; of an
 * `unknown` owner it is `pending`; of a `silent` or `gone` owner it is
 * `unhealthy` (not routed to). What to do with a gone owner's entries is the
 * controller's decision (core.ts), not this table's.
 */
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { HealthState } from './liveness.ts'

export type OwnerStatus = 'unknown' | 'alive' | 'silent' | 'gone'

export interface OwnerDigest {
  epoch: string
  seq: number
  exceptions: Array<[string, 'u' | 'd' | 'p']>
  loads: Array<[string, number]>
  registry_hash: string
  self_preservation: boolean
}

export interface OwnerInfo {
  status: OwnerStatus
  /** Monotonic ms when first known. */
  since: number
  /** Monotonic ms of the last message, null if none. */
  lastHeard: number | null
  epoch: string | null
  seq: number
  exceptions: Map<string, HealthState>
  loads: Map<string, number>
  registryHash: string | null
  selfPreservation: boolean
  /**
   * Its exceptions come from a digest received since it last became alive.
   * False before the first digest and from the moment it goes silent: what
   * it said before a silence may be stale (a worker died meanwhile).
   */
  current: boolean
}

export interface OwnerTrackerInit {
  unhealthyAfterMs: number
  staleAfterMs: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
}

export interface OwnerTrackerEvents {
  /** An owner's status changed. Listeners must not block. */
  status: [owner: string, from: OwnerStatus, to: OwnerStatus]
  /** The reported state or load of one of an owner's workers changed. */
  worker: [owner: string, workerId: string]
  /** An owner's first digest arrived: the state of every one of its workers may have changed. */
  word: [owner: string]
}

const CODES: Record<'u' | 'd' | 'p', HealthState> = { u: 'unhealthy', d: 'draining', p: 'pending' }

export class OwnerTracker extends EventEmitter<OwnerTrackerEvents> {
  private readonly unhealthyAfterMs: number
  private readonly staleAfterMs: number
  private readonly now: () => number
  private readonly owners = new Map<string, OwnerInfo>()

  constructor (init: OwnerTrackerInit) {
    super()
    this.unhealthyAfterMs = init.unhealthyAfterMs
    this.staleAfterMs = init.staleAfterMs
    this.now = init.now ?? (() => performance.now())
  }

  get (owner: string): OwnerInfo | undefined { return this.owners.get(owner) }

  entries (): IterableIterator<[string, OwnerInfo]> { return this.owners.entries() }

  /** Starts tracking an owner seen in the registry (status `unknown` until heard from). */
  know (owner: string): OwnerInfo {
    let o = this.owners.get(owner)
    if (o == null) {
      o = { status: 'unknown', since: this.now(), lastHeard: null, epoch: null, seq: -1, exceptions: new Map(), loads: new Map(), registryHash: null, selfPreservation: false, current: false }
      this.owners.set(owner, o)
    }
    return o
  }

  /** Any valid message from `owner`: it is alive. */
  heard (owner: string): void {
    const o = this.know(owner)
    o.lastHeard = this.now()
    this.move(owner, o, 'alive')
  }

  /** Applies an owner's digest; emits `worker` for each worker whose reported state or load changed. */
  digest (owner: string, d: OwnerDigest): void {
    const o = this.know(owner)
    // Digests can arrive out of order over gossip; an older one of the same epoch is ignored.
    if (o.epoch === d.epoch && d.seq <= o.seq) return
    // Alive already (heard from) but without a current word: its workers wait for this one.
    const first = !o.current && o.status === 'alive'
    o.epoch = d.epoch
    o.seq = d.seq
    o.registryHash = d.registry_hash
    o.selfPreservation = d.self_preservation
    const exceptions = new Map<string, HealthState>(d.exceptions.map(([id, c]) => [id, CODES[c]]))
    const loads = new Map<string, number>(d.loads)
    const changed = new Set<string>()
    for (const [id, s] of exceptions) if (o.exceptions.get(id) !== s) changed.add(id)
    for (const id of o.exceptions.keys()) if (!exceptions.has(id)) changed.add(id)
    for (const [id, l] of loads) if (o.loads.get(id) !== l) changed.add(id)
    for (const id of o.loads.keys()) if (!loads.has(id)) changed.add(id)
    o.exceptions = exceptions
    o.loads = loads
    o.current = true
    // Becoming alive re-routes all its workers (`status`); so does a first word to an alive owner.
    this.heard(owner)
    if (first) this.emit('word', owner)
    else for (const id of changed) this.emit('worker', owner, id)
  }

  /** The state a worker of `owner` should be routed by. */
  stateOf (owner: string, workerId: string): HealthState {
    const o = this.owners.get(owner)
    if (o == null || o.status === 'unknown') return 'pending'
    if (o.status !== 'alive') return 'unhealthy'
    // Heard from (a sync, a registry update) but no digest since it was last silent or unknown
    // (this controller just started, or a partition just healed): the owner is alive, but which
    // of its workers are is not known. Not `healthy`: a worker that died meanwhile would be
    // routed to until the digest came.
    if (!o.current) return 'pending'
    return o.exceptions.get(workerId) ?? 'healthy'
  }

  loadOf (owner: string, workerId: string): number {
    return this.owners.get(owner)?.loads.get(workerId) ?? 0
  }

  /** Applies the silence timeouts. */
  sweep (): void {
    const now = this.now()
    for (const [owner, o] of this.owners) {
      const silent = now - (o.lastHeard ?? o.since)
      if (o.status === 'alive' && silent >= this.unhealthyAfterMs) this.move(owner, o, 'silent')
      if ((o.status === 'silent' || o.status === 'unknown') && silent >= this.staleAfterMs) this.move(owner, o, 'gone')
    }
  }

  forget (owner: string): void {
    this.owners.delete(owner)
  }

  private move (owner: string, o: OwnerInfo, to: OwnerStatus): void {
    if (o.status === to) return
    const from = o.status
    o.status = to
    if (to !== 'alive') o.current = false
    this.emit('status', owner, from, to)
  }
}
