/**
 * A large update cut into several smaller ones that, applied in order, build
 * the same document: what lets a controller apply a whole registry (a late
 * joiner's catch-up, an import: 100,000 workers are ~33 MB) in steps and
 * answer requests between them, instead of stalling for the whole apply.
 *
 * Each slice holds a run of the update's structs (at most `maxStructs`,
 * each client's structs contiguous, as Yjs's own encoding requires): their
 * bytes cut out of the update as they are (a struct's V1 encoding does not
 * depend on the structs before it), or, when the update's bytes are not
 * given or do not read as Yjs reads them, encoded again by Yjs's own
 * `Item.write` (as `Y.mergeUpdates` does: ~0.2 s at 100,000 workers). The
 * last slice carries the delete set alone. A slice may build on a struct of a later
 * slice (another client's): Yjs keeps it pending until that one arrives, so
 * the end state does not depend on the cut. The slices are not checked on
 * their own: the caller checks the whole update first (validate.ts).
 */
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

type Decoded = ReturnType<typeof Y.decodeUpdate>

/**
 * An update (decoded as `decoded`), slice by slice: each slice made when
 * asked for. Slices of at most `maxStructs` structs, then its delete set.
 * `update`: the V1 bytes `decoded` came from, to cut the slices out of.
 */
export function * sliceUpdate (decoded: Decoded, maxStructs: number, update?: Uint8Array): Generator<Uint8Array> {
  const { structs, ds } = decoded
  const spans = update == null ? null : structSpans(update, structs)
  for (let at = 0; at < structs.length; at += maxStructs) {
    const end = Math.min(structs.length, at + maxStructs)
    yield spans != null ? cutStructs(update as Uint8Array, spans, structs, at, end) : encodeStructs(structs.slice(at, end))
  }
  yield encodeDeleteSet(ds)
}

/** Where each struct's bytes start and end in the update. */
interface Spans { start: Int32Array, end: Int32Array }

/**
 * The byte span of each of `structs` in `update` (a V1 update, read as
 * Yjs's readClientsStructRefs reads it, contents skipped rather than
 * decoded), or null if the bytes do not hold exactly those structs, in that
 * order.
 */
function structSpans (update: Uint8Array, structs: Decoded['structs']): Spans | null {
  const d = decoding.createDecoder(update)
  const start = new Int32Array(structs.length)
  const end = new Int32Array(structs.length)
  let i = 0
  try {
    const runs = decoding.readVarUint(d)
    for (let r = 0; r < runs; r++) {
      const count = decoding.readVarUint(d)
      const client = decoding.readVarUint(d)
      const clock = decoding.readVarUint(d)
      let at = clock
      for (let k = 0; k < count; k++, i++) {
        const s = structs[i]
        if (i >= structs.length || s.id.client !== client || s.id.clock !== at) return null
        start[i] = d.pos
        if (skipStruct(d) !== kindOf(s)) return null
        end[i] = d.pos
        at += s.length
      }
    }
  } catch {
    return null
  }
  return i === structs.length ? { start, end } : null
}

/** A decoded struct's kind, as skipStruct reads it: 0 a GC, 10 a Skip, else its content's ref. */
function kindOf (s: Decoded['structs'][number]): number {
  return s instanceof Y.Item ? s.content.getRef() : s instanceof Y.GC ? 0 : 10
}

/**
 * Skips one struct: its info byte, then what Yjs reads for that kind (as
 * Y.decodeUpdate's struct reader does). Returns its kind (see kindOf).
 */
function skipStruct (d: decoding.Decoder): number {
  const info = decoding.readUint8(d)
  const kind = info & 0b11111
  if (info === 10 || kind === 0) { // Skip, GC: a length
    decoding.readVarUint(d)
    return info === 10 ? 10 : 0
  }
  if ((info & 0b10000000) !== 0) { decoding.readVarUint(d); decoding.readVarUint(d) } // origin
  if ((info & 0b01000000) !== 0) { decoding.readVarUint(d); decoding.readVarUint(d) } // right origin
  if ((info & 0b11000000) === 0) {
    if (decoding.readVarUint(d) === 1) skipString(d) // parent: a root type's name
    else { decoding.readVarUint(d); decoding.readVarUint(d) } // parent: an item's id
    if ((info & 0b00100000) !== 0) skipString(d) // parentSub
  }
  switch (kind) {
    case 1: decoding.readVarUint(d); break // ContentDeleted: length
    case 2: for (let n = decoding.readVarUint(d); n > 0; n--) skipString(d); break // ContentJSON
    case 3: skipString(d); break // ContentBinary: length-prefixed bytes, as a string is
    case 4: skipString(d); break // ContentString
    case 5: skipString(d); break // ContentEmbed: JSON text
    case 6: skipString(d); skipString(d); break // ContentFormat: key, JSON text
    case 7: { // ContentType: type ref, and a name for an XmlElement (3) or XmlHook (5)
      const ref = decoding.readVarUint(d)
      if (ref === 3 || ref === 5) skipString(d)
      break
    }
    case 8: for (let n = decoding.readVarUint(d); n > 0; n--) skipAny(d); break // ContentAny
    case 9: skipString(d); skipAny(d); break // ContentDoc: guid, options
    default: throw new Error(`unknown content ${kind}`)
  }
  return kind
}

