/**
 * What the registry stores per worker (a record, or a tombstone), built on
 * the wire contract's schemas (wire/capability.ts), and how an entry is
 * stored in the document. Peers' updates and imports are checked against the
 * same schemas, compiled.
 */
import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { MAX_ENTRY_BYTES, MAX_JSON_DEPTH } from '../constants.ts'
import { tooDeep } from '../utils/json.ts'
import { Capabilities, ControllerId, WorkerId, WorkerUrl } from '../wire/capability.ts'

export { Capabilities, Capability, ControllerId, Slo, WorkerId, WorkerUrl } from '../wire/capability.ts'

/**
 * One worker as stored in the registry document. `owner` is the controller
 * the worker is attached to; `incarnation` grows on every attach and decides
 * which of two entries for the same worker wins, everywhere.
 */
export const WorkerRecord = Type.Object({
  worker_id: WorkerId,
  worker_url: WorkerUrl,
  capabilities: Capabilities,
  incarnation: Type.Integer({ minimum: 0 }),
  owner: ControllerId,
  /** Wall-clock ms at registration: informational only, never used to decide. */
  registered_at: Type.Number({ minimum: 0 }),
  /**
   * The identity that registered the worker (a SPIFFE id), absent when
   * registered without one (auth off, or by an operator for an unbound
   * worker). Every controller refuses a failover from another identity.
   */
  identity: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 }))
}, { additionalProperties: false })
export type WorkerRecord = Static<typeof WorkerRecord>

/**
 * A removal written by a controller that does not own the worker: hides
 * every entry for `worker_id` with an incarnation ≤ `incarnation`.
 */
export const Tombstone = Type.Object({
  worker_id: WorkerId,
  incarnation: Type.Integer({ minimum: 0 }),
  owner: ControllerId,
  deleted_at: Type.Number({ minimum: 0 }),
  tombstone: Type.Literal(true)
}, { additionalProperties: false })
export type Tombstone = Static<typeof Tombstone>

export type Entry = WorkerRecord | Tombstone

export const isTombstone = (e: Entry): e is Tombstone => (e as Tombstone).tombstone === true

const checkRecord = Compile(WorkerRecord)
const checkTombstone = Compile(Tombstone)

/** True when `value` is a well-formed registry entry (record or tombstone). */
export function isEntry (value: unknown): value is Entry {
  // Depth first: the schema check itself recurses.
  if (tooDeep(value, MAX_JSON_DEPTH) != null) return false
  return checkRecord.Check(value) || checkTombstone.Check(value)
}

/**
 * How an entry is stored in the document: its JSON text. Yjs decodes a
 * string with one call where an object costs one per key and value (an
 * entry has ~30), and a peer's update is decoded twice (validated, then
 * applied): the text form made applying a 5,000-entry delta ~4x cheaper.
 */
export function encodeEntry (e: Entry): string {
  return JSON.stringify(e)
}

/**
 * Reads a stored entry: its JSON text, or an object as written by capmesh
 * 0.1 (still read, never written). Returns null for anything malformed.
 */
export function decodeEntry (value: unknown): Entry | null {
  if (typeof value === 'string') {
    if (value.length > MAX_ENTRY_BYTES) return null
    let parsed: unknown
    try {
      parsed = JSON.parse(value)
    } catch {
      return null
    }
    return isEntry(parsed) ? parsed : null
  }
  return isEntry(value) ? value : null
}

/**
 * Reads the text of an entry that this controller checked when it came in
 * (decodeEntry) and wrote into its own snapshot (Registry.applyUpdate `own`):
 * parsed, not checked against the schema again (~40 % of decodeEntry's
 * cost). Null for text that is not a JSON object.
 */
export function parseOwnEntry (value: unknown): Entry | null {
  if (typeof value !== 'string') return null
  try {
    const parsed: unknown = JSON.parse(value)
    return parsed != null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Entry : null
  } catch {
    return null
  }
}
