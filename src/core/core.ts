/**
 * The controller's in-memory heart, with no I/O: the registry (Yjs), the
 * health of the workers it owns (Liveness), the other controllers and what
 * they say of theirs (Membership), and the routing index — wired so that
 * every registry change, health transition and digest reaches the index
 * synchronously.
 *
 * Its public methods are what a controller does (register, heartbeat,
 * drain, deregister, route, list, export, import) in the wire contract's
 * shapes; the API, metrics, CLI and simulations reach it only through a
 * ControllerView (view.ts). Its parts are fields for the composition root
 * (controller/) and tests, not for other layers.
 */
import { EventEmitter } from 'node:events'
import { DEFAULT_WATCH_LOG_SIZE } from '../constants.ts'
import { AuthError, CapmeshError, SupersededError, ValidationError, type FieldProblem } from '../errors.ts'
import { covers, type Identity } from '../identity/index.ts'
import { Liveness, type HealthState, type WorkerHealth } from '../liveness/index.ts'
import { Membership, type MemberStatus, type OwnedWorker } from '../membership/index.ts'
import { exportBinary, exportJson, importStateInSlices, Origin, Registry, registryReplica, type RegisterInput, type RegistryStats, type SealAuthority, type WorkerChange, type WorkerRecord } from '../registry/index.ts'
import { Router } from '../routing/index.ts'
import type {
  CapabilitySummary, DeregisterReply, DrainReply, HealthState as WireHealthState, HeartbeatReply, HeartbeatRequest, ImportReply, MemberStatus as MemberStatusBody,
  RegisterBatchItem, RegisterBatchReply, RegisterReply, RegisterRequest, RouteQuery, RouteResult, WatchController, WatchSnapshot, WorkersReply, WorkerView
} from '../wire/index.ts'
import type { Replica } from '../gossip/replica.ts'
import { ChangeLog } from './changes.ts'

export interface ControllerCoreInit {
  /** This controller's id. */
  controllerId: string
  /** Expected heartbeat interval (ms): the Retry-After hint. */
  heartbeatIntervalMs: number
  unhealthyAfterMs: number
  staleAfterMs: number
  /** How often the root calls tick() (digest publishing) (ms). */
  digestIntervalMs: number
  /** Publish the digest at least this often (ms). */
  digestKeepaliveMs: number
  /** idempotency_key lifetime (ms). @default 300000 */
  idempotencyTtlMs?: number
  /** Lost fraction of peer controllers that triggers self-preservation. @default 0.5 */
  selfPreservationPeerRatio?: number
  /** Signs this controller's segments and says whose seals to trust (registry/seal.ts); `false` only in benchmarks. @default a key of its own, trusting no other owner */
  seals?: SealAuthority | false
  /** Changes kept for watchers to resume from (the change log's ring). @default 10000 */
  watchLogSize?: number
}

export interface CoreEvents {
  /** A worker was removed because it went silent (or was never confirmed). */
  expired: [workerId: string, state: HealthState]
  /** Another controller's status changed (alive, silent, gone). */
  member: [controllerId: string, from: MemberStatus, to: MemberStatus]
  /** A controller gone for longer than the stale window had its entries dropped. */
  dropped: [controllerId: string, segments: number]
  /** Self-preservation switched; `kind` says whether workers or peers went silent. */
  selfPreservation: [kind: 'workers' | 'peers', on: boolean]
  /** Entries of this controller that a peer dropped (it thought it gone) were written back. */
  republished: [entries: number]
  /** Registry data from a peer, an import or the data dir was ignored as malformed. */
  invalid: [reason: string]
  /** Registry data was refused whole (registry `refused`): from a peer, an import or the data dir; `unsigned` when a segment lacked its owner's seal. */
  refused: [origin: Origin, unsigned: boolean, reason: string]
  /** The registry changed (any origin): the workers it gained. */
  registry: [change: { added: string[] }]
}

