/**
 * The registry as a portable document (`GET /state/export`,
 * `capmesh state export`), and its import. The payload is a whole-document
 * Yjs update, so importing *merges*: idempotent, order-independent, and
 * never removes what the importing controller already has.
 *
 * Two forms: the JSON document (PortableState, the update in base64) and the
 * update's bytes alone (binary: a quarter smaller, no base64 to encode or
 * check). The JSON form is produced as a stream of pieces (exportJson), so a
 * controller never holds the whole document as one string: at 100,000
 * workers that string was 42 MB, and serialising it made two more copies.
 */
import { Type } from 'typebox'
import { Compile } from 'typebox/compile'
import { InvalidStateError } from '../errors.ts'
import { PortableState, STATE_FORMAT } from '../wire/api.ts'
import { Origin, type Registry } from './registry.ts'

export { PortableState, STATE_FORMAT }

/**
 * PortableState with `update` any string: its base64 is checked by decoding
 * it (base64Of), not by the schema's pattern, a regular expression that
 * took ~0.2 s over the 42 MB of a 100,000-worker export (and the API's
 * validator has run it on an HTTP body already).
 */
const check = Compile(Type.Object({ ...PortableState.properties, update: Type.String() }, { additionalProperties: false }))

/**
 * The bytes of `text`, if it is base64 as the schema's pattern has it
 * (`[A-Za-z0-9+/]*`, up to two `=`): Buffer.from skips other characters and
 * reads base64url's, so the bytes must encode back to `text` (its padding
 * aside). Null otherwise.
 */
function base64Of (text: string): Buffer | null {
  const bytes = Buffer.from(text, 'base64')
  let end = text.length
  while (end > 0 && text.charCodeAt(end - 1) === 61 && text.length - end < 2) end--
  let back = bytes.toString('base64')
  let backEnd = back.length
  while (backEnd > 0 && back.charCodeAt(backEnd - 1) === 61) backEnd--
  if (backEnd !== end) return null
  if (backEnd < back.length) back = back.slice(0, backEnd)
  return back === (end < text.length ? text.slice(0, end) : text) ? bytes : null
}

/**
 * Bytes of update per piece of the JSON stream (a multiple of 3: each piece
 * is whole base64): 64 KiB of text. A string of 128 KiB or more goes to
 * V8's large-object space, which only a full collection frees: pieces of
 * 256 KiB piled up there, ~20 MB more at the peak of a 100,000-worker
 * export than these, which scavenges free.
 */
const EXPORT_PIECE_BYTES = 3 * 16 * 1024

/** The document's fields other than the update, at the time of the export. */
function header (registry: Registry): Omit<PortableState, 'update'> {
  return { format: STATE_FORMAT, version: 1, controller_id: registry.controllerId, exported_at: new Date().toISOString(), workers: registry.size }
}

/** The whole document as one object (small registries, tests and tools); controllers stream it (exportJson). */
export function exportState (registry: Registry): PortableState {
  return { ...header(registry), update: [...base64Pieces(registry.encodePieces())].join('') }
}

/**
 * The registry as raw Yjs update bytes, the binary form of an export: in
 * the pieces Yjs encoded it in, to be sent one after another (their
 * concatenation is the update).
 */
export function exportBinary (registry: Registry): Uint8Array[] {
  return registry.encodePieces()
}

/**
 * The JSON document as pieces of text: everything up to the update, the
 * update in base64 64 KiB at a time, then the closing quote and brace.
 * Only the encoded update (bytes, in Yjs's pieces) is held while the pieces
 * are taken; a consumer that stops early (a client gone) lets it go with
 * the generator.
 */
export function * exportJson (registry: Registry): Generator<string> {
  const head = JSON.stringify(header(registry))
  let state: Uint8Array[] | null = registry.encodePieces()
  try {
    yield `${head.slice(0, -1)},"update":"`
    yield * base64Pieces(state)
    yield '"}'
  } finally {
    state = null
  }
}

/**
 * The base64 of the bytes `chunks` make up, as pieces of text whose
 * concatenation is that one base64 string: every piece but the last encodes
 * a multiple of 3 bytes (else it would end in padding), so the up to two
 * bytes at the end of a chunk are carried over to the start of the next.
 */
export function * base64Pieces (chunks: Iterable<Uint8Array>, pieceBytes = EXPORT_PIECE_BYTES): Generator<string> {
  if (pieceBytes <= 0 || pieceBytes % 3 !== 0) throw new RangeError(`pieceBytes must be a positive multiple of 3, not ${pieceBytes}`)
  let carry: Buffer = Buffer.alloc(0)
  for (const chunk of chunks) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    if (carry.length > 0) {
      const take = Math.min(3 - carry.length, buf.length)
      carry = Buffer.concat([carry, buf.subarray(0, take)])
      buf = buf.subarray(take)
      if (carry.length < 3) continue
      yield carry.toString('base64')
      carry = Buffer.alloc(0)
    }
    const whole = buf.length - buf.length % 3
    for (let at = 0; at < whole; at += pieceBytes) yield buf.toString('base64', at, Math.min(whole, at + pieceBytes))
    carry = buf.subarray(whole)
  }
  if (carry.length > 0) yield carry.toString('base64')
}

/** The update inside a portable document (checked against PortableState), or raw bytes as they are. */
export function updateOf (doc: unknown): Uint8Array {
  if (doc instanceof Uint8Array) {
    if (doc.length === 0) throw new InvalidStateError('not a capmesh state: the body is empty')
    return doc
  }
  if (!check.Check(doc)) {
    const first = check.Errors(doc)[0]
    throw new InvalidStateError(`not a capmesh state document: ${first != null ? `${first.instancePath || '/'} ${first.message}` : 'invalid'}`)
  }
  const bytes = base64Of(doc.update)
  if (bytes == null) throw new InvalidStateError('not a capmesh state document: /update is not base64')
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/**
 * Merges a portable document, or the raw update bytes of a binary export,
 * into `registry`. Throws InvalidStateError (and changes nothing) if the
 * document or the update inside it is malformed. Returns how many workers
 * the registry gained.
 */
export function importState (registry: Registry, doc: unknown): { added: number, workers: number } {
  const before = registry.size
  registry.applyUpdate(updateOf(doc), Origin.import)
  return { added: registry.size - before, workers: registry.size }
}

/**
 * importState for a controller that keeps serving: a large state is checked
 * and applied in slices (Registry.applyInSlices), logged whole first, so a
 * crash during it leaves all of it or none.
 */
export async function importStateInSlices (registry: Registry, doc: unknown): Promise<{ added: number, workers: number }> {
  const update = updateOf(doc)
  const before = registry.size
  await registry.applyInSlices(update, Origin.import)
  return { added: registry.size - before, workers: registry.size }
}
