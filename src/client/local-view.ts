/**
 * A client's own copy of what one controller routes by, kept from its watch
 * stream (a snapshot, then events), answering route queries with the
 * controller's own selection code (routing/'s Router: the same filters,
 * strategies, affinity and idempotency keys as `/route`).
 *
 * Empty-push protection: the stream's latest word (`truth`) and what routes
 * are chosen from (`applied`, in the Router) differ only by *held* changes:
 * a change that would leave some capability with fewer than `holdBelow`
 * routable (healthy or pending) workers is not applied; the client keeps
 * routing to the workers it had, until
 *   - a later event makes the change harmless (the worker came back, others
 *     joined),
 *   - a second controller confirms the capability has fewer workers than
 *     that too (`confirm()`), or
 *   - a full snapshot replaces everything.
 * A controller cut off from the others (or restarting with an empty
 * registry) would otherwise empty every client's routes at once.
 */
import { EventEmitter } from 'node:events'
import { ValidationError } from '../errors.ts'
import { Router, type RoutableWorker } from '../routing/index.ts'
import type { HealthState, RouteQuery, RouteResult, WatchController, WatchEvent, WatchSnapshot, WorkerView } from '../wire/index.ts'

export interface LocalViewInit {
  /** Hold a change that would leave a capability with fewer routable workers than this; 0: hold nothing. */
  holdBelow: number
  /** The capabilities the stream carries (route() refuses others); null: all. */
  capabilities: ReadonlySet<string> | null
}

/** A capability as routes are asked for it. */
export interface CapabilityKey { verb: string, name: string }

export interface LocalViewEvents {
  /** A worker's change is held: applying it would leave these capabilities with fewer than holdBelow routable workers. */
  hold: [info: { workerId: string, capabilities: CapabilityKey[] }]
  /** A held change was applied: a later event made it harmless, a controller confirmed it, or a snapshot came. */
  release: [info: { workerId: string, reason: 'restored' | 'confirmed' | 'snapshot' }]
}

const ROUTABLE = new Set<HealthState>(['healthy', 'pending'])
const keyOf = (verb: string, name: string): string => `${verb}\u0000${name}`

function routable (w: WorkerView): RoutableWorker {
  return { worker_id: w.worker_id, worker_url: w.worker_url, capabilities: w.capabilities, owner: w.controller_id, incarnation: w.incarnation }
}

/** The capabilities (verb + name, each once) `w` offers. */
function keysOf (w: WorkerView): Map<string, CapabilityKey> {
  const keys = new Map<string, CapabilityKey>()
  for (const c of w.capabilities) keys.set(keyOf(c.verb, c.name), { verb: c.verb, name: c.name })
  return keys
}

export class LocalView extends EventEmitter<LocalViewEvents> {
  private readonly holdBelow: number
  private readonly capabilities: ReadonlySet<string> | null
  private router: Router | null = null
  /** What the stream says now. */
  private readonly truth = new Map<string, WorkerView>()
  /** What routes are chosen from (truth minus held changes). */
  private readonly applied = new Map<string, WorkerView>()
  /** Held changes: worker id → what the stream says of it (null: removed). */
  private readonly held = new Map<string, WorkerView | null>()
  /** Capabilities a controller confirmed as (nearly) empty while changes to them are held. */
  private readonly confirmed = new Set<string>()
  private readonly controllerMap = new Map<string, WatchController>()
  private _cursor: { epoch: string, index: number } | null = null
  private _controllerId: string | null = null

  constructor (init: LocalViewInit) {
    super()
    this.holdBelow = Math.max(0, init.holdBelow)
    this.capabilities = init.capabilities
  }

  /** The last event applied (what a reconnect resumes from); null before the first snapshot. */
  get cursor (): { epoch: string, index: number } | null { return this._cursor }

  /** The controller whose stream this view follows (its workers are preferred, as its /route does). */
  get controllerId (): string | null { return this._controllerId }

  /** True once a snapshot arrived. */
  get ready (): boolean { return this.router != null }

  /** Workers routes are chosen from. */
  workers (): WorkerView[] { return [...this.applied.values()] }

  /** The controllers the stream told of. */
  controllers (): WatchController[] { return [...this.controllerMap.values()] }

  /** Held changes: the workers, and the capabilities each would leave short. */
  heldChanges (): Array<{ workerId: string, capabilities: CapabilityKey[] }> {
    return [...this.held.keys()].map(id => ({ workerId: id, capabilities: this.shortfall(id) }))
  }

  /** Every capability some held change would leave short (each once). */
  heldCapabilities (): CapabilityKey[] {
    const out = new Map<string, CapabilityKey>()
    for (const id of this.held.keys()) for (const k of this.shortfall(id)) out.set(keyOf(k.verb, k.name), k)
    return [...out.values()]
  }

  /** Picks a worker as the controller's /route would (throws NoWorkerError / NoHealthyWorkerError the same way). */
  route (q: RouteQuery): RouteResult {
    if (this.router == null) throw new ValidationError('the route client has no view yet (start() resolves once it has)', [{ field: 'client', message: 'not started' }])
    if (this.capabilities != null && !this.capabilities.has(q.capability)) {
      throw new ValidationError(`this route client watches ${[...this.capabilities].join(', ')}, not ${q.capability}`, [{ field: 'capability', message: 'not watched by this route client' }])
    }
    return this.router.route(q)
  }

