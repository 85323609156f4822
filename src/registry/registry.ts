/**
 * The replicated registry: one Yjs document, split into *segments*.
 *
 * Layout: a root map `segments` whose keys are `<owner>/<generation>` and
 * whose values are Y.Maps `worker_id → Entry` (each entry stored as its JSON
 * text, see encodeEntry). Only the owner writes into its
 * own segments (plus whole-segment deletes of a dead owner, which are
 * idempotent). Two entries for the same worker — it failed over — are
 * resolved by data: highest incarnation wins, a tombstone wins a tie, then
 * the larger owner id (see `compareEntries`). No wall clock decides.
 *
 * Owner-signed: each segment carries its owner's seal over its entries
 * (seal.ts); the owner reseals in every transaction that changes it, and an
 * update that would leave a segment in a state its owner did not seal is
 * refused before it touches the document (validate.ts). A controller writes
 * only into the segment it created in this run (its *generation*): at its
 * first write it carries its live entries over from the segments its data
 * dir held, and it deletes any other segment of its own, so each key's items
 * form one chain that peers can check.
 *
 * Compaction: when its current segment carries too many dead entries, the
 * owner writes its live entries into a fresh generation and deletes the old
 * segment in one transaction. Deleting a nested Y.Map lets Yjs garbage
 * collect all of its content into a single GC range, so the document stays
 * within a constant factor of a fresh encoding of the live entries, and peers
 * replace the owner's part wholesale just by applying the update.
 * docs/internals.md has the measurements behind this shape.
 */
import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import * as Y from 'yjs'
import { setImmediate as nextTurn } from 'node:timers/promises'
import {
  APPLY_IN_SLICES_BYTES, APPLY_SLICE_STRUCTS, DEFAULT_SEGMENT_GARBAGE_RATIO, DEFAULT_SEGMENT_MIN_GARBAGE, DEFAULT_TOMBSTONE_TTL_MS
} from '../constants.ts'
import { InvalidStateError } from '../errors.ts'
import { decodeEntry, encodeEntry, isTombstone, parseOwnEntry, type Capability, type Entry, type Tombstone, type WorkerRecord } from './schema.ts'
import { ROOT, SEGMENT_KEY, ownerOf } from './keys.ts'
import { SEAL_KEY, SealDirectory, SegmentDigest, UnsignedWriteError, decodeSeal, encodeSeal, entryLeaf, makeSeal, type SealAuthority } from './seal.ts'
import { MissingDependencyError, ParsedEntries, adoptPreviews, stillValid, validateUpdate, validateUpdateAsync, type SealContext, type ValidUpdate } from './validate.ts'
import { sliceUpdate } from './slices.ts'
import { encodeUpdatePieces } from './chunks.ts'

/** Transaction origins: who caused a change. */
export const Origin = {
  /** A write by this controller (register, deregister, compaction). */
  local: 'local',
  /** An update received from a peer (gossip or sync). */
  remote: 'remote',
  /** A `/state/import`. */
  import: 'import',
  /** Replay from the data dir at start-up. */
  load: 'load',
  /** This controller putting back its own entries after a peer dropped its segment. */
  restore: 'restore'
} as const
export type Origin = typeof Origin[keyof typeof Origin]

export interface RegistryInit {
  /** This controller's id: the owner of everything it registers. */
  controllerId: string
  /** Rotate the own segment once dead entries exceed this fraction of live ones. @default 0.5 */
  segmentGarbageRatio?: number
  /** ... and at least this many. @default 256 */
  segmentMinGarbage?: number
  /** Lifetime of a non-owner tombstone (ms, wall clock, only for cleanup). @default 600000 */
  tombstoneTtlMs?: number
  /** Wall clock (ms), injectable for tests. @default Date.now */
  now?: () => number
  /**
   * Signs this controller's segments and says whose seals to trust; `false`
   * writes no seals and checks none (only for benchmarks measuring what
   * seals cost: a mesh must not mix the two). @default a fresh in-memory key
   * that trusts no other owner (a registry alone)
   */
  seals?: SealAuthority | false
}

/** One worker whose effective record changed. */
export interface WorkerChange {
  workerId: string
  before?: WorkerRecord
  after?: WorkerRecord
}

export interface RegistryEvents {
  /** The effective view changed (emitted synchronously at the end of each transaction). */
  change: [changes: WorkerChange[], origin: Origin]
  /** A Yjs update was applied or produced; persist or forward it. */
  update: [update: Uint8Array, origin: Origin]
  /** An entry or segment from a peer was ignored because it is malformed. */
  invalid: [reason: string]
  /** Entries of this controller that a peer dropped (it thought us gone) were written back. */
  republished: [entries: number]
  /** An update was refused whole: malformed, or (`unsigned`) changing a segment without its owner's seal. Not emitted for updates that are only out of order. */
  refused: [origin: Origin, unsigned: boolean, reason: string]
}

export interface RegisterInput {
  worker_id: string
  worker_url: string
  capabilities: Capability[]
  /** The worker's own attach counter; the registry never goes below what it has seen + 1. */
  incarnation?: number
  /** The identity registering it, recorded in the entry (see WorkerRecord.identity). @default none */
  identity?: string
}