export class ControllerCore extends EventEmitter<CoreEvents> {
  readonly controllerId: string
  readonly registry: Registry
  readonly liveness: Liveness
  readonly membership: Membership
  readonly router: Router
  /** The registry as gossip sees it. */
  readonly replica: Replica
  /** What changed, for watchers (`/watch`, blocking `/workers`). */
  readonly changes: ChangeLog
  /** Other controllers' self-preservation, as their digests last said (for change events). */
  private readonly reportedSp = new Map<string, boolean>()
  private readonly byOwner = new Map<string, Set<string>>()
  /** XOR of the entries' 64-bit hashes, as two 32-bit halves (no BigInt on the hot path). */
  private hashHi = 0
  private hashLo = 0
  private openExports = 0

  constructor (init: ControllerCoreInit) {
    super()
    this.controllerId = init.controllerId
    this.registry = new Registry({ controllerId: init.controllerId, seals: init.seals })
    this.replica = registryReplica(this.registry)
    this.liveness = new Liveness({ unhealthyAfterMs: init.unhealthyAfterMs, staleAfterMs: init.staleAfterMs })
    this.membership = new Membership({
      controllerId: init.controllerId,
      local: {
        ownWorkers: () => this.ownWorkers(),
        registryHash: () => this.registryHash,
        workersSelfPreservation: () => this.liveness.selfPreservation
      },
      unhealthyAfterMs: init.unhealthyAfterMs,
      staleAfterMs: init.staleAfterMs,
      digestIntervalMs: init.digestIntervalMs,
      digestKeepaliveMs: init.digestKeepaliveMs,
      selfPreservationPeerRatio: init.selfPreservationPeerRatio
    })
    this.router = new Router({
      controllerId: init.controllerId,
      retryAfterSeconds: Math.max(1, Math.ceil(init.heartbeatIntervalMs / 1000)),
      idempotency: { ttlMs: init.idempotencyTtlMs }
    })
    this.changes = new ChangeLog({
      epoch: this.membership.epoch,
      size: init.watchLogSize ?? DEFAULT_WATCH_LOG_SIZE,
      snapshot: caps => this.watchSnapshot(caps)
    })
    this.registry.on('change', (changes, origin) => { this.onChange(changes, origin) })
    this.registry.on('republished', n => { this.emit('republished', n) })
    this.registry.on('invalid', reason => { this.emit('invalid', reason) })
    this.registry.on('refused', (origin, unsigned, reason) => { this.emit('refused', origin, unsigned, reason) })
    this.liveness.on('state', (id, _from, to) => { if (this.isOwn(id)) this.reroute(id, to) })
    this.liveness.on('load', (id, load) => { if (this.isOwn(id)) this.router.setLoad(id, load) })
    this.liveness.on('expire', (id, last) => {
      this.registry.deregister(id)
      // The registry may not know it any more (removed meanwhile); make sure the index forgets it too.
      if (this.registry.get(id) == null) this.router.remove(id)
      this.emit('expired', id, last.state)
    })
    this.liveness.on('selfPreservation', on => { this.selfPreservationChanged('workers', on) })
    this.membership.on('worker', (owner, id) => {
      if (this.byOwner.get(owner)?.has(id) !== true) return
      this.reroute(id, this.membership.stateOf(owner, id), this.membership.loadOf(owner, id))
    })
    this.membership.on('status', (owner, from, to) => {
      this.changes.append('controller_status', () => ({ controller_id: owner, from, to }))
      this.restate(owner)
      this.emit('member', owner, from, to)
    })
    this.membership.on('word', owner => { this.restate(owner) })
    this.membership.on('selfPreservation', on => { this.selfPreservationChanged('peers', on) })
    this.membership.on('digest', owner => {
      // Another controller's self-preservation shows only as a flag in its digests: a change of it is an event.
      const on = this.membership.get(owner)?.selfPreservation ?? false
      if (on === (this.reportedSp.get(owner) ?? false)) return
      this.reportedSp.set(owner, on)
      this.changes.append('self_preservation', () => ({ controller_id: owner, on, reason: null }))
    })
  }

