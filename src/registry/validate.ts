/**
 * Validation of a peer's Yjs update before it touches the document. Yjs would
 * merge anything that decodes, so an update is walked item by item first:
 * each must land in a segment map under a valid key, or be a well-formed
 * entry of that segment's owner. A malformed update is refused whole
 * (InvalidStateError); one that builds on content this replica lacks yet is a
 * MissingDependencyError, out of order rather than malformed.
 *
 * Then the seals (seal.ts): for every segment the update touches, the state
 * it would leave the segment in is computed — which entry each key ends up
 * holding, which are removed — and must be one its owner signed. Only the
 * owner writes its segments, one transaction after another, so each key's
 * items form one chain (each item's origin the key's previous item); an
 * update that branches a chain, or changes a segment without a matching
 * seal, is an UnsignedWriteError and is refused whole. The only cross-owner
 * write left is deleting a whole segment (an owner gone for the stale window).
 *
 * The entries parsed on the way, with their leaves, go to the Registry, which
 * does not parse or hash them again.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import * as Y from 'yjs'
import { InvalidStateError } from '../errors.ts'
import { ROOT, SEGMENT_KEY, ownerOf } from './keys.ts'
import { decodeEntry, type Entry } from './schema.ts'
import { DigestMovedError, SEAL_KEY, SegmentDigest, UnsignedWriteError, decodeSeal, entryLeaf, sealProblem, type DigestPreview, type Seal, type SealAuthority } from './seal.ts'

/** An update that builds on content this replica does not have (yet): not malformed, not applicable. */
export class MissingDependencyError extends InvalidStateError {
  constructor (message: string) {
    super(message)
    this.name = 'MissingDependencyError'
  }
}

/** Clock gap past which a client's parsed entries go to a map rather than into its arrays. */
const RUN_GAP = 4096

/**
 * One client's parsed entries, in arrays indexed by clock from `base` (an
 * update's items of one client come in clock order, nearly without gaps),
 * and in `spill` for a clock below `base` or far past the arrays' end.
 */
interface ClientRun {
  base: number
  entries: Array<Entry | undefined>
  leaves: Array<string | undefined>
  spill: Map<number, [Entry, string | undefined]> | null
}

/**
 * Entries (and seals) parsed from their text, and their leaves (seal.ts)
 * once computed, by the Yjs item (client, clock) that holds them. Arrays per
 * client, not a map entry and an object per entry: a 100,000-worker
 * catch-up or import parses 100,000.
 */
export class ParsedEntries {
  private readonly byClient = new Map<number, ClientRun>()
  /** Seals by the (client, clock) of their item. */
  private readonly seals = new Map<number, Map<number, Seal>>()
  // Almost every entry of an update comes from one client (its owner's): skip the outer look-up.
  private lastClient = -1
  private lastRun: ClientRun | undefined

  set (id: Y.ID, entry: Entry, leaf?: string): void {
    this.put(id.client, id.clock, entry, leaf)
  }

  /** set() without an ID object. */
  put (client: number, clock: number, entry: Entry, leaf?: string): void {
    let run = this.runOf(client)
    if (run == null) this.byClient.set(client, this.lastRun = run = { base: clock, entries: [], leaves: [], spill: null })
    const i = clock - run.base
    if (i < 0 || i > run.entries.length + RUN_GAP) {
      (run.spill ??= new Map()).set(clock, [entry, leaf])
      return
    }
    while (run.entries.length < i) {
      run.entries.push(undefined)
      run.leaves.push(undefined)
    }
    run.entries[i] = entry
    run.leaves[i] = leaf
  }

  /** The entry held by the item element (client, clock), if parsed. */
  at (client: number, clock: number): Entry | undefined {
    const run = this.runOf(client)
    if (run == null) return undefined
    const i = clock - run.base
    return i >= 0 && i < run.entries.length ? run.entries[i] : run.spill?.get(clock)?.[0]
  }

  /** Its leaf, once computed. */
  leafAt (client: number, clock: number): string | undefined {
    const run = this.runOf(client)
    if (run == null) return undefined
    const i = clock - run.base
    return i >= 0 && i < run.entries.length ? run.leaves[i] : run.spill?.get(clock)?.[1]
  }