export interface RegistryStats {
  /** Live workers in the effective view. */
  workers: number
  /** Segments in the document (all owners). */
  segments: number
  /** This controller's current segment key, if it has written one. */
  ownSegment: string | null
  /** Dead entries in the own segment since its generation started. */
  ownGarbage: number
  /** Generations this controller has rotated through since start. */
  compactions: number
}

/** Orders two entries for the same worker: > 0 when `a` wins. Pure data, same answer everywhere. */
export function compareEntries (a: Entry, b: Entry): number {
  if (a.incarnation !== b.incarnation) return a.incarnation - b.incarnation
  const ta = isTombstone(a) ? 1 : 0
  const tb = isTombstone(b) ? 1 : 0
  if (ta !== tb) return ta - tb
  if (a.owner !== b.owner) return a.owner < b.owner ? -1 : 1
  const ra = isTombstone(a) ? a.deleted_at : a.registered_at
  const rb = isTombstone(b) ? b.deleted_at : b.registered_at
  return ra - rb
}

const sameRecord = (a: WorkerRecord | undefined, b: WorkerRecord | undefined): boolean =>
  a === b || (a != null && b != null && a.owner === b.owner && a.incarnation === b.incarnation && a.registered_at === b.registered_at)

export class Registry extends EventEmitter<RegistryEvents> {
  readonly controllerId: string
  readonly doc: Y.Doc
  private readonly root: Y.Map<unknown>
  private readonly ratio: number
  private readonly minGarbage: number
  private readonly tombstoneTtlMs: number
  private readonly now: () => number

  /** Mirror of the document: segment key → worker id → entry (valid entries only). */
  private readonly segments = new Map<string, Map<string, Entry>>()
  /**
   * worker id → the segment holding its entry, or the segments when several
   * do (it failed over and the old entry is not cleaned up yet): a string for
   * almost every worker, not a Set each (~100 bytes a worker; see locate).
   */
  private readonly locations = new Map<string, string | Set<string>>()
  /** The effective registry: worker id → winning record (tombstoned workers absent). */
  private readonly view = new Map<string, WorkerRecord>()
  /**
   * Entries already parsed and checked, by the Yjs item that holds them, for
   * the transaction in progress: what this controller writes, and what
   * validateUpdate parsed out of a peer's update. The observer takes them
   * from here instead of parsing the same text again.
   */
  private parsed = new ParsedEntries()
  /** True while this controller's own snapshot is applied (applyUpdate `own`): its entries are parsed, not checked again. */
  private ownReplay = false
  /** Digest of each segment's live entries, and its seal. */
  private readonly digests = new Map<string, SegmentDigest>()
  private readonly seals: SealContext | null
  /** Own segments written in the local transaction in progress: resealed before it ends. */
  private readonly unsealed = new Set<string>()
  /**
   * The Yjs client id this run writes its seals with, apart from its entries'
   * (doc.clientID): every transaction replaces the seal, and with nothing else
   * on their client the replaced seals have consecutive clocks, so Yjs merges
   * them into one deleted item and one delete range. On the entries' client
   * each left an item and a range of its own in every delta, snapshot and
   * replica for ever (see docs/internals.md, "Owner-signed segments").
   */
  private sealClient = newClientId()
  /** The seal client's clock after this run's last seal: anything else there means another writer uses it. */
  private sealClock = 0
  /** Own segments replayed from the data dir: the only ones whose entries a new generation carries over. */
  private readonly loadedOwn = new Set<string>()
  private ownSegment: string | null = null
  /**
   * Workers whose entry here superseded another owner's (they failed over to
   * this controller): their deregistration leaves a tombstone even once that
   * owner's segment is no longer held here (dropped while it was cut off,
   * and put back when it is heard again). In memory: a restart forgets it.
   */
  private readonly movedHere = new Set<string>()
  /** Workers this controller wrote a tombstone for: kept through compaction and put back after a drop, for the tombstone TTL. */
  private readonly guarded = new Set<string>()
  private ownGarbage = 0
  private compactions = 0
  private cleanupQueued = false
  /** A sliced apply in progress (applyInSlices): the next one waits for it. */
  private slicing: Promise<unknown> = Promise.resolve()
  /** True while slices of a checked update are being applied: peers' updates wait (see validate). */
  private midSlices = false

  constructor (init: RegistryInit) {
    super()
    this.controllerId = init.controllerId
    this.ratio = init.segmentGarbageRatio ?? DEFAULT_SEGMENT_GARBAGE_RATIO
    this.minGarbage = init.segmentMinGarbage ?? DEFAULT_SEGMENT_MIN_GARBAGE
    this.tombstoneTtlMs = init.tombstoneTtlMs ?? DEFAULT_TOMBSTONE_TTL_MS
    this.now = init.now ?? Date.now
    this.doc = new Y.Doc({ gc: true })
    this.root = this.doc.getMap(ROOT)
    this.seals = init.seals === false
      ? null
      : { authority: init.seals ?? new SealDirectory().authority(init.controllerId), digestOf: key => this.digests.get(key) }
    this.root.observeDeep((events, tr) => { this.onEvents(events, tr) })
  }

  // ---------------------------------------------------------------- reads

  get size (): number { return this.view.size }

  get (workerId: string): WorkerRecord | undefined { return this.view.get(workerId) }

  workers (): IterableIterator<WorkerRecord> { return this.view.values() }