  // -------------------------------------------------------------- workers
  //
  // `actor` is who asks: an authenticated identity, or null when a controller
  // runs with auth off (then anyone may do anything, as before identities).
  // A worker identity acts only for the worker ids it covers, and only for
  // workers it registered itself (the entry records who did, everywhere in
  // the mesh): a hijack is refused by whichever controller it is tried at.

  /** Registers a worker here (this controller becomes its owner). Routable at once. */
  register (input: RegisterRequest, actor: Identity | null = null): RegisterReply {
    const rec = this.registry.register(this.registration(input, actor))
    return { status: 'registered', worker_id: rec.worker_id, incarnation: rec.incarnation, controller_id: rec.owner }
  }

  /**
   * Registers several workers, each decided as `register` decides it: the
   * ones `actor` may register are written in one registry transaction (one
   * seal, one update), the others are refused with the error `register`
   * would have thrown. A worker id given twice refuses the whole batch
   * (ValidationError, the items named), as does an empty one.
   */
  registerBatch (inputs: RegisterRequest[], actor: Identity | null = null): RegisterBatchReply {
    const first = new Map<string, number>()
    const twice: FieldProblem[] = []
    inputs.forEach((w, i) => {
      const j = first.get(w.worker_id)
      if (j == null) first.set(w.worker_id, i)
      else twice.push({ field: `body/workers/${i}/worker_id`, message: `repeats body/workers/${j}/worker_id (${w.worker_id})` })
    })
    if (twice.length > 0) throw new ValidationError(`a worker id occurs twice: ${twice.map(p => p.field).join(', ')}`, twice)
    const results: RegisterBatchItem[] = new Array(inputs.length)
    const accepted: Array<RegisterInput & { index: number }> = []
    inputs.forEach((w, index) => {
      try {
        accepted.push({ ...this.registration(w, actor), index })
      } catch (err) {
        // Refusals are per worker; anything else is a bug and fails the request (nothing was written yet).
        if (!(err instanceof CapmeshError) || err.status >= 500) throw err
        const body = err.wireBody() as { error: string, code: string, message: string, reason?: string }
        results[index] = { status: 'refused', worker_id: w.worker_id, http_status: err.status, error: body.error, code: body.code, message: body.message, ...(body.reason != null ? { reason: body.reason } : {}) }
      }
    })
    const recs = this.registry.registerMany(accepted)
    recs.forEach((rec, k) => {
      results[accepted[k].index] = { status: 'registered', worker_id: rec.worker_id, incarnation: rec.incarnation, controller_id: rec.owner }
    })
    return { registered: recs.length, refused: inputs.length - recs.length, results }
  }

  /** What `register` writes for `input` from `actor`, or the AuthError that refuses it. */
  private registration (input: RegisterRequest, actor: Identity | null): RegisterInput {
    const cur = this.authorize(input.worker_id, actor)
    let identity: string | undefined
    if (actor != null) {
      // A capability that names its SPIFFE id must name the one registering it.
      const other = input.capabilities.find(c => c.spiffe_id != null && c.spiffe_id !== actor.id)
      if (other != null && actor.role !== 'operator') throw new AuthError('worker_not_covered', `capability ${other.name} names spiffe_id ${other.spiffe_id}, not ${actor.id}`)
      // An operator registering keeps whoever the worker is bound to (or leaves it unbound).
      identity = actor.role === 'worker' ? actor.id : cur?.identity
    }
    return { ...input, identity }
  }

  /**
   * Refuses `actor` acting for `workerId` unless it covers the id and, for a
   * worker already registered by an identity, is that identity (operators
   * may act for any). Returns the worker's current record, if any.
   */
  private authorize (workerId: string, actor: Identity | null): WorkerRecord | undefined {
    const rec = this.registry.get(workerId)
    if (actor == null || actor.role === 'operator') return rec
    if (!covers(actor, workerId)) throw new AuthError('worker_not_covered', `${actor.id} may not act for worker ${workerId}`)
    if (rec?.identity != null && rec.identity !== actor.id) throw new AuthError('worker_owned_by_other', `worker ${workerId} is registered by another identity`)
    return rec
  }