  /** Records the leaf of a parsed entry (none parsed there: nothing). */
  setLeaf (client: number, clock: number, leaf: string): void {
    const run = this.runOf(client)
    if (run == null) return
    const i = clock - run.base
    if (i >= 0 && i < run.entries.length) {
      if (run.entries[i] !== undefined) run.leaves[i] = leaf
      return
    }
    const spilt = run.spill?.get(clock)
    if (spilt != null) spilt[1] = leaf
  }

  setSeal (client: number, clock: number, seal: Seal): void {
    let clocks = this.seals.get(client)
    if (clocks == null) this.seals.set(client, clocks = new Map())
    clocks.set(clock, seal)
  }

  sealAt (client: number, clock: number): Seal | undefined {
    return this.seals.get(client)?.get(clock)
  }

  private runOf (client: number): ClientRun | undefined {
    if (client !== this.lastClient) {
      this.lastClient = client
      this.lastRun = this.byClient.get(client)
    }
    return this.lastRun
  }
}

/** What validateUpdate found: the entries it parsed, for applyUpdate to reuse. */
export interface ValidUpdate {
  entries: ParsedEntries
  /**
   * The segments the seal checks read, each with its digest's stamp then:
   * the verdict holds while they are unchanged (see `stillValid`).
   */
  read: Array<[segment: string, digest: SegmentDigest | undefined, stamp: number]>
  /** The update decoded (what slices.ts cuts it from). */
  decoded: ReturnType<typeof Y.decodeUpdate>
  /** Whether it brings anything this replica lacks: a struct, or the deletion of a live item. */
  news: boolean
  /** The seal checks' previews of the digests the update changes: once it is applied, they hold the hashes of the new state. */
  previews: DigestPreview[]
}

/**
 * After `valid`'s update is applied: each digest it changed takes the
 * hashes its check computed, where its leaves are exactly the ones the
 * check previewed (SegmentDigest.adopt), so the state is not hashed twice.
 */
export function adoptPreviews (valid: ValidUpdate): void {
  for (const p of valid.previews) p.base.adopt(p)
}

/** Whether a check made earlier still holds: no segment it read has changed since. */
export function stillValid (valid: ValidUpdate, seals: SealContext | null): boolean {
  if (seals == null) return true
  for (const [segment, digest, stamp] of valid.read) {
    if (seals.digestOf(segment) !== digest || (digest != null && digest.stamp !== stamp)) return false
  }
  return true
}

/** What the seal checks need from the registry: who signs what, and the digests of the segments it holds. */
export interface SealContext {
  authority: SealAuthority
  /** The digest (live entries' leaves and current seal) of a segment the document holds, if it holds it. */
  digestOf: (segment: string) => SegmentDigest | undefined
}

/** One segment map's part of an update: whether it creates or deletes it, what it writes and removes. */
interface SegmentWork {
  segment: string
  /** The map's item, when the update creates it. */
  created?: Y.Item
  deleted: boolean
  /** New items at keys of this segment, by key: one item (most keys of a delta), or several in update order. */
  items: Map<string, Y.Item | Y.Item[]>
  /** Keys whose current item in the document the update deletes. */
  removed: Set<string>
}

/** Where an item of an update lands. */
type Place =
  | { kind: 'root', key: string }
  /** `map`: which segment map (its item's id), as one key may name a deleted map and a live one. */
  | { kind: 'segment', segment: string, map: string, key: string }
  | { kind: 'collected' }
  | { kind: 'missing' }
  | { kind: 'invalid', why: string }

/**
 * Checks an update without applying it: it must decode, and every item must
 * land in the `segments` map under a valid segment key as a Y.Map (a
 * segment), or inside a segment as a valid entry stored under its own
 * worker id by its segment's owner (or be a deletion). Items that overwrite
 * an existing key carry no parent in the encoding; their place is found
 * through their origin, in the update itself or in `doc`. Anything else —
 * other root types, text, binary, sub-documents, maps inside segments — is
 * an InvalidStateError naming what was wrong; an item that builds on content
 * `doc` does not have is a MissingDependencyError. With `seals`, every
 * segment the update changes must end in a state its owner sealed
 * (UnsignedWriteError otherwise); `null` skips that check, for tools that
 * read a document without trusting it.
 */