  /** Owner ids that hold at least one segment. */
  owners (): Set<string> {
    const out = new Set<string>()
    for (const key of this.segments.keys()) out.add(ownerOf(key))
    return out
  }

  stats (): RegistryStats {
    return {
      workers: this.view.size,
      segments: this.segments.size,
      ownSegment: this.ownSegment,
      ownGarbage: this.ownGarbage,
      compactions: this.compactions
    }
  }

  // ---------------------------------------------------------------- writes

  /**
   * Registers (or re-registers) a worker as owned by this controller. The
   * incarnation is the larger of what the worker sent and one more than any
   * incarnation this replica has seen for it, so the new attachment wins
   * here at once and wherever this update travels.
   */
  register (input: RegisterInput): WorkerRecord {
    return this.registerMany([input])[0]
  }

  /**
   * Registers several workers in one transaction: one seal of this
   * controller's segment and one update (persisted and gossiped) for all of
   * them, where registering them one by one signs once each. Every worker id
   * at most once (a second entry would overwrite the first in the same
   * write).
   */
  registerMany (inputs: readonly RegisterInput[]): WorkerRecord[] {
    if (inputs.length === 0) return []
    const now = this.now()
    const moved: string[] = []
    const records = inputs.map(input => {
      const known = this.maxIncarnation(input.worker_id)
      // Attached elsewhere before: an entry of another owner is here, or the worker names an
      // incarnation above any known here (its old owner's segment may have been dropped).
      if (this.hasForeignEntry(input.worker_id) || (input.incarnation ?? 0) > known + 1) moved.push(input.worker_id)
      const record: WorkerRecord = {
        worker_id: input.worker_id,
        worker_url: input.worker_url,
        capabilities: input.capabilities,
        incarnation: Math.max(input.incarnation ?? 0, known + 1),
        owner: this.controllerId,
        registered_at: now
      }
      if (input.identity != null) record.identity = input.identity
      return record
    })
    if (new Set(records.map(r => r.worker_id)).size !== records.length) throw new TypeError('registerMany: a worker id occurs twice')
    for (const id of moved) this.movedHere.add(id)
    for (const r of records) this.guarded.delete(r.worker_id)
    this.transact(() => {
      const seg = this.ownSegmentMap()
      for (const record of records) {
        if (seg.has(record.worker_id)) this.ownGarbage++
        this.put(seg, record)
      }
    }, Origin.local)
    this.maybeCompact()
    return records
  }

  /**
   * Takes over a worker known from another owner (it heartbeats here now):
   * the same registration, one incarnation higher (or the worker's own
   * `incarnation`, if higher still), owned by this controller.
   */
  adopt (workerId: string, incarnation?: number): WorkerRecord | undefined {
    const cur = this.view.get(workerId)
    if (cur == null) return undefined
    if (cur.owner === this.controllerId) return cur
    return this.register({ worker_id: cur.worker_id, worker_url: cur.worker_url, capabilities: cur.capabilities, incarnation, identity: cur.identity })
  }

  /**
   * Removes a worker. Its own entries are deleted; if another segment still
   * holds an entry for it (a stale attachment elsewhere), or may (the worker
   * failed over to this controller, and its old owner's segment may be one
   * this controller dropped), a tombstone is left so that entry cannot win
   * again. Returns false when the worker is unknown.
   */
  deregister (workerId: string): boolean {
    const locs = this.where(workerId)
    if (locs.length === 0) return false
    const known = this.view.has(workerId)
    const foreign = locs.some(k => ownerOf(k) !== this.controllerId) || this.movedHere.has(workerId)
    this.movedHere.delete(workerId)
    if (foreign) this.guarded.add(workerId)
    this.transact(() => {
      for (const key of locs) {
        if (ownerOf(key) !== this.controllerId) continue
        const seg = this.root.get(key)
        if (seg instanceof Y.Map && seg.has(workerId)) {
          this.remove(seg, workerId)
          if (key === this.ownSegment) this.ownGarbage++
        }
      }
      if (foreign) {
        const tomb: Tombstone = {
          worker_id: workerId,
          incarnation: this.maxIncarnation(workerId),
          owner: this.controllerId,
          deleted_at: this.now(),
          tombstone: true
        }
        const seg = this.ownSegmentMap()
        if (seg.has(workerId)) this.ownGarbage++
        this.put(seg, tomb)
      }
    }, Origin.local)
    this.maybeCompact()
    return known
  }

  /**
   * Deletes every segment of `owner` (a controller gone for longer than the
   * stale window). Safe when several controllers do it at once: deleting a
   * deleted key is a no-op, and a live owner simply republishes.
   */
  dropOwner (owner: string): number {
    if (owner === this.controllerId) return 0
    const keys = [...this.segments.keys()].filter(k => ownerOf(k) === owner)
    if (keys.length === 0) return 0
    this.transact(() => { for (const k of keys) this.root.delete(k) }, Origin.local)
    return keys.length
  }

  /**
   * Deletes every segment of another owner whose seal is not by the signer
   * now admitted for that owner (the owner left the allow list, or came back
   * with a new peer id): what no admitted key vouches for is not routed to.
   * Returns the segments deleted.
   */
  dropUnadmitted (): number {
    const seals = this.seals
    if (seals == null) return 0
    const keys = [...this.digests].filter(([key, d]) => {
      const owner = ownerOf(key)
      return owner !== this.controllerId && d.seal != null && d.seal.signer !== seals.authority.signerOf(owner)
    }).map(([key]) => key)
    if (keys.length > 0) this.transact(() => { for (const k of keys) this.root.delete(k) }, Origin.local)
    return keys.length
  }