  /**
   * A heartbeat. An unknown worker gets `worker_not_registered` (the
   * platform's workers re-register on it). A worker owned elsewhere that
   * heartbeats here has moved: this controller adopts it (one registry
   * write), after which heartbeats touch only liveness — unless the
   * heartbeat names an older incarnation than the owner's: then it was sent
   * before the worker failed over and arrives late, and adopting would pull
   * the worker back from the controller it now heartbeats
   * (SupersededError, nothing changes).
   */
  heartbeat (req: HeartbeatRequest, actor: Identity | null = null): HeartbeatReply {
    const id = req.worker_id
    const rec = this.authorize(id, actor)
    if (rec == null) return { error: 'worker_not_registered', worker_id: id }
    if (rec.owner !== this.controllerId) this.moveHere(rec, req.incarnation)
    const input = { load: req.load, draining: req.status === 'draining' ? true : req.status === 'ready' ? false : undefined }
    if (!this.liveness.heartbeat(id, input)) {
      this.liveness.track(id, 'healthy')
      this.liveness.heartbeat(id, input)
    }
    return { status: 'acknowledged', timestamp: new Date().toISOString(), state: this.liveness.get(id)?.state ?? 'healthy' }
  }

  /** Marks a worker draining: still listed, no new routes. A worker owned elsewhere is adopted first (as for a heartbeat). */
  drain (workerId: string, incarnation?: number, actor: Identity | null = null): DrainReply {
    const rec = this.authorize(workerId, actor)
    if (rec == null) return { error: 'worker_not_registered', worker_id: workerId }
    if (rec.owner !== this.controllerId) this.moveHere(rec, incarnation)
    if (!this.liveness.drain(workerId)) return { error: 'worker_not_registered', worker_id: workerId }
    return { status: 'draining', worker_id: workerId }
  }

  /** Adopts a worker owned elsewhere that reached this controller, unless the request is from an older attachment. */
  private moveHere (rec: WorkerRecord, incarnation: number | undefined): void {
    if (incarnation != null && incarnation < rec.incarnation) {
      throw new SupersededError(rec.worker_id, incarnation, { incarnation: rec.incarnation, owner: rec.owner })
    }
    this.registry.adopt(rec.worker_id, incarnation)
  }

  /** Removes a worker (idempotent); `known` says whether this controller knew it. */
  deregister (workerId: string, actor: Identity | null = null): DeregisterReply {
    this.authorize(workerId, actor)
    return { status: 'deregistered', worker_id: workerId, known: this.registry.deregister(workerId) }
  }

  /** Picks a worker. Who asks is the authenticated identity, never what the query says. */
  route (q: RouteQuery, actor: Identity | null = null): RouteResult {
    if (actor != null) q.requester_identity = actor.id
    return this.router.route(q)
  }

  /** `route`'s answer as JSON text. */
  routeText (q: RouteQuery, actor: Identity | null = null): string {
    if (actor != null) q.requester_identity = actor.id
    return this.router.routeText(q)
  }

  /** Capabilities on offer, with how many workers offer each and how many are healthy. */
  capabilities (): CapabilitySummary[] {
    return this.router.capabilities()
  }

  /** Workers per state as this controller routes them (own and others'). O(1). */
  stateCounts (): Record<HealthState, number> & { total: number } {
    return this.router.counts()
  }

  /** The workers attached here, per state. */
  ownCounts (): Record<HealthState, number> {
    return this.liveness.counts()
  }

  registryStats (): RegistryStats {
    return this.registry.stats()
  }

