/**
 * The controller's in-memory heart, with no I/O: the registry (Yjs), the
 * health of the workers it owns (Liveness), what their owners say about the
 * others (OwnerTracker), and the routing index — wired so that every
 * registry change, health transition and digest reaches the index
 * synchronously. The API, the store and the mesh all talk to this object.
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import {
  DEFAULT_SELF_PRESERVATION_MAX_WINDOWS, DEFAULT_SELF_PRESERVATION_PEER_RATIO
} from '../constants.ts'
import { SupersededError } from '../errors.ts'
import type { Digest } from '../gossip/envelope.ts'
import { Liveness, OwnerTracker, type HealthState, type HeartbeatInput, type OwnerStatus } from '../liveness/index.ts'
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
  /** Lost fraction of peer controllers that triggers self-preservation. @default 0.5 */
  selfPreservationPeerRatio?: number
}

export interface WorkerView {
  worker_id: string
  worker_url: string
  capabilities: WorkerRecord['capabilities']
  state: HealthState
  /** ISO time of the last heartbeat this controller saw, null if none (or owned elsewhere). */
  last_heartbeat: string | null
  load: number
  controller_id: string
  incarnation: number
  registered_at: string
}

export interface CoreEvents {
  /** A worker was removed because it went silent (or was never confirmed). */
  expired: [workerId: string, state: HealthState]
  /** An owner controller's status changed (alive, silent, gone). */
  owner: [owner: string, from: OwnerStatus, to: OwnerStatus]
  /** An owner gone for longer than the stale window had its entries dropped. */
  dropped: [owner: string, segments: number]
  /** Self-preservation switched; `kind` says whether workers or peers went silent. */
  selfPreservation: [kind: 'workers' | 'peers', on: boolean]
}

export class ControllerCore extends EventEmitter<CoreEvents> {
  readonly controllerId: string
  readonly registry: Registry
  readonly liveness: Liveness
  readonly owners: OwnerTracker
  readonly router: Router
  /** Random per start: lets peers tell a restart from a slow digest. */
  readonly epoch = randomBytes(6).toString('hex')
  private readonly byOwner = new Map<string, Set<string>>()
  private readonly staleAfterMs: number
  private readonly peerRatio: number
  private digestSeq = 0
  /** XOR of the entries' 64-bit hashes, as two 32-bit halves (no BigInt on the hot path). */
  private hashHi = 0
  private hashLo = 0
  private peerSpSince: number | null = null
  /** When peer self-preservation last ended: owners get a stale window to be heard again before any drop. */
  private peerSpEndedAt = -Infinity

  constructor (init: ControllerCoreInit) {
    super()
    this.controllerId = init.controllerId
    this.staleAfterMs = init.staleAfterMs
    this.peerRatio = init.selfPreservationPeerRatio ?? DEFAULT_SELF_PRESERVATION_PEER_RATIO
    this.registry = new Registry({ controllerId: init.controllerId })
    this.liveness = new Liveness({ unhealthyAfterMs: init.unhealthyAfterMs, staleAfterMs: init.staleAfterMs })
    this.owners = new OwnerTracker({ unhealthyAfterMs: init.unhealthyAfterMs, staleAfterMs: init.staleAfterMs })
    this.router = new Router({
      controllerId: init.controllerId,
      retryAfterSeconds: Math.max(1, Math.ceil(init.heartbeatIntervalMs / 1000)),
      idempotency: { ttlMs: init.idempotencyTtlMs }
    })
    this.registry.on('change', (changes, origin) => { this.onChange(changes, origin) })
    this.liveness.on('state', (id, _from, to) => { if (this.isOwn(id)) this.router.setState(id, to) })
    this.liveness.on('load', (id, load) => { if (this.isOwn(id)) this.router.setLoad(id, load) })
    this.liveness.on('expire', (id, last) => {
      this.registry.deregister(id)
      // The registry may not know it any more (removed meanwhile); make sure the index forgets it too.
      if (this.registry.get(id) == null) this.router.remove(id)
      this.emit('expired', id, last.state)
    })
    this.liveness.on('selfPreservation', on => { this.emit('selfPreservation', 'workers', on) })
    this.owners.on('worker', (owner, id) => {
      if (this.byOwner.get(owner)?.has(id) !== true) return
      this.router.setState(id, this.owners.stateOf(owner, id))
      this.router.setLoad(id, this.owners.loadOf(owner, id))
    })
    this.owners.on('status', (owner, from, to) => {
      this.restate(owner)
      this.emit('owner', owner, from, to)
    })
    this.owners.on('word', owner => { this.restate(owner) })
  }

  /** Routes every worker of `owner` by what is now known of it (its status, its digest). */
  private restate (owner: string): void {
    for (const id of this.byOwner.get(owner) ?? []) {
      this.router.setState(id, this.owners.stateOf(owner, id))
      this.router.setLoad(id, this.owners.loadOf(owner, id))
    }
  }

