/**
 * The controller's in-memory heart, with no I/O: the registry (Yjs), worker
 * liveness beside it, and the routing index, wired so that every registry
 * change and health transition reaches the index synchronously. The API,
 * the store and (later) gossip all talk to this object.
 */
import { EventEmitter } from 'node:events'
import { Liveness, type HealthState, type HeartbeatInput } from '../liveness/index.ts'
import { Origin, Registry, exportState, importState, type PortableState, type RegisterInput, type WorkerChange, type WorkerRecord } from '../registry/index.ts'
import { Router, type RouteQuery, type RouteResult } from '../routing/index.ts'

export interface ControllerCoreInit {
  /** This controller's id. */
  controllerId: string
  /** Expected heartbeat interval (ms): the Retry-After hint. */
  heartbeatIntervalMs: number
  unhealthyAfterMs: number
  staleAfterMs: number
  /** idempotency_key lifetime (ms). */
  idempotencyTtlMs?: number
}

export interface WorkerView {
  worker_id: string
  worker_url: string
  capabilities: WorkerRecord['capabilities']
  state: HealthState
  /** ISO time of the last heartbeat seen, null if none since this controller started. */
  last_heartbeat: string | null
  load: number
  controller_id: string
  incarnation: number
  registered_at: string
}

export interface CoreEvents {
  /** A worker was removed because it went silent (or was never confirmed). */
  expired: [workerId: string, state: HealthState]
}

export class ControllerCore extends EventEmitter<CoreEvents> {
  readonly controllerId: string
  readonly registry: Registry
  readonly liveness: Liveness
  readonly router: Router

  constructor (init: ControllerCoreInit) {
    super()
    this.controllerId = init.controllerId
    this.registry = new Registry({ controllerId: init.controllerId })
    this.liveness = new Liveness({ unhealthyAfterMs: init.unhealthyAfterMs, staleAfterMs: init.staleAfterMs })
    this.router = new Router({
      controllerId: init.controllerId,
      retryAfterSeconds: Math.max(1, Math.ceil(init.heartbeatIntervalMs / 1000)),
      idempotency: { ttlMs: init.idempotencyTtlMs }
    })
    this.registry.on('change', (changes, origin) => { this.onChange(changes, origin) })
    this.liveness.on('state', (id, _from, to) => { this.router.setState(id, to) })
    this.liveness.on('load', (id, load) => { this.router.setLoad(id, load) })
    this.liveness.on('expire', (id, last) => {
      this.registry.deregister(id)
      // The registry may not know it any more (removed meanwhile); make sure the index forgets it too.
      this.router.remove(id)
      this.emit('expired', id, last.state)
    })
  }

  /** Registers a worker here (this controller becomes its owner). Routable at once. */
  register (input: RegisterInput): WorkerRecord {
    return this.registry.register(input)
  }

  /**
   * A heartbeat. Unknown worker → false (the caller answers
   * `worker_not_registered`). A worker owned elsewhere that heartbeats here
   * has moved: this controller adopts it (one registry write), after which
   * heartbeats touch only liveness.
   */
  heartbeat (workerId: string, input: HeartbeatInput = {}): boolean {
    const rec = this.registry.get(workerId)
    if (rec == null) return false
    if (rec.owner !== this.controllerId) this.registry.adopt(workerId)
    if (!this.liveness.heartbeat(workerId, input)) {
      this.liveness.track(workerId, 'healthy')
      this.liveness.heartbeat(workerId, input)
    }
    return true
  }

  /** Marks a worker draining: still listed, no new routes. */
  drain (workerId: string): boolean {
    if (this.registry.get(workerId) == null) return false
    return this.liveness.drain(workerId)
  }

  deregister (workerId: string): boolean {
    return this.registry.deregister(workerId)
  }

  route (q: RouteQuery): RouteResult {
    return this.router.route(q)
  }

  /** Applies health timeouts; call on a timer. */
  sweep (): void {
    this.liveness.sweep()
  }

  workers (filter: { state?: HealthState, capability?: string, limit: number, offset: number }): { total: number, workers: WorkerView[] } {
    const out: WorkerView[] = []
    let total = 0
    for (const rec of this.registry.workers()) {
      const h = this.liveness.get(rec.worker_id)
      const state = h?.state ?? 'pending'
      if (filter.state != null && state !== filter.state) continue
      if (filter.capability != null && !rec.capabilities.some(c => c.name === filter.capability)) continue
      total++
      if (total <= filter.offset || out.length >= filter.limit) continue
      out.push({
        worker_id: rec.worker_id,
        worker_url: rec.worker_url,
        capabilities: rec.capabilities,
        state,
        last_heartbeat: h?.lastHeartbeatAt != null ? new Date(h.lastHeartbeatAt).toISOString() : null,
        load: h?.load ?? 0,
        controller_id: rec.owner,
        incarnation: rec.incarnation,
        registered_at: new Date(rec.registered_at).toISOString()
      })
    }
    return { total, workers: out }
  }

  exportState (): PortableState { return exportState(this.registry) }

  importState (doc: unknown): { added: number, workers: number } { return importState(this.registry, doc) }

  private onChange (changes: WorkerChange[], origin: Origin): void {
    for (const c of changes) {
      if (c.after == null) {
        this.router.remove(c.workerId)
        this.liveness.untrack(c.workerId)
        continue
      }
      // A registration made here counts as the first heartbeat; anything
      // restored, imported or learnt elsewhere waits for confirmation.
      const fresh = origin === Origin.local && c.after.owner === this.controllerId &&
        (c.before == null || c.before.incarnation !== c.after.incarnation)
      this.liveness.track(c.workerId, fresh ? 'healthy' : 'pending')
      const h = this.liveness.get(c.workerId)!
      this.router.upsert(c.after, h.state, h.load)
    }
  }
}
