/**
 * A large update cut into several smaller ones that, applied in order, build
 * the same document: what lets a controller apply a whole registry (a late
 * joiner's catch-up, an import: 100,000 workers are ~33 MB) in steps and
 * answer requests between them, instead of stalling for the whole apply.
 *
 * Each slice holds a run of the update's structs (at most `maxStructs`,
 * each client's structs contiguous, as Yjs's own encoding requires), encoded
 * by Yjs's own `Item.write` (as `Y.mergeUpdates` does); the last slice
 * carries the delete set alone. A slice may build on a struct of a later
 * slice (another client's): Yjs keeps it pending until that one arrives, so
 * the end state does not depend on the cut. The slices are not checked on
 * their own: the caller checks the whole update first (validate.ts).
 */
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'

type Decoded = ReturnType<typeof Y.decodeUpdate>

/** An update (decoded as `decoded`), slice by slice: each slice encoded when asked for. Slices of at most `maxStructs` structs, then its delete set. */
export function * sliceUpdate (decoded: Decoded, maxStructs: number): Generator<Uint8Array> {
  const { structs, ds } = decoded
  for (let at = 0; at < structs.length; at += maxStructs) {
    yield encodeStructs(structs.slice(at, at + maxStructs))
  }
  yield encodeDeleteSet(ds)
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