  // -------------------------------------------------------------- workers

  /** Registers a worker here (this controller becomes its owner). Routable at once. */
  register (input: RegisterInput): WorkerRecord {
    return this.registry.register(input)
  }

  /**
   * A heartbeat. Unknown worker → false (the caller answers
   * `worker_not_registered`). A worker owned elsewhere that heartbeats here
   * has moved: this controller adopts it (one registry write), after which
   * heartbeats touch only liveness — unless the heartbeat names an older
   * incarnation than the owner's: then it was sent before the worker failed
   * over and arrives late, and adopting would pull the worker back from the
   * controller it now heartbeats (SupersededError, nothing changes).
   */
  heartbeat (workerId: string, input: HeartbeatInput & { incarnation?: number } = {}): boolean {
    const rec = this.registry.get(workerId)
    if (rec == null) return false
    if (rec.owner !== this.controllerId) this.moveHere(rec, input.incarnation)
    if (!this.liveness.heartbeat(workerId, input)) {
      this.liveness.track(workerId, 'healthy')
      this.liveness.heartbeat(workerId, input)
    }
    return true
  }

  /** Marks a worker draining: still listed, no new routes. A worker owned elsewhere is adopted first (as for a heartbeat). */
  drain (workerId: string, incarnation?: number): boolean {
    const rec = this.registry.get(workerId)
    if (rec == null) return false
    if (rec.owner !== this.controllerId) this.moveHere(rec, incarnation)
    return this.liveness.drain(workerId)
  }

  /** Adopts a worker owned elsewhere that reached this controller, unless the request is from an older attachment. */
  private moveHere (rec: WorkerRecord, incarnation: number | undefined): void {
    if (incarnation != null && incarnation < rec.incarnation) {
      throw new SupersededError(rec.worker_id, incarnation, { incarnation: rec.incarnation, owner: rec.owner })
    }
    this.registry.adopt(rec.worker_id, incarnation)
  }

  deregister (workerId: string): boolean {
    return this.registry.deregister(workerId)
  }

  route (q: RouteQuery): RouteResult {
    return this.router.route(q)
  }

  /** Workers per state as this controller routes them (own and others'). O(1). */
  stateCounts (): Record<HealthState, number> & { total: number } {
    return this.router.counts()
  }

  /** The state this controller routes `rec` by. */
  stateOf (rec: WorkerRecord): HealthState {
    if (rec.owner === this.controllerId) return this.liveness.get(rec.worker_id)?.state ?? 'pending'
    return this.owners.stateOf(rec.owner, rec.worker_id)
  }

  workers (filter: { state?: HealthState, capability?: string, limit: number, offset: number }): { total: number, workers: WorkerView[] } {
    const out: WorkerView[] = []
    let total = 0
    for (const rec of this.registry.workers()) {
      const state = this.stateOf(rec)
      if (filter.state != null && state !== filter.state) continue
      if (filter.capability != null && !rec.capabilities.some(c => c.name === filter.capability)) continue
      total++
      if (total <= filter.offset || out.length >= filter.limit) continue
      const own = rec.owner === this.controllerId
      const h = own ? this.liveness.get(rec.worker_id) : undefined
      out.push({
        worker_id: rec.worker_id,
        worker_url: rec.worker_url,
        capabilities: rec.capabilities,
        state,
        last_heartbeat: h?.lastHeartbeatAt != null ? new Date(h.lastHeartbeatAt).toISOString() : null,
        load: own ? (h?.load ?? 0) : this.owners.loadOf(rec.owner, rec.worker_id),
        controller_id: rec.owner,
        incarnation: rec.incarnation,
        registered_at: new Date(rec.registered_at).toISOString()
      })
    }
    return { total, workers: out }
  }

  exportState (): PortableState { return exportState(this.registry) }

  importState (doc: unknown): { added: number, workers: number } { return importState(this.registry, doc) }

  // ------------------------------------------------------------ the mesh

  /**
   * Order-independent hash of the live entries (worker, incarnation, owner):
   * two controllers with the same hash hold the same registry.
   */
  get registryHash (): string { return hex32(this.hashHi) + hex32(this.hashLo) }

  /** This controller's word about the workers it owns, for its peers. */
  digest (): Digest {
    const exceptions: Digest['exceptions'] = []
    const loads: Digest['loads'] = []
    let owned = 0
    for (const id of this.byOwner.get(this.controllerId) ?? []) {
      owned++
      const h = this.liveness.get(id)
      const state = h?.state ?? 'pending'
      if (state !== 'healthy') exceptions.push([id, state === 'unhealthy' ? 'u' : state === 'draining' ? 'd' : 'p'])
      if (h != null && h.load > 0) loads.push([id, h.load])
    }
    return {
      epoch: this.epoch,
      seq: this.digestSeq++,
      owned,
      exceptions,
      loads,
      registry_hash: this.registryHash,
      self_preservation: this.selfPreservation.workers || this.selfPreservation.peers
    }
  }