export function validateUpdate (update: Uint8Array, doc: Y.Doc | undefined, seals: SealContext | null): ValidUpdate {
  const steps = validationSteps(update, doc, seals)
  for (;;) {
    const r = steps.next()
    if (r.done === true) return r.value
  }
}

/**
 * validateUpdate with a turn of the event loop every VALIDATE_STEP items, for
 * updates of a whole registry (~2 s of checking at 100,000 workers on a busy
 * 2-core machine). The caller keeps `doc` from changing meanwhile, or checks
 * the verdict with `stillValid` after.
 */
export async function validateUpdateAsync (update: Uint8Array, doc: Y.Doc | undefined, seals: SealContext | null): Promise<ValidUpdate> {
  const steps = validationSteps(update, doc, seals)
  try {
    for (;;) {
      const r = steps.next()
      if (r.done === true) return r.value
      await nextTurn()
    }
  } catch (err) {
    // A segment's digest moved between two turns, in the middle of its check: check again, in one go.
    if (err instanceof DigestMovedError) return validateUpdate(update, doc, seals)
    throw err
  }
}

/** Items checked between two turns of the event loop in validateUpdateAsync. */
const VALIDATE_STEP = 4096

function * validationSteps (update: Uint8Array, doc: Y.Doc | undefined, seals: SealContext | null): Generator<void, ValidUpdate> {
  const entries = new ParsedEntries()
  let decoded: ReturnType<typeof Y.decodeUpdate>
  try {
    decoded = Y.decodeUpdate(update)
  } catch (err) {
    throw new InvalidStateError(`not a Yjs update: ${(err as Error).message}`, { cause: err })
  }
  const byClient = new Map<number, Y.Item[]>()
  for (const s of decoded.structs) {
    if (!(s instanceof Y.Item)) continue
    let list = byClient.get(s.id.client)
    if (list == null) byClient.set(s.id.client, list = [])
    list.push(s)
  }
  // Structs come sorted by clock per client: binary search, so big updates stay O(n log n).
  const inUpdate = (id: Y.ID): Y.Item | undefined => {
    const list = byClient.get(id.client)
    if (list == null) return undefined
    let lo = 0
    let hi = list.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const s = list[mid]
      if (id.clock < s.id.clock) hi = mid - 1
      else if (id.clock >= s.id.clock + s.length) lo = mid + 1
      else return s
    }
    return undefined
  }
  const places = new Map<Y.Item, Place>()
  // Thousands of entries share a few segments: check each segment key, and find its owner, once.
  const segmentOwners = new Map<string, string | null>()
  const ownerOfSegment = (key: string): string | null => {
    let owner = segmentOwners.get(key)
    if (owner === undefined) segmentOwners.set(key, owner = SEGMENT_KEY.test(key) ? ownerOf(key) : null)
    return owner
  }

  /** Place of an item already in the document (integrated: its parent is a real type). */
  const placeInDoc = (id: Y.ID): Place => {
    if (doc == null || id.clock >= Y.getState(doc.store, id.client)) return { kind: 'missing' }
    let struct: Y.Item | Y.GC
    try {
      struct = Y.getItem(doc.store, id) as Y.Item | Y.GC
    } catch {
      return { kind: 'missing' }
    }
    if (!(struct instanceof Y.Item)) return { kind: 'collected' }
    const parent = struct.parent as Y.AbstractType<any> | null
    const key = struct.parentSub
    if (parent == null || key == null) return { kind: 'invalid', why: 'builds on content outside any map' }
    if (parent === doc.share.get(ROOT)) return { kind: 'root', key }
    const owner = parent._item
    if (owner != null && owner.parent === doc.share.get(ROOT) && owner.parentSub != null) return { kind: 'segment', segment: owner.parentSub, map: idKey(owner.id), key }
    return { kind: 'invalid', why: 'builds on content outside the registry' }
  }

  // The last parent placed, and its place and map key: the entries of a delta share a few parents
  // (their segment maps), so most are placed without a search, a lookup or a string built.
  let lastParent: { client: number, clock: number, place: Place, map: string } | null = null
  /** Where an entry lands when its parent is given: the common case, one per worker in a delta. */
  const placeUnder = (item: Y.Item, parent: Y.ID): Place => {
    let pp: Place
    let map: string
    if (lastParent != null && lastParent.client === parent.client && lastParent.clock === parent.clock) {
      pp = lastParent.place
      map = lastParent.map
    } else {
      const p = inUpdate(parent)
      pp = p != null ? placeOf(p) : placeInDoc(parent)
      map = idKey(parent)
      lastParent = { client: parent.client, clock: parent.clock, place: pp, map }
    }
    return pp.kind === 'root' && item.parentSub != null
      ? { kind: 'segment', segment: pp.key, map, key: item.parentSub }
      : pp.kind === 'missing' || pp.kind === 'collected' || pp.kind === 'invalid' ? pp : { kind: 'invalid', why: 'nested below a segment' }
  }

  const placeOf = (item: Y.Item): Place => {
    // An item with its parent given is placed from it (cheap, see placeUnder): not remembered, as a
    // map keyed by the item held every entry of a catch-up until its check ended.
    if (item.parent instanceof Y.ID) return placeUnder(item, item.parent)
    const known = places.get(item)
    if (known != null) return known
    // Walk the origin chain iteratively (an update may overwrite one key many times).
    const chain: Y.Item[] = []
    let cur: Y.Item | undefined = item
    let found: Place | undefined
    while (cur != null && found == null) {
      const known = places.get(cur)
      if (known != null) { found = known; break }
      chain.push(cur)
      const parent = cur.parent as unknown
      if (typeof parent === 'string') {
        found = parent !== ROOT
          ? { kind: 'invalid', why: `unknown root type "${parent.slice(0, 40)}"` }
          : cur.parentSub == null ? { kind: 'invalid', why: 'array content in the segments map' } : { kind: 'root', key: cur.parentSub }
      } else if (parent instanceof Y.ID) {
        found = placeUnder(cur, parent)
      } else {
        // No parent in the encoding: it lands where its origin (or right origin) is.
        const ref = cur.origin ?? cur.rightOrigin
        if (ref == null) { found = { kind: 'invalid', why: 'an item with neither parent nor origin' }; break }
        const r = inUpdate(ref)
        if (r == null) found = placeInDoc(ref)
        else cur = r
      }
    }
    const place = found ?? { kind: 'missing' }
    for (const c of chain) places.set(c, place)
    return place
  }

  // By segment map (its item's id), not by segment key.
  const work = new Map<string, SegmentWork>()
  const workOf = (map: string, segment: string): SegmentWork => {
    let w = work.get(map)
    if (w == null) work.set(map, w = { segment, deleted: false, items: new Map(), removed: new Set() })
    return w
  }
  // Items this replica has already: Yjs skips them, and so do the seal checks.
  const known = (id: Y.ID): boolean => doc != null && id.clock < Y.getState(doc.store, id.client)
  /** Items this replica holds the start of, each as the tail Yjs integrates (see tailOf), by the update's item. */
  const tails = new Map<Y.Item, Y.Item>()
  let news = false

  let step = 0
  for (let s of decoded.structs) {
    if (++step % VALIDATE_STEP === 0) yield
    if (!(s instanceof Y.Item)) {
      if (s instanceof Y.GC && !known(s.id)) news = true
      continue
    }
    // One this replica holds whole keeps the content it has, whatever the update says (Yjs skips it):
    // nothing to place or parse. A second exchange's copy of a heal's delta is all such items.
    const state = doc == null ? 0 : Y.getState(doc.store, s.id.client)
    if (s.id.clock + s.length <= state) continue
    // One it holds the start of: Yjs integrates the rest as an item of its own, which is what is checked.
    if (s.id.clock < state) {
      const tail = tailOf(s, state - s.id.clock)
      tails.set(s, tail)
      s = tail
    }
    const place = placeOf(s)
    if (place.kind === 'invalid') throw new InvalidStateError(place.why)
    if (place.kind === 'missing') throw new MissingDependencyError(`builds on content this replica does not have (item ${s.id.client}:${s.id.clock})`)
    if (place.kind === 'collected') continue
    const c = s.content
    news = true
    const fresh = seals != null
    if (c instanceof Y.ContentDeleted) {
      if (!fresh) continue
      if (place.kind === 'root') workOf(idKey(s.id), place.key).deleted = true
      else addItem(workOf(place.map, place.segment), place.key, s)
      continue
    }
    if (place.kind === 'root' && !SEGMENT_KEY.test(place.key)) throw new InvalidStateError(`invalid segment key ${JSON.stringify(place.key).slice(0, 80)}`)
    if (c instanceof Y.ContentType) {
      if (!(c.type instanceof Y.Map)) throw new InvalidStateError('only maps may be nested in the registry')
      if (place.kind !== 'root') throw new InvalidStateError('nested map below a segment')
      if (fresh) workOf(idKey(s.id), place.key).created = s
      continue
    }
    if (c instanceof Y.ContentAny) {
      if (place.kind !== 'segment') throw new InvalidStateError('plain value where a segment was expected')
      if (place.key === SEAL_KEY) {
        const seal = c.arr.length === 1 ? decodeSeal(c.arr[0]) : null
        if (seal == null) throw new InvalidStateError(`malformed seal in segment ${place.segment}`)
        entries.setSeal(s.id.client, s.id.clock, seal)
      } else {
        for (let i = 0; i < c.arr.length; i++) {
          const v = c.arr[i]
          const e = decodeEntry(v)
          if (e == null) throw new InvalidStateError(`malformed entry ${(typeof v === 'string' ? v : JSON.stringify(v) ?? String(v)).slice(0, 120)}`)
          if (e.worker_id !== place.key) throw new InvalidStateError(`entry for ${e.worker_id} stored under key ${place.key}`)
          const owner = ownerOfSegment(place.segment)
          if (owner != null && e.owner !== owner) throw new InvalidStateError(`entry of ${e.owner} in the segment of ${owner}`)
          entries.put(s.id.client, s.id.clock + i, e)
        }
      }
      if (fresh) addItem(workOf(place.map, place.segment), place.key, s)
      continue
    }
    throw new InvalidStateError(`unsupported content ${c.constructor.name}`)
  }
  const read: ValidUpdate['read'] = []
  const previews: DigestPreview[] = []
  const deletesLive = (): void => { news = true }
  if (seals == null) {
    if (!news) deletions(decoded.ds, byClient, doc, () => ({ segment: '', deleted: false, items: new Map(), removed: new Set() }), deletesLive)
  } else {
    const deletedInUpdate = deletions(decoded.ds, byClient, doc, workOf, deletesLive)
    for (const [whole, tail] of tails) if (deletedInUpdate.has(whole)) deletedInUpdate.add(tail)
    for (const [map, w] of work) {
      const base = seals.digestOf(w.segment)
      read.push([w.segment, base, base?.stamp ?? 0])
      const preview = yield * checkSegment(map, w, doc, seals, entries, deletedInUpdate)
      if (preview != null) previews.push(preview)
    }
  }
  return { entries, read, decoded, news, previews }
}