  /** The state this controller routes `rec` by. */
  stateOf (rec: WorkerRecord): HealthState {
    if (rec.owner === this.controllerId) return this.liveness.get(rec.worker_id)?.state ?? 'pending'
    return this.membership.stateOf(rec.owner, rec.worker_id)
  }

  workers (filter: { state?: HealthState, capability?: string, limit: number, offset: number }): WorkersReply {
    const out: WorkersReply['workers'] = []
    let total = 0
    for (const rec of this.registry.workers()) {
      const state = this.stateOf(rec)
      if (filter.state != null && state !== filter.state) continue
      if (filter.capability != null && !rec.capabilities.some(c => c.name === filter.capability)) continue
      total++
      if (total <= filter.offset || out.length >= filter.limit) continue
      out.push(this.viewOf(rec, state))
    }
    return { total, workers: out, index: this.changes.index }
  }

  /** A worker as `/workers` lists it (and watchers see it), in `state`. */
  private viewOf (rec: WorkerRecord, state: WireHealthState = this.stateOf(rec)): WorkerView {
    const own = rec.owner === this.controllerId
    const h = own ? this.liveness.get(rec.worker_id) : undefined
    return workerView(rec, state, own ? (h?.load ?? 0) : this.membership.loadOf(rec.owner, rec.worker_id), h?.lastHeartbeatAt ?? null)
  }

  /** Every worker (offering one of `capabilities`, if given) and every controller, now: what a watcher starts from. */
  private watchSnapshot (capabilities: ReadonlySet<string> | null): Pick<WatchSnapshot, 'controller_id' | 'workers' | 'controllers'> {
    const workers: WorkerView[] = []
    for (const rec of this.registry.workers()) {
      if (capabilities != null && !rec.capabilities.some(c => capabilities.has(c.name))) continue
      workers.push(this.viewOf(rec))
    }
    const sp = this.selfPreservation
    const controllers: WatchController[] = [{ controller_id: this.controllerId, status: 'alive', self_preservation: sp.workers || sp.peers, self: true }]
    for (const [id, m] of this.membership.members()) {
      controllers.push({ controller_id: id, status: m.status, self_preservation: m.selfPreservation, self: false })
    }
    return { controller_id: this.controllerId, workers, controllers }
  }

  /** The registry as a PortableState document, in pieces of JSON text (see registry/portable.ts). */
  exportJson (): Iterable<string> {
    const self = this
    return (function * () {
      self.openExports++
      try {
        yield * exportJson(self.registry)
      } finally {
        // Also when the reader stops early (a client gone): the generator is closed, its state let go.
        self.openExports--
      }
    })()
  }

  /** JSON exports being streamed now (each holds the encoded registry until it ends or its client goes). */
  get exportsInProgress (): number { return this.openExports }

  /** The registry as the raw Yjs update (the binary export), in pieces to send one after another. */
  exportBinary (): Uint8Array[] { return exportBinary(this.registry) }

  /** Merges a PortableState document or raw update bytes; large ones in slices (the controller keeps answering). */
  async importState (doc: unknown): Promise<ImportReply> { return { status: 'imported', ...await importStateInSlices(this.registry, doc) } }

  // ------------------------------------------------------------ the mesh

  /**
   * Order-independent hash of the live entries (worker, incarnation, owner):
   * two controllers with the same hash hold the same registry.
   */
  get registryHash (): string { return hex32(this.hashHi) + hex32(this.hashLo) }

  get selfPreservation (): { workers: boolean, peers: boolean } {
    return { workers: this.liveness.selfPreservation, peers: this.membership.peerSelfPreservation }
  }

  /** Every other controller known, as /mesh shows it. */
  members (): Record<string, MemberStatusBody> {
    const out: Record<string, MemberStatusBody> = {}
    const now = performance.now()
    const mine = this.registryHash
    for (const [id, m] of this.membership.members()) {
      out[id] = {
        status: m.status,
        last_heard_ms_ago: m.lastHeard != null ? Math.round(now - m.lastHeard) : null,
        registry_hash: m.registryHash,
        registry_hash_matches: m.registryHash != null ? m.registryHash === mine : null,
        self_preservation: m.selfPreservation
      }
    }
    return out
  }

