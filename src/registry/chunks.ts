/**
 * A whole-document Yjs update as the pieces Yjs built it in, not joined.
 *
 * Yjs writes an update into a lib0 Encoder, a list of buffers (each twice
 * the size of the one before) plus the one being filled, and
 * `Y.encodeStateAsUpdate` then copies them into one Uint8Array: for a
 * moment the update is held twice (~32 MB more at 100,000 workers). Where
 * the update is only written out (the snapshot file, an export, a sync
 * delta) the pieces serve as well, one after another: their concatenation
 * is byte for byte what `Y.encodeStateAsUpdate` returns.
 */
import * as Y from 'yjs'

/** Y.UpdateEncoderV1 that leaves its buffers unjoined: the pieces are read from `restEncoder` afterwards. */
class PiecesEncoder extends Y.UpdateEncoderV1 {
  override toUint8Array (): Uint8Array<ArrayBuffer> { return new Uint8Array(0) }
}

/**
 * `Y.encodeStateAsUpdate(doc, sv)` as a list of pieces (none empty; none
 * for an update of no bytes, which Yjs never makes). A document holding
 * pending structs or deletes (parts of updates waiting for what they build
 * on, as during a sliced apply) is encoded by Yjs in one piece: Yjs merges
 * what is pending into the update, and does that only for its own encoder.
 */
export function encodeUpdatePieces (doc: Y.Doc, sv?: Uint8Array): Uint8Array[] {
  if (doc.store.pendingStructs != null || doc.store.pendingDs != null) return [Y.encodeStateAsUpdate(doc, sv)]
  const encoder = new PiecesEncoder()
  Y.encodeStateAsUpdateV2(doc, sv, encoder)
  const { bufs, cbuf, cpos } = encoder.restEncoder
  // lib0's Encoder fields, read directly: should a lib0 release lay them out otherwise, encode as Yjs does.
  if (!Array.isArray(bufs) || !(cbuf instanceof Uint8Array) || !Number.isInteger(cpos)) return [Y.encodeStateAsUpdate(doc, sv)]
  const pieces = bufs.filter(b => b.length > 0)
  if (cpos > 0) pieces.push(new Uint8Array(cbuf.buffer, cbuf.byteOffset, cpos))
  return pieces
}

/** The length of the update `pieces` make up. */
export function piecesLength (pieces: readonly Uint8Array[]): number {
  let n = 0
  for (const p of pieces) n += p.length
  return n
}