/**
 * Item `s` from element `offset` on, as Yjs integrates an item whose first `offset` elements this
 * replica holds: the same place, its origin the last element held. Its content is a copy: the
 * update's structs stay as decoded (slices.ts cuts them).
 */
function tailOf (s: Y.Item, offset: number): Y.Item {
  const content = s.content.copy().splice(offset)
  return new Y.Item(Y.createID(s.id.client, s.id.clock + offset), null, Y.createID(s.id.client, s.id.clock + offset - 1), null, s.rightOrigin, s.parent, s.parentSub, content)
}

function addItem (w: SegmentWork, key: string, item: Y.Item): void {
  // No array for a key written once: a 100,000-worker catch-up made 100,000 of them.
  const had = w.items.get(key)
  if (had == null) w.items.set(key, item)
  else if (Array.isArray(had)) had.push(item)
  else w.items.set(key, [had, item])
}

/** The live segment map under `key` in `doc`, if that is the map with item id `map`. */
function liveSegment (doc: Y.Doc | undefined, key: string, map: string): Y.Map<unknown> | undefined {
  const item = doc?.share.get(ROOT)?._map.get(key)
  if (item == null || item.deleted || idKey(item.id) !== map || !(item.content instanceof Y.ContentType)) return undefined
  return item.content.type as Y.Map<unknown>
}