  /** Publishes this controller's digest if it says something new (membership's policy). Called every digest interval. */
  tick (): void {
    this.membership.tick()
  }

  /**
   * Applies every timeout: own workers (unhealthy, expired), other
   * controllers (silent, gone). A controller gone for the stale window has
   * its segments dropped from the registry, unless membership holds back
   * (peer self-preservation).
   */
  sweep (): void {
    this.liveness.sweep()
    for (const owner of this.membership.sweep()) {
      if ((this.byOwner.get(owner)?.size ?? 0) === 0) continue
      const n = this.registry.dropOwner(owner)
      if (n > 0) this.emit('dropped', owner, n)
    }
  }

  // ------------------------------------------------------------- internals

  /** The workers this controller owns, as its digest reports them. */
  private * ownWorkers (): Iterable<OwnedWorker> {
    for (const id of this.byOwner.get(this.controllerId) ?? []) {
      const h = this.liveness.get(id)
      yield { id, state: h?.state ?? 'pending', load: h?.load ?? 0 }
    }
  }

  /** Routes every worker of `owner` by what is now known of it (its status, its digest). */
  private restate (owner: string): void {
    for (const id of this.byOwner.get(owner) ?? []) this.reroute(id, this.membership.stateOf(owner, id), this.membership.loadOf(owner, id))
  }

  /** Routes `id` by `state` (and `load`); a change of state is a change for watchers. */
  private reroute (id: string, state: HealthState, load?: number): void {
    const from = this.router.stateOf(id)
    this.router.setState(id, state)
    if (load != null) this.router.setLoad(id, load)
    if (from == null || from === state) return
    const rec = this.registry.get(id)
    if (rec == null) return
    const now = load ?? this.liveness.get(id)?.load ?? 0
    this.changes.append('worker_state', () => ({ worker_id: id, controller_id: rec.owner, capabilities: namesOf(rec), from, to: state, load: now }), () => namesOf(rec))
  }

  private selfPreservationChanged (reason: 'workers' | 'peers', on: boolean): void {
    this.changes.append('self_preservation', () => ({ controller_id: this.controllerId, on, reason }))
    this.emit('selfPreservation', reason, on)
  }

  private xorEntry (r: WorkerRecord): void {
    entryHash(r)
    this.hashHi = (this.hashHi ^ hashOut[0]) >>> 0
    this.hashLo = (this.hashLo ^ hashOut[1]) >>> 0
  }

  /** Own workers' liveness removed with their entry during this turn (see onChange), until the next one. */
  private readonly justRemoved = new Map<string, { incarnation: number, health: WorkerHealth }>()

  private rememberRemoved (id: string, incarnation: number, health: WorkerHealth): void {
    if (this.justRemoved.size === 0) setImmediate(() => { this.justRemoved.clear() })
    this.justRemoved.set(id, { incarnation, health: { ...health } })
  }

  private isOwn (workerId: string): boolean {
    return this.registry.get(workerId)?.owner === this.controllerId
  }