  /** Rotates the own segment when it carries enough garbage. Returns true if it did. */
  maybeCompact (): boolean {
    const live = this.ownSegment == null ? 0 : (this.segments.get(this.ownSegment)?.size ?? 0)
    if (this.ownGarbage < Math.max(this.minGarbage, this.ratio * live)) return false
    this.compact()
    return true
  }

  /**
   * Writes this controller's live entries into a new generation and deletes
   * all of its older segments, in one transaction. Entries superseded by
   * another owner and expired tombstones are dropped on the way.
   */
  compact (): void {
    const keep = this.ownLiveEntries(this.ownSegment == null ? this.loadedOwn : [this.ownSegment])
    const old = [...this.segments.keys()].filter(k => ownerOf(k) === this.controllerId)
    this.transact(() => {
      const key = newSegmentKey(this.controllerId, this.now())
      // Into the document first, so that each entry written has its item (see put).
      const seg = this.root.set(key, new Y.Map<unknown>())
      for (const e of keep) this.put(seg, e)
      for (const k of old) this.root.delete(k)
      this.ownSegment = key
      this.loadedOwn.clear()
    }, Origin.local)
    this.ownGarbage = 0
    this.compactions++
  }

  // ------------------------------------------------------- sync and export

  /** The whole document as one Yjs update. */
  encodeState (): Uint8Array { return Y.encodeStateAsUpdate(this.doc) }

  encodeStateVector (): Uint8Array { return Y.encodeStateVector(this.doc) }

  /** What a peer with state vector `sv` is missing. */
  encodeDiff (sv: Uint8Array): Uint8Array { return Y.encodeStateAsUpdate(this.doc, sv) }

  /**
   * encodeState (or, with `sv`, encodeDiff) in the pieces Yjs encodes it in,
   * not joined into one buffer: for what is only written out (snapshot,
   * export, sync delta), which then holds the update once (see chunks.ts).
   */
  encodePieces (sv?: Uint8Array): Uint8Array[] { return encodeUpdatePieces(this.doc, sv) }