const idKey = (id: Y.ID | null): string => id == null ? '-' : `${id.client}:${id.clock}`

/**
 * Walks the update's delete set: items of the update it deletes are
 * returned; items of `doc` it deletes are noted where they matter — a whole
 * segment, or the current item of a key in a segment.
 */
function deletions (ds: ReturnType<typeof Y.decodeUpdate>['ds'], inUpdate: Map<number, Y.Item[]>, doc: Y.Doc | undefined, workOf: (map: string, segment: string) => SegmentWork, deletesLive: () => void): Set<Y.Item> {
  const out = new Set<Y.Item>()
  const root = doc?.share.get(ROOT) as Y.Map<unknown> | undefined
  for (const [client, ranges] of ds.clients) {
    const mine = inUpdate.get(client) ?? []
    const structs = doc?.store.clients.get(client) ?? []
    const state = doc == null ? 0 : Y.getState(doc.store, client)
    for (const { clock, len } of ranges) {
      const end = clock + len
      // `mine` is sorted by clock: start at the first item that ends after `clock` (a scan from the
      // start made every catch-up quadratic when each registration's seal left a delete range).
      for (let i = firstEndingAfter(mine, clock); i < mine.length && mine[i].id.clock < end; i++) out.add(mine[i])
      if (clock >= state || structs.length === 0) continue
      for (let i = Y.findIndexSS(structs, clock); i < structs.length && structs[i].id.clock < end; i++) {
        const it = structs[i]
        if (!(it instanceof Y.Item) || it.deleted) continue
        deletesLive()
        if (it.parentSub == null) continue
        const parent = it.parent as Y.AbstractType<any> | null
        if (parent == null || parent._map.get(it.parentSub) !== it) continue
        if (parent === root) {
          workOf(idKey(it.id), it.parentSub).deleted = true
        } else {
          const seg = parent._item
          if (seg != null && seg.parent === root && seg.parentSub != null) workOf(idKey(seg.id), seg.parentSub).removed.add(it.parentSub)
        }
      }
    }
  }
  return out
}

