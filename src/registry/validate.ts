/**
 * Validation of a peer's Yjs update before it touches the document. Yjs would
 * merge anything that decodes, so an update is walked item by item first:
 * each must land in a segment map under a valid key, or be a well-formed
 * entry of that segment's owner. A malformed update is refused whole
 * (InvalidStateError); one that builds on content this replica lacks yet is a
 * MissingDependencyError, out of order rather than malformed. The entries
 * parsed on the way go to the Registry, which does not parse them again.
 */
import * as Y from 'yjs'
import { InvalidStateError } from '../errors.ts'
import { ROOT, SEGMENT_KEY, ownerOf } from './keys.ts'
import { decodeEntry, type Entry } from './schema.ts'

/** An update that builds on content this replica does not have (yet): not malformed, not applicable. */
export class MissingDependencyError extends InvalidStateError {
  constructor (message: string) {
    super(message)
    this.name = 'MissingDependencyError'
  }
}

/** Entries parsed from their text, by the Yjs item (client, clock) that holds them. */
export class ParsedEntries {
  private readonly byClient = new Map<number, Map<number, Entry>>()

  set (id: Y.ID, e: Entry): void {
    let clocks = this.byClient.get(id.client)
    if (clocks == null) this.byClient.set(id.client, clocks = new Map())
    clocks.set(id.clock, e)
  }

  get (id: Y.ID): Entry | undefined {
    return this.byClient.get(id.client)?.get(id.clock)
  }
}

/** What validateUpdate found: the entries it parsed, for applyUpdate to reuse. */
export interface ValidUpdate {
  entries: ParsedEntries
}

/** Where an item of an update lands. */
type Place =
  | { kind: 'root', key: string }
  | { kind: 'segment', segment: string, key: string }
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
 * `doc` does not have is a MissingDependencyError.
 */
export function validateUpdate (update: Uint8Array, doc?: Y.Doc): ValidUpdate {
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
  // Thousands of entries share a few segments: check each segment key once.
  const segmentKeys = new Map<string, boolean>()
  const isSegmentKey = (key: string): boolean => {
    let ok = segmentKeys.get(key)
    if (ok == null) segmentKeys.set(key, ok = SEGMENT_KEY.test(key))
    return ok
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
    if (owner != null && owner.parent === doc.share.get(ROOT) && owner.parentSub != null) return { kind: 'segment', segment: owner.parentSub, key }
    return { kind: 'invalid', why: 'builds on content outside the registry' }
  }

  /** Where an entry lands when its parent is given: the common case, one per worker in a delta. */
  const placeUnder = (item: Y.Item, parent: Y.ID): Place => {
    const p = inUpdate(parent)
    const pp = p != null ? placeOf(p) : placeInDoc(parent)
    return pp.kind === 'root' && item.parentSub != null
      ? { kind: 'segment', segment: pp.key, key: item.parentSub }
      : pp.kind === 'missing' || pp.kind === 'collected' || pp.kind === 'invalid' ? pp : { kind: 'invalid', why: 'nested below a segment' }
  }

  const placeOf = (item: Y.Item): Place => {
    const known = places.get(item)
    if (known != null) return known
    if (item.parent instanceof Y.ID) {
      const place = placeUnder(item, item.parent)
      places.set(item, place)
      return place
    }
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

  for (const s of decoded.structs) {
    if (!(s instanceof Y.Item)) continue
    const place = placeOf(s)
    if (place.kind === 'invalid') throw new InvalidStateError(place.why)
    if (place.kind === 'missing') throw new MissingDependencyError(`builds on content this replica does not have (item ${s.id.client}:${s.id.clock})`)
    if (place.kind === 'collected') continue
    const c = s.content
    if (c instanceof Y.ContentDeleted) continue
    if (place.kind === 'root' && !SEGMENT_KEY.test(place.key)) throw new InvalidStateError(`invalid segment key ${JSON.stringify(place.key).slice(0, 80)}`)
    if (c instanceof Y.ContentType) {
      if (!(c.type instanceof Y.Map)) throw new InvalidStateError('only maps may be nested in the registry')
      if (place.kind !== 'root') throw new InvalidStateError('nested map below a segment')
      continue
    }
    if (c instanceof Y.ContentAny) {
      if (place.kind !== 'segment') throw new InvalidStateError('plain value where a segment was expected')
      for (let i = 0; i < c.arr.length; i++) {
        const v = c.arr[i]
        const e = decodeEntry(v)
        if (e == null) throw new InvalidStateError(`malformed entry ${(typeof v === 'string' ? v : JSON.stringify(v) ?? String(v)).slice(0, 120)}`)
        if (e.worker_id !== place.key) throw new InvalidStateError(`entry for ${e.worker_id} stored under key ${place.key}`)
        if (isSegmentKey(place.segment) && e.owner !== ownerOf(place.segment)) throw new InvalidStateError(`entry of ${e.owner} in the segment of ${ownerOf(place.segment)}`)
        entries.set(i === 0 ? s.id : Y.createID(s.id.client, s.id.clock + i), e)
      }
      continue
    }
    throw new InvalidStateError(`unsupported content ${c.constructor.name}`)
  }
  return { entries }
}