  private onChange (changes: WorkerChange[], origin: Origin): void {
    const added: string[] = []
    for (const c of changes) {
      if (c.before == null && c.after != null) added.push(c.workerId)
      const { workerId: id, before, after } = c
      if (before != null) {
        this.xorEntry(before)
        this.byOwner.get(before.owner)?.delete(id)
      }
      if (after == null) {
        this.router.remove(id)
        const h = before?.owner === this.controllerId ? this.liveness.get(id) : undefined
        if (h != null) this.rememberRemoved(id, before!.incarnation, h)
        this.liveness.untrack(id)
        if (before != null) this.changes.append('worker_removed', () => ({ worker_id: id, controller_id: before.owner, incarnation: before.incarnation, capabilities: namesOf(before) }), () => namesOf(before))
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
        // Put back in the same turn it was removed (a peer dropped our segment): what we knew of it stands.
        const kept = !fresh && before == null ? this.justRemoved.get(id) : undefined
        if (kept != null && kept.incarnation === after.incarnation) this.liveness.restore(id, kept.health)
        else this.liveness.track(id, fresh ? 'healthy' : 'pending')
        const h = this.liveness.get(id)!
        this.router.upsert(after, h.state, h.load)
      } else {
        if (before?.owner === this.controllerId) this.liveness.untrack(id)
        this.membership.know(after.owner)
        this.router.upsert(after, this.membership.stateOf(after.owner, id), this.membership.loadOf(after.owner, id))
      }
      this.recordChange(before, after)
    }
    this.emit('registry', { added })
  }

  /** A worker added or updated, for watchers: what is known of it now, its view built when first asked for. */
  private recordChange (before: WorkerRecord | undefined, after: WorkerRecord): void {
    const own = after.owner === this.controllerId
    const state = this.router.stateOf(after.worker_id) ?? 'pending'
    const h = own ? this.liveness.get(after.worker_id) : undefined
    const load = own ? (h?.load ?? 0) : this.membership.loadOf(after.owner, after.worker_id)
    const lastHeartbeat = h?.lastHeartbeatAt ?? null
    const make = (): { worker: WorkerView } => ({ worker: workerView(after, state, load, lastHeartbeat) })
    if (before == null) this.changes.append('worker_added', make, () => namesOf(after))
    else this.changes.append('worker_updated', make, () => before.capabilities === after.capabilities ? namesOf(after) : [...new Set([...namesOf(before), ...namesOf(after)])])
  }
}

/** The names of the capabilities a worker offers (each once). */
function namesOf (rec: Pick<WorkerRecord, 'capabilities'>): string[] {
  const names: string[] = []
  for (const c of rec.capabilities) if (!names.includes(c.name)) names.push(c.name)
  return names
}

function workerView (rec: WorkerRecord, state: WireHealthState, load: number, lastHeartbeatAt: number | null): WorkerView {
  return {
    worker_id: rec.worker_id,
    worker_url: rec.worker_url,
    capabilities: rec.capabilities,
    state,
    last_heartbeat: lastHeartbeatAt != null ? new Date(lastHeartbeatAt).toISOString() : null,
    load,
    controller_id: rec.owner,
    incarnation: rec.incarnation,
    registered_at: new Date(rec.registered_at).toISOString()
  }
}

const hex32 = (x: number): string => (x >>> 0).toString(16).padStart(8, '0')

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
function fmix32 (h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** Where entryHash puts its two lanes (no array per entry: it runs for every worker of an import). */
const hashOut = new Uint32Array(2)

/**
 * A 64-bit hash of (worker, incarnation, owner) as two independent 32-bit
 * FNV-style lanes, over `<worker id>\0<incarnation>\0<owner>` (fed part by
 * part, not joined). Not cryptographic: it only tells whether two replicas
 * agree, and a crypto hash per entry was a visible cost of applying a heal.
 * Into hashOut.
 */
function entryHash (r: WorkerRecord): void {
  const inc = String(r.incarnation)
  let a = 0x811c9dc5
  let b = 0x9747b28c ^ (r.worker_id.length + 1 + inc.length + 1 + r.owner.length)
  const feed = (s: string): void => {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      a = Math.imul(a ^ c, 0x01000193)
      b = Math.imul(b ^ c, 0x5bd1e995)
      b ^= b >>> 15
    }
  }
  const sep = (): void => {
    a = Math.imul(a, 0x01000193)
    b = Math.imul(b, 0x5bd1e995)
    b ^= b >>> 15
  }
  feed(r.worker_id)
  sep()
  feed(inc)
  sep()
  feed(r.owner)
  hashOut[0] = fmix32(a)
  hashOut[1] = fmix32(b ^ a)
}