/** The index of the first of `items` (sorted by clock, not overlapping) that ends after `clock`. */
function firstEndingAfter (items: Y.Item[], clock: number): number {
  let lo = 0
  let hi = items.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (items[mid].id.clock + items[mid].length <= clock) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * The state the update leaves `segment` in must be one its owner sealed.
 * Each key's new items must continue its chain one after another from the
 * document's current item (the way only a single writer produces them); the
 * last one is the key's new value.
 */
function * checkSegment (map: string, w: SegmentWork, doc: Y.Doc | undefined, seals: SealContext, entries: ParsedEntries, deletedInUpdate: Set<Y.Item>): Generator<void, DigestPreview | undefined> {
  const segment = w.segment
  if (w.deleted || (w.created != null && deletedInUpdate.has(w.created))) return
  const live = w.created != null ? undefined : liveSegment(doc, segment, map)
  // Items below a map this replica has deleted: Yjs integrates them deleted; nothing becomes routable.
  if (w.created == null && live == null) return
  const held = w.created != null ? undefined : seals.digestOf(segment)
  const base = held ?? new SegmentDigest()
  // Only real changes, filed by bucket as they are found (one pass, one look-up of the leaf held per
  // key): a key rewritten with the same text, or removed where it was absent, changes nothing.
  const changes = base.preview()
  let seal: Seal | null | undefined
  let step = 0
  for (const [key, items] of w.items) {
    if (++step % VALIDATE_STEP === 0) yield
    const tail = chainEnd(segment, key, items, live?._map.get(key))
    const gone = tail.deleted || tail.content instanceof Y.ContentDeleted || deletedInUpdate.has(tail)
    if (key === SEAL_KEY) {
      seal = gone ? null : entries.sealAt(tail.id.client, tail.id.clock) ?? decodeSeal((tail.content as Y.ContentAny).arr[0])
      continue
    }
    if (gone) {
      changes.change(key, null)
      continue
    }
    const arr = (tail.content as Y.ContentAny).arr
    const text = arr[arr.length - 1]
    if (typeof text !== 'string') throw new UnsignedWriteError(`entry ${key} in segment ${segment} is not stored as text, so it cannot be sealed`)
    const leaf = entryLeaf(key, text)
    entries.setLeaf(tail.id.client, tail.id.clock + arr.length - 1, leaf)
    changes.change(key, leaf)
  }
  for (const key of w.removed) {
    if (w.items.has(key)) continue
    if (key === SEAL_KEY) seal = null
    else changes.change(key, null)
  }
  if (changes.changes === 0 && seal === undefined) return
  const current = base.seal
  const after = seal === undefined ? current : seal
  if (after == null) {
    if (changes.entries > 0) throw new UnsignedWriteError(`segment ${segment} would hold ${changes.entries} entries without its owner's seal`)
    return
  }
  if (seal != null && current != null && seal.seq <= current.seq) throw new UnsignedWriteError(`segment ${segment}: seal ${seal.seq} is not newer than the seal ${current.seq} already held`)
  const problem = sealProblem(seals.authority, segment, ownerOf(segment), after, changes.root())
  if (problem != null) throw new UnsignedWriteError(`segment ${segment}: ${problem}`)
  return held != null && changes.changes > 0 ? changes : undefined
}

/** The last of a key's new items, checking they continue the key's chain one after another from `current`. */
function chainEnd (segment: string, key: string, written: Y.Item | Y.Item[], current: Y.Item | undefined): Y.Item {
  const refused = (): UnsignedWriteError => new UnsignedWriteError(`writes to ${JSON.stringify(key).slice(0, 80)} in segment ${segment} do not follow one another from its current entry: only its owner writes there, one transaction after another`)
  // One new item (a key's first write, or one rewrite): no map of origins needed. Most keys of a catch-up.
  if (!Array.isArray(written)) {
    if (written.rightOrigin != null || !follows(written, current)) throw refused()
    return written
  }
  const items = written
  // The owner's items of one key come in update order, which is clock order within its client: a
  // chain is then checked in one pass, with no map (the seal key gets an item per transaction).
  let prev = current
  let inOrder = true
  for (const it of items) {
    if (it.rightOrigin != null) throw refused()
    if (inOrder && !follows(it, prev)) inOrder = false
    prev = it
  }
  if (inOrder) return items[items.length - 1]
  const byOrigin = new Map<string, Y.Item>()
  for (const it of items) {
    const k = idKey(it.origin)
    if (byOrigin.has(k)) throw refused()
    byOrigin.set(k, it)
  }
  let end: Y.Item | undefined
  let count = 0
  for (let next = byOrigin.get(current == null ? '-' : lastIdKey(current)); next != null && count <= items.length; next = byOrigin.get(lastIdKey(next))) {
    end = next
    count++
  }
  if (end == null || count !== items.length) throw refused()
  return end
}

/** Whether `item`'s origin is the last element of `prev` (or it has none, when `prev` is none): the next link of a chain. */
function follows (item: Y.Item, prev: Y.Item | undefined): boolean {
  const o = item.origin
  return prev == null ? o == null : o != null && o.client === prev.id.client && o.clock === prev.id.clock + prev.length - 1
}

const lastIdKey = (item: Y.Item): string => `${item.id.client}:${item.id.clock + item.length - 1}`