/** Skips a length-prefixed run of bytes (a string, a byte array). */
function skipString (d: decoding.Decoder): void {
  const len = decoding.readVarUint(d)
  if (d.pos + len > d.arr.length) throw new Error('past the end')
  d.pos += len
}

/** Skips one value of lib0's `any` encoding (decoding.readAny). */
function skipAny (d: decoding.Decoder): void {
  const type = decoding.readUint8(d)
  switch (type) {
    case 127: case 126: case 121: case 120: return // undefined, null, false, true
    case 125: decoding.readVarInt(d); return
    case 124: d.pos += 4; return // float32
    case 123: case 122: d.pos += 8; return // float64, bigint64
    case 119: case 116: skipString(d); return // string, Uint8Array
    case 118: for (let n = decoding.readVarUint(d); n > 0; n--) { skipString(d); skipAny(d) } return // object
    case 117: for (let n = decoding.readVarUint(d); n > 0; n--) skipAny(d); return // array
    default: throw new Error(`unknown any type ${type}`)
  }
}

/** An update of structs [from, to) (in the decoded update's order), their bytes cut from `update`, and an empty delete set. */
function cutStructs (update: Uint8Array, spans: Spans, structs: Decoded['structs'], from: number, to: number): Uint8Array {
  const enc = encoding.createEncoder()
  let runs = 0
  for (let i = from; i < to; i++) if (i === from || structs[i].id.client !== structs[i - 1].id.client) runs++
  encoding.writeVarUint(enc, runs)
  for (let i = from; i < to;) {
    let j = i + 1
    while (j < to && structs[j].id.client === structs[i].id.client) j++
    encoding.writeVarUint(enc, j - i)
    encoding.writeVarUint(enc, structs[i].id.client)
    encoding.writeVarUint(enc, structs[i].id.clock)
    encoding.writeUint8Array(enc, update.subarray(spans.start[i], spans.end[j - 1]))
    i = j
  }
  encoding.writeVarUint(enc, 0)
  return encoding.toUint8Array(enc)
}

/** An update of `structs` (in the decoded update's order: grouped by client, by clock) and an empty delete set. */
function encodeStructs (structs: Decoded['structs']): Uint8Array {
  const runs: Array<[start: number, end: number]> = []
  for (let i = 0; i < structs.length; i++) {
    if (i === 0 || structs[i].id.client !== structs[i - 1].id.client) runs.push([i, i + 1])
    else runs[runs.length - 1][1] = i + 1
  }
  const enc = new Y.UpdateEncoderV1()
  encoding.writeVarUint(enc.restEncoder, runs.length)
  for (const [start, end] of runs) {
    const first = structs[start]
    encoding.writeVarUint(enc.restEncoder, end - start)
    enc.writeClient(first.id.client)
    encoding.writeVarUint(enc.restEncoder, first.id.clock)
    for (let i = start; i < end; i++) structs[i].write(enc, 0)
  }
  encoding.writeVarUint(enc.restEncoder, 0)
  return enc.toUint8Array()
}

/** An update with no structs and delete set `ds` (Yjs's writeDeleteSet, which it does not export). */
function encodeDeleteSet (ds: Decoded['ds']): Uint8Array {
  const enc = new Y.UpdateEncoderV1()
  encoding.writeVarUint(enc.restEncoder, 0)
  encoding.writeVarUint(enc.restEncoder, ds.clients.size)
  for (const [client, ranges] of ds.clients) {
    enc.resetDsCurVal()
    encoding.writeVarUint(enc.restEncoder, client)
    encoding.writeVarUint(enc.restEncoder, ranges.length)
    for (const r of ranges) {
      enc.writeDsClock(r.clock)
      enc.writeDsLen(r.len)
    }
  }
  return enc.toUint8Array()
}