  /** A digest from another controller. */
  onDigest (controllerId: string, d: Digest): void {
    if (controllerId === this.controllerId) return
    this.owners.digest(controllerId, d)
  }

  /** Any valid message from another controller. */
  onHeard (controllerId: string): void {
    if (controllerId === this.controllerId) return
    this.owners.heard(controllerId)
  }

  get selfPreservation (): { workers: boolean, peers: boolean } {
    return { workers: this.liveness.selfPreservation, peers: this.peerSpSince != null }
  }

  /**
   * Applies every timeout: own workers (unhealthy, expired), other owners
   * (silent, gone). An owner gone for the stale window has its segments
   * dropped from the registry — unless this controller has lost most of its
   * peers at once (it is more likely cut off than they are all dead), for
   * at most a few stale windows.
   */
  sweep (): void {
    this.liveness.sweep()
    this.owners.sweep()
    let known = 0
    let lost = 0
    for (const [owner, o] of this.owners.entries()) {
      if (owner === this.controllerId || o.lastHeard == null) continue
      known++
      if (o.status !== 'alive') lost++
    }
    const now = performance.now()
    const partitioned = known >= 2 && lost / known > this.peerRatio
    if (partitioned && this.peerSpSince == null) {
      this.peerSpSince = now
      this.emit('selfPreservation', 'peers', true)
    } else if (!partitioned && this.peerSpSince != null) {
      this.peerSpSince = null
      this.peerSpEndedAt = now
      this.emit('selfPreservation', 'peers', false)
    }
    const preserve = this.peerSpSince != null && now - this.peerSpSince < DEFAULT_SELF_PRESERVATION_MAX_WINDOWS * this.staleAfterMs
    // Right after a heal, owners still marked gone are usually alive and not yet heard from
    // (their digests arrive once gossipsub grafts the new links): give them a stale window.
    if (preserve || now - this.peerSpEndedAt < this.staleAfterMs) return
    for (const [owner, o] of this.owners.entries()) {
      if (o.status !== 'gone' || owner === this.controllerId) continue
      if ((this.byOwner.get(owner)?.size ?? 0) === 0) continue
      const n = this.registry.dropOwner(owner)
      if (n > 0) this.emit('dropped', owner, n)
    }
  }

  // ------------------------------------------------------------- internals

  private xorEntry (r: WorkerRecord): void {
    const [hi, lo] = entryHash(r)
    this.hashHi = (this.hashHi ^ hi) >>> 0
    this.hashLo = (this.hashLo ^ lo) >>> 0
  }

  private isOwn (workerId: string): boolean {
    return this.registry.get(workerId)?.owner === this.controllerId
  }

  private onChange (changes: WorkerChange[], origin: Origin): void {
    for (const c of changes) {
      const { workerId: id, before, after } = c
      if (before != null) {
        this.xorEntry(before)
        this.byOwner.get(before.owner)?.delete(id)
      }
      if (after == null) {
        this.router.remove(id)
        this.liveness.untrack(id)
        continue
      }
      this.xorEntry(after)
      let set = this.byOwner.get(after.owner)
      if (set == null) this.byOwner.set(after.owner, set = new Set())
      set.add(id)
      if (after.owner === this.controllerId) {
        // A registration made here counts as the first heartbeat; one restored
        // from disk or synced back from a previous life waits for confirmation.
        const fresh = origin === Origin.local && (before == null || before.incarnation !== after.incarnation)
        this.liveness.track(id, fresh ? 'healthy' : 'pending')
        const h = this.liveness.get(id)!
        this.router.upsert(after, h.state, h.load)
      } else {
        if (before?.owner === this.controllerId) this.liveness.untrack(id)
        this.owners.know(after.owner)
        this.router.upsert(after, this.owners.stateOf(after.owner, id), this.owners.loadOf(after.owner, id))
      }
    }
  }
}

const hex32 = (x: number): string => (x >>> 0).toString(16).padStart(8, '0')

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
function fmix32 (h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/**
 * A 64-bit hash of (worker, incarnation, owner) as two independent 32-bit
 * FNV-style lanes. Not cryptographic: it only tells whether two replicas
 * agree, and a crypto hash per entry was a visible cost of applying a heal.
 */
function entryHash (r: WorkerRecord): [number, number] {
  const s = `${r.worker_id}\u0000${r.incarnation}\u0000${r.owner}`
  let a = 0x811c9dc5
  let b = 0x9747b28c ^ s.length
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    a = Math.imul(a ^ c, 0x01000193)
    b = Math.imul(b ^ c, 0x5bd1e995)
    b ^= b >>> 15
  }
  return [fmix32(a), fmix32(b ^ a)]
}