  /** Replaces everything with `s` (which also releases every held change). */
  snapshot (s: WatchSnapshot): void {
    const released = [...this.held.keys()]
    this.truth.clear()
    this.applied.clear()
    this.held.clear()
    this.confirmed.clear()
    this.router = new Router({ controllerId: s.controller_id })
    for (const w of s.workers) {
      this.truth.set(w.worker_id, w)
      this.applied.set(w.worker_id, w)
      this.router.upsert(routable(w), w.state, w.load)
    }
    this.controllerMap.clear()
    for (const c of s.controllers) this.controllerMap.set(c.controller_id, c)
    this._controllerId = s.controller_id
    this._cursor = { epoch: s.epoch, index: s.index }
    for (const id of released) this.emit('release', { workerId: id, reason: 'snapshot' })
  }

  /** One event of the stream, in order. */
  apply (e: WatchEvent): void {
    if (this._cursor != null) this._cursor = { epoch: this._cursor.epoch, index: e.index }
    switch (e.event) {
      case 'worker_added':
      case 'worker_updated':
        this.truth.set(e.data.worker.worker_id, e.data.worker)
        this.settle(e.data.worker.worker_id)
        break
      case 'worker_removed':
        this.truth.delete(e.data.worker_id)
        this.settle(e.data.worker_id)
        break
      case 'worker_state': {
        const w = this.truth.get(e.data.worker_id)
        if (w == null) break
        this.truth.set(w.worker_id, { ...w, state: e.data.to, load: e.data.load })
        this.settle(w.worker_id)
        break
      }
      case 'controller_status': {
        const c = this.controllerMap.get(e.data.controller_id)
        this.controllerMap.set(e.data.controller_id, { controller_id: e.data.controller_id, status: e.data.to, self_preservation: c?.self_preservation ?? false, self: false })
        break
      }
      case 'self_preservation': {
        const c = this.controllerMap.get(e.data.controller_id)
        if (c != null) this.controllerMap.set(c.controller_id, { ...c, self_preservation: e.data.on })
        break
      }
    }
  }

  /**
   * What a second controller says of a capability some held change would
   * leave short: `routable` workers offer it there. If that is below
   * holdBelow too, the changes held for it are applied. Returns whether.
   */
  confirm (key: CapabilityKey, routableThere: number): boolean {
    if (routableThere >= this.holdBelow) return false
    this.confirmed.add(keyOf(key.verb, key.name))
    this.retryHeld('confirmed')
    return true
  }

  // --------------------------------------------------------------- internals

  /** Applies the stream's word on `id`, unless that would leave a capability short (then holds it). */
  private settle (id: string): void {
    const next = this.truth.get(id) ?? null
    if (this.shortfall(id, next).length > 0) {
      const first = !this.held.has(id)
      this.held.set(id, next)
      if (first) this.emit('hold', { workerId: id, capabilities: this.shortfall(id, next) })
      return
    }
    const wasHeld = this.held.delete(id)
    this.commit(id, next)
    if (wasHeld) this.emit('release', { workerId: id, reason: 'restored' })
    // This change may have made room for held ones (a worker joined a short capability).
    if (this.held.size > 0) this.retryHeld('restored')
  }

  /** Applies every held change that no longer leaves a capability short (or only confirmed ones), until none moves. */
  private retryHeld (reason: 'restored' | 'confirmed'): void {
    let moved = true
    while (moved) {
      moved = false
      for (const [id, next] of this.held) {
        if (this.shortfall(id, next).length > 0) continue
        this.held.delete(id)
        this.commit(id, next)
        this.emit('release', { workerId: id, reason })
        moved = true
      }
    }
    // A confirmation holds for the changes held when it came, not for later ones.
    if (this.held.size === 0) this.confirmed.clear()
  }

  /**
   * The capabilities that applying `next` (default: the held change) for
   * `id` would leave with fewer than holdBelow routable workers, confirmed
   * ones aside. Only a drop counts: a capability already short stays as it is.
   */
  private shortfall (id: string, next: WorkerView | null = this.held.get(id) ?? null): CapabilityKey[] {
    if (this.holdBelow === 0 || this.router == null) return []
    const cur = this.applied.get(id)
    if (cur == null || !ROUTABLE.has(cur.state)) return []
    const after = next != null && ROUTABLE.has(next.state) ? keysOf(next) : new Map<string, CapabilityKey>()
    const out: CapabilityKey[] = []
    for (const [k, key] of keysOf(cur)) {
      if (after.has(k) || this.confirmed.has(k)) continue
      if (this.router.routable(key.verb, key.name) - 1 < this.holdBelow) out.push(key)
    }
    return out
  }

  private commit (id: string, next: WorkerView | null): void {
    if (next == null) {
      this.router!.remove(id)
      this.applied.delete(id)
      return
    }
    const cur = this.applied.get(id)
    this.applied.set(id, next)
    // Only the state (or load) changed: keep the worker's place in round-robin order.
    if (cur != null && cur.incarnation === next.incarnation && cur.controller_id === next.controller_id && cur.capabilities === next.capabilities && cur.worker_url === next.worker_url) {
      this.router!.setState(id, next.state)
      this.router!.setLoad(id, next.load)
      return
    }
    this.router!.upsert(routable(next), next.state, next.load)
  }
}