  /** Throws InvalidStateError unless `sv` is a well-formed state vector. */
  checkStateVector (sv: Uint8Array): void {
    try {
      Y.decodeStateVector(sv)
    } catch (err) {
      throw new InvalidStateError(`malformed state vector: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Merges an update from a peer, an import or the data dir. It is checked
   * first (validateUpdate); a malformed update throws InvalidStateError and
   * changes nothing. Merging is idempotent and order-independent. True if
   * it changed the document.
   *
   * `own`: the update is this controller's own snapshot, as it wrote it (the
   * store verified its MAC, store.ts): every part of it was checked when it
   * came in, so it is applied unchecked, and its entries are parsed without
   * the schema check (parseOwnEntry). Segments sealed by a key no longer
   * admitted are the caller's to drop (dropUnadmitted). Only for Origin.load.
   */
  applyUpdate (update: Uint8Array, origin: Origin, opts: { validated?: ValidUpdate, own?: boolean } = {}): boolean {
    if (this.midSlices) throw this.busyError()
    if (opts.own === true && origin !== Origin.load) throw new TypeError('applyUpdate: only a replay of the data dir may be applied unchecked')
    // `validated`: the caller checked it already (the gossip validator); again if the document moved since.
    const valid = opts.own === true ? null : opts.validated != null && stillValid(opts.validated, this.seals) ? opts.validated : this.validate(update, origin)
    // Nothing this replica lacks (a second copy of a delta): Yjs would decode it all to skip it all.
    if (valid?.news === false) return false
    this.parsed = valid?.entries ?? new ParsedEntries()
    let changed = false
    const seen = (tr: Y.Transaction): void => { changed = transactionChanged(tr) }
    this.doc.on('afterTransaction', seen)
    this.ownReplay = valid == null
    try {
      Y.applyUpdate(this.doc, update, origin)
      if (valid != null) adoptPreviews(valid)
    } catch (err) {
      throw new InvalidStateError(`update could not be applied: ${(err as Error).message}`, { cause: err })
    } finally {
      this.doc.off('afterTransaction', seen)
      this.parsed = new ParsedEntries()
      this.ownReplay = false
    }
    // The bytes as received are what the store logs: replaying them rebuilds the same state, and
    // having Yjs re-encode a 1 MB delta after a heal would cost more than applying it. An update
    // that brought nothing new (every exchange carries the whole delete set) is not logged again.
    if (changed) this.emit('update', update, origin)
    return changed
  }

  /**
   * applyUpdate for updates that may be large (a catch-up, an import): one
   * over APPLY_IN_SLICES_BYTES is checked whole, handed to the `update`
   * listeners whole (the store logs it as one record, so a crash leaves all
   * of it or none), then applied in slices with a turn of the event loop
   * between them (slices.ts). Meanwhile peers' updates are refused as out of
   * order (MissingDependencyError: gossip drops them without blame and
   * anti-entropy brings them later), local writes go ahead, and further
   * sliced applies wait their turn. Resolves true if it changed the document.
   * `sliceStructs` and `minBytes` (tests) override APPLY_SLICE_STRUCTS and
   * APPLY_IN_SLICES_BYTES.
   */
  async applyInSlices (update: Uint8Array, origin: Origin, opts: { sliceStructs?: number, minBytes?: number } = {}): Promise<boolean> {
    const turn = this.slicing.then(async () => {
      if (update.length <= (opts.minBytes ?? APPLY_IN_SLICES_BYTES)) return this.applyUpdate(update, origin)
      this.midSlices = true
      try {
        let valid = await this.validateAsync(update, origin)
        // Local writes went on meanwhile (peers' waited): check again, at once, if one touched what it read.
        if (!stillValid(valid, this.seals)) valid = this.validate(update, origin, true)
        if (!valid.news) return false
        this.emit('update', update, origin)
        for (const slice of sliceUpdate(valid.decoded, opts.sliceStructs ?? APPLY_SLICE_STRUCTS, update)) {
          await nextTurn()
          this.parsed = valid.entries
          try {
            Y.applyUpdate(this.doc, slice, origin)
          } finally {
            this.parsed = new ParsedEntries()
          }
        }
        adoptPreviews(valid)
      } finally {
        this.midSlices = false
      }
      return true
    })
    this.slicing = turn.catch(() => {})
    return await turn
  }

  /** Whether a sliced apply is in progress (peers' updates wait for it). */
  get applyingSlices (): boolean { return this.midSlices }

  private busyError (): MissingDependencyError {
    return new MissingDependencyError('a large update is being applied in slices; this one must wait for it')
  }

  /**
   * Checks an update against this document without applying it
   * (validateUpdate, seals included). Throws what it found wrong; a refusal
   * other than a missing dependency is also emitted as `refused`.
   */
  validate (update: Uint8Array, origin: Origin, mine = false): ValidUpdate {
    // Mid-slices, the document holds part of a checked update: a check against it would be wrong.
    if (this.midSlices && !mine) throw this.busyError()
    try {
      return validateUpdate(update, this.doc, this.seals)
    } catch (err) {
      this.refusing(err, origin)
      throw err
    }
  }

  private async validateAsync (update: Uint8Array, origin: Origin): Promise<ValidUpdate> {
    try {
      return await validateUpdateAsync(update, this.doc, this.seals)
    } catch (err) {
      this.refusing(err, origin)
      throw err
    }
  }

  private refusing (err: unknown, origin: Origin): void {
    if (err instanceof InvalidStateError && !(err instanceof MissingDependencyError)) this.emit('refused', origin, err instanceof UnsignedWriteError, err.message)
  }

  // -------------------------------------------------------------- internals

  /** A local write: runs `fn` in one transaction and emits the update Yjs encodes for it. */
  private transact (fn: () => void, origin: Origin): void {
    const updates: Array<[Uint8Array, Origin]> = []
    const grab = (u: Uint8Array, o: unknown): void => { updates.push([u, (o as Origin) ?? origin]) }
    // Listening only around local writes: Yjs encodes an update per transaction only while someone listens.
    this.doc.on('update', grab)
    try {
      this.doc.transact(() => {
        fn()
        this.seal()
      }, origin)
    } finally {
      this.doc.off('update', grab)
      this.parsed = new ParsedEntries()
      this.unsealed.clear()
    }
    for (const [u, o] of updates) this.emit('update', u, o)
  }

  /** Writes `e` into `seg` (integrated in the document) as its JSON text, remembering the parsed form and leaf for the observer. */
  private put (seg: Y.Map<unknown>, e: Entry): void {
    const text = encodeEntry(e)
    const leaf = entryLeaf(e.worker_id, text)
    seg.set(e.worker_id, text)
    const item = seg._map.get(e.worker_id)
    if (item != null) this.parsed.set(item.id, e, leaf)
    const key = segmentKeyOf(seg)
    this.digestOf(key).set(e.worker_id, leaf)
    this.unsealed.add(key)
  }

  /** Deletes worker `id`'s entry from own segment `seg`. */
  private remove (seg: Y.Map<unknown>, id: string): void {
    seg.delete(id)
    const key = segmentKeyOf(seg)
    this.digests.get(key)?.delete(id)
    this.unsealed.add(key)
  }

  private digestOf (key: string): SegmentDigest {
    let d = this.digests.get(key)
    if (d == null) this.digests.set(key, d = new SegmentDigest())
    return d
  }

  /** Seals every own segment the transaction in progress changed (called inside it, last). */
  private seal (): void {
    if (this.seals == null) this.unsealed.clear()
    for (const key of this.unsealed) {
      const seg = this.root.get(key)
      if (!(seg instanceof Y.Map)) continue
      const d = this.digestOf(key)
      const seal = makeSeal((this.seals as SealContext).authority, key, (d.seal?.seq ?? 0) + 1, d.root())
      this.writeSeal(seg, encodeSeal(seal))
      d.seal = seal
    }
    this.unsealed.clear()
  }

  /** Writes a seal under the seal client (see sealClient). */
  private writeSeal (seg: Y.Map<unknown>, text: string): void {
    // As Yjs does for its own client id: a seal client another writer has used (a collision, or a
    // copy of this run's items) is replaced by a fresh one, so this run's seals stay one run of clocks.
    if (Y.getState(this.doc.store, this.sealClient) !== this.sealClock || this.sealClient === this.doc.clientID) {
      do this.sealClient = newClientId()
      while (this.sealClient === this.doc.clientID || Y.getState(this.doc.store, this.sealClient) !== 0)
    }
    const entries = this.doc.clientID
    this.doc.clientID = this.sealClient
    try {
      seg.set(SEAL_KEY, text)
    } finally {
      this.doc.clientID = entries
    }
    this.sealClock = Y.getState(this.doc.store, this.sealClient)
  }

  private maxIncarnation (workerId: string): number {
    let max = 0
    for (const key of this.where(workerId)) {
      const e = this.segments.get(key)?.get(workerId)
      if (e != null && e.incarnation > max) max = e.incarnation
    }
    return max
  }

  /**
   * This run's segment, created at its first write: the live entries of the
   * own segments replayed from the data dir are carried over, and every other
   * segment of ours is deleted. Writing only where this run started keeps
   * each key's items one chain (no write ever branches off an item this
   * replica lacks), which is what peers check seals against.
   */
  private ownSegmentMap (): Y.Map<unknown> {
    if (this.ownSegment != null) {
      const seg = this.root.get(this.ownSegment)
      if (seg instanceof Y.Map) return seg
    }
    const carry = this.ownLiveEntries(this.loadedOwn)
    const old = [...this.segments.keys()].filter(k => ownerOf(k) === this.controllerId)
    const key = newSegmentKey(this.controllerId, this.now())
    const seg = this.root.set(key, new Y.Map<unknown>())
    this.ownSegment = key
    this.ownGarbage = 0
    this.loadedOwn.clear()
    for (const e of carry) this.put(seg, e)
    for (const k of old) this.root.delete(k)
    return seg
  }

  /** This controller's entries in segments `keys` that still matter: winning records and fresh tombstones. */
  private ownLiveEntries (keys: Iterable<string>): Entry[] {
    const from = new Set(keys)
    const out: Entry[] = []
    const cutoff = this.now() - this.tombstoneTtlMs
    const seen = new Set<string>()
    for (const key of from) {
      const seg = this.segments.get(key)
      if (seg == null || ownerOf(key) !== this.controllerId) continue
      for (const id of seg.keys()) {
        if (seen.has(id)) continue
        seen.add(id)
        const best = this.bestOwnEntry(id, from)
        if (best == null) continue
        if (isTombstone(best)) {
          if (this.tombstoneGuards(best, cutoff)) out.push(best)
        } else if (sameRecord(this.view.get(id), best)) {
          out.push(best)
        }
      }
    }
    return out
  }

  private bestOwnEntry (workerId: string, among?: Set<string>): Entry | undefined {
    const locs = this.locations.get(workerId)
    if (locs == null || (typeof locs === 'string' && ownerOf(locs) !== this.controllerId)) return undefined
    let best: Entry | undefined
    for (const key of this.where(workerId)) {
      if (ownerOf(key) !== this.controllerId || (among != null && !among.has(key))) continue
      const e = this.segments.get(key)?.get(workerId)
      if (e != null && (best == null || compareEntries(e, best) > 0)) best = e
    }
    return best
  }

  /**
   * Whether a tombstone still has an entry to hide: it is younger than the
   * tombstone TTL, and another owner holds an entry of the worker, or may
   * (this controller wrote it for a worker that had failed over here: the
   * old owner's segment may have been dropped here while that owner was cut
   * off, and comes back when it is heard again).
   */
  private tombstoneGuards (t: Tombstone, cutoff = this.now() - this.tombstoneTtlMs): boolean {
    if (t.deleted_at < cutoff) {
      this.guarded.delete(t.worker_id)
      return false
    }
    return (t.owner === this.controllerId && this.guarded.has(t.worker_id)) || this.hasForeignEntry(t.worker_id)
  }

  private hasForeignEntry (workerId: string): boolean {
    for (const key of this.where(workerId)) if (ownerOf(key) !== this.controllerId) return true
    return false
  }

  private onEvents (events: Array<Y.YEvent<any>>, tr: Y.Transaction): void {
    const touched = new Set<string>()
    const fresh = new Set<string>()
    // Root events first: whole segments added or removed. Content of a
    // segment created in this transaction is read here, because Yjs does not
    // emit events for types created in the same transaction.
    const byPeer = tr.origin !== Origin.local && tr.origin !== Origin.restore
    let stray = false
    for (const ev of events) {
      if (ev.target !== this.root) continue
      for (const [key, change] of ev.changes.keys) {
        if (change.action === 'delete' || change.action === 'update') this.dropSegment(key, touched, byPeer)
        if (change.action === 'add' || change.action === 'update') {
          this.readSegment(key, touched)
          fresh.add(key)
          if (ownerOf(key) === this.controllerId && key !== this.ownSegment) {
            if (tr.origin === Origin.load) this.loadedOwn.add(key)
            else if (byPeer && this.ownSegment != null) stray = true
          }
        }
      }
    }
    if (stray) this.queueStrayCleanup()
    for (const ev of events) {
      if (ev.target === this.root) continue
      const key = ev.path[0]
      if (typeof key !== 'string' || fresh.has(key)) continue
      if (ev.path.length !== 1) {
        this.emit('invalid', `nested type below segment ${key} ignored`)
        continue
      }
      const mirror = this.segments.get(key)
      if (mirror == null) continue
      const seg = ev.target as Y.Map<unknown>
      // The keys changed, read from the map as it is now: not `ev.changes.keys`, for which Yjs works
      // out an action and old value per key (a slice of an import changes thousands).
      for (const id of (ev as Y.YMapEvent<unknown>).keysChanged) {
        if (id == null) continue
        if (id === SEAL_KEY) {
          this.readSeal(key, seg)
          continue
        }
        this.unlocate(id, key, mirror)
        const item = seg._map.get(id)
        // The digest's leaf is replaced where the entry is (one change of it, none for this
        // controller's own writes, which put() already recorded), and deleted where it is not.
        if (item == null || item.deleted || !this.locate(id, key, mirror, item)) this.digests.get(key)?.delete(id)
        touched.add(id)
      }
    }
    if (touched.size === 0) return
    const changes: WorkerChange[] = []
    let superseded = false
    for (const id of touched) {
      const before = this.view.get(id)
      const after = this.resolve(id)
      if (after == null) this.view.delete(id)
      else this.view.set(id, after)
      if (!sameRecord(before, after)) changes.push({ workerId: id, before, after })
      if (after != null && after.owner !== this.controllerId && this.bestOwnEntry(id) != null) superseded = true
    }
    if (superseded) this.queueCleanup()
    if (changes.length > 0) this.emit('change', changes, (tr.origin as Origin) ?? Origin.local)
  }

  /** Own entries that lost to a newer attachment elsewhere are deleted soon after (outside the observer). */
  private queueCleanup (): void {
    if (this.cleanupQueued) return
    this.cleanupQueued = true
    queueMicrotask(() => {
      this.cleanupQueued = false
      const stale: Array<[string, string]> = []
      for (const [key, seg] of this.segments) {
        if (ownerOf(key) !== this.controllerId) continue
        for (const [id, e] of seg) {
          const win = this.view.get(id)
          if (!isTombstone(e) && win != null && win.owner !== this.controllerId && compareEntries(win, e) > 0) stale.push([key, id])
        }
      }
      if (stale.length === 0) return
      for (const [, id] of stale) this.movedHere.delete(id)
      this.transact(() => {
        for (const [key, id] of stale) {
          const seg = this.root.get(key)
          if (seg instanceof Y.Map) this.remove(seg, id)
          if (key === this.ownSegment) this.ownGarbage++
        }
      }, Origin.local)
      this.maybeCompact()
    })
  }

  private readSegment (key: string, touched: Set<string>): void {
    const value = this.root.get(key)
    if (!SEGMENT_KEY.test(key) || !(value instanceof Y.Map)) {
      this.emit('invalid', `segment ${JSON.stringify(key).slice(0, 80)} ignored: not a capmesh segment`)
      return
    }
    const mirror = new Map<string, Entry>()
    this.segments.set(key, mirror)
    // A digest already there is the one this controller's own transaction filled (put) while
    // creating the segment: it holds these entries already. One replayed from this controller's
    // own snapshot is filled from the segment when first needed.
    if (!this.digests.has(key)) this.digests.set(key, this.ownReplay ? SegmentDigest.deferred(() => leavesOf(value, mirror)) : new SegmentDigest())
    for (const [id, item] of value._map) {
      if (item.deleted || id === SEAL_KEY) continue
      this.locate(id, key, mirror, item)
      touched.add(id)
    }
    this.readSeal(key, value)
  }

  private readSeal (key: string, seg: Y.Map<unknown>): void {
    const d = this.digests.get(key)
    if (d == null) return
    const item = seg._map.get(SEAL_KEY)
    // The seal as the check parsed it, if it came in the update being applied.
    const parsed = item == null || item.deleted ? undefined : this.parsed.sealAt(item.id.client, item.id.clock + item.length - 1)
    d.seal = parsed ?? decodeSeal(seg.get(SEAL_KEY))
  }

  /**
   * Segments of ours from elsewhere (a copy of an old generation, or one our
   * lost data dir had) once this run has its own: deleted, entries and all.
   */
  private queueStrayCleanup (): void {
    queueMicrotask(() => {
      const stray = [...this.segments.keys()].filter(k => ownerOf(k) === this.controllerId && k !== this.ownSegment)
      if (stray.length === 0 || this.ownSegment == null) return
      this.transact(() => { for (const k of stray) this.root.delete(k) }, Origin.local)
    })
  }

  private dropSegment (key: string, touched: Set<string>, byPeer: boolean): void {
    const mirror = this.segments.get(key)
    if (mirror == null) return
    for (const id of mirror.keys()) {
      this.unlocateKey(id, key)
      touched.add(id)
    }
    this.segments.delete(key)
    this.digests.delete(key)
    this.loadedOwn.delete(key)
    if (key === this.ownSegment) {
      this.ownSegment = null
      this.ownGarbage = 0
    }
    // A peer dropped one of our segments (it thought us gone): put back what we still own.
    if (byPeer && ownerOf(key) === this.controllerId && mirror.size > 0) this.queueRepublish(mirror)
  }

  private queueRepublish (lost: Map<string, Entry>): void {
    queueMicrotask(() => {
      // Only what would still win: not what a tombstone or a newer attachment has since superseded.
      // Tombstones too, while they guard against an older entry: without them a deregistration made
      // during a partition was lost with the dropped segment, and the older owner's entry came back.
      const back = [...lost.values()].filter(e => {
        const win = this.winner(e.worker_id)
        return (win == null || compareEntries(e, win) > 0) && (!isTombstone(e) || this.tombstoneGuards(e))
      })
      if (back.length === 0) return
      this.transact(() => {
        const seg = this.ownSegmentMap()
        for (const e of back) this.put(seg, e)
      }, Origin.restore)
      this.emit('republished', back.length)
    })
  }

  /** Mirrors the entry held by `item` (the live item of key `id` in segment `key`). False if it is malformed (ignored). */
  private locate (id: string, key: string, mirror: Map<string, Entry>, item: Y.Item): boolean {
    const client = item.id.client
    const clock = item.id.clock + item.length - 1
    const parsed = this.parsed.at(client, clock)
    const text = item.content.getContent()[item.length - 1]
    const entry = parsed ?? (this.ownReplay ? parseOwnEntry(text) : decodeEntry(text))
    if (entry == null || entry.worker_id !== id || entry.owner !== ownerOf(key) || typeof text !== 'string') {
      this.emit('invalid', `entry ${JSON.stringify(id).slice(0, 80)} in segment ${key} ignored: malformed`)
      return false
    }
    // One string object for the worker id in every map keyed by it (here, the router, liveness):
    // hashed once, held once.
    entry.worker_id = id
    mirror.set(id, entry)
    const d = this.digests.get(key)
    // A deferred digest reads the leaves from the segment when first used: no leaf computed now.
    if (d != null) d.set(id, d.deferred ? '' : (parsed != null ? this.parsed.leafAt(client, clock) : undefined) ?? entryLeaf(id, text))
    const locs = this.locations.get(id)
    if (locs == null) this.locations.set(id, key)
    else if (typeof locs !== 'string') locs.add(key)
    else if (locs !== key) this.locations.set(id, new Set([locs, key]))
    return true
  }

  /** The segments holding an entry for worker `id`. */
  private where (id: string): string[] {
    const locs = this.locations.get(id)
    return locs == null ? [] : typeof locs === 'string' ? [locs] : [...locs]
  }

  private unlocateKey (id: string, key: string): void {
    const locs = this.locations.get(id)
    if (locs == null) return
    if (typeof locs === 'string') {
      if (locs === key) this.locations.delete(id)
      return
    }
    locs.delete(key)
    if (locs.size === 1) this.locations.set(id, locs.values().next().value as string)
    else if (locs.size === 0) this.locations.delete(id)
  }

  /** Forgets worker `id`'s entry in segment `key` (its digest leaf stays: see onEvents). */
  private unlocate (id: string, key: string, mirror: Map<string, Entry>): void {
    mirror.delete(id)
    this.unlocateKey(id, key)
  }

  /** The winning entry for a worker, tombstones included. */
  private winner (id: string): Entry | undefined {
    const locs = this.locations.get(id)
    // Almost every worker: one entry, no array of its segments.
    if (typeof locs === 'string') return this.segments.get(locs)?.get(id)
    let best: Entry | undefined
    for (const key of this.where(id)) {
      const e = this.segments.get(key)?.get(id)
      if (e != null && (best == null || compareEntries(e, best) > 0)) best = e
    }
    return best
  }

  private resolve (id: string): WorkerRecord | undefined {
    const best = this.winner(id)
    return best == null || isTombstone(best) ? undefined : best
  }
}

/** The leaf of each entry `mirror` holds, from its text in segment map `seg`. */
function * leavesOf (seg: Y.Map<unknown>, mirror: Map<string, Entry>): Generator<[string, string]> {
  for (const id of mirror.keys()) {
    const item = seg._map.get(id)
    if (item == null) continue
    yield [id, entryLeaf(id, item.content.getContent()[item.length - 1] as string)]
  }
}

/** Whether a transaction added or deleted anything (Yjs records only what is new to this document). */
function transactionChanged (tr: Y.Transaction): boolean {
  if (tr.deleteSet.clients.size > 0) return true
  if (tr.afterState.size !== tr.beforeState.size) return true
  for (const [client, clock] of tr.afterState) if (tr.beforeState.get(client) !== clock) return true
  return false
}

/** Dead keys a segment still carries (deleted entries keep their key in the document). */
function countGarbage (seg: Y.Map<any>): number {
  let n = 0
  for (const item of seg._map.values()) if (item.deleted) n++
  return n
}

/** The key under which segment map `seg` is stored in the root map. */
function segmentKeyOf (seg: Y.Map<unknown>): string {
  const key = seg._item?.parentSub
  if (key == null) throw new Error('a segment map outside the registry')
  return key
}

/** A random 32-bit Yjs client id, as Yjs draws its own. */
function newClientId (): number {
  return randomBytes(4).readUInt32BE(0)
}

/** `<owner>/<time base36>.<random hex>`: sortable by creation time, unique across restarts. */
function newSegmentKey (owner: string, now: number): string {
  return `${owner}/${now.toString(36).padStart(9, '0')}.${randomBytes(4).toString('hex')}`
}
