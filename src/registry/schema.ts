/**
 * The registration data model, as TypeBox schemas: the wire contract's
 * `CapabilitySchema` and what the registry stores per worker. The API
 * validates requests with these; the registry validates what peers and
 * imports put in the document with the same schemas, compiled.
 */
import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { MAX_CAPABILITIES_PER_WORKER, MAX_ENTRY_BYTES, MAX_ID_LENGTH, MAX_JSON_DEPTH, MAX_URL_LENGTH } from '../constants.ts'
import { tooDeep } from '../utils/json.ts'

/** Printable ASCII, no spaces: safe in logs, URLs and map keys. */
export const WorkerId = Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH, pattern: '^[\\x21-\\x7e]+$', description: 'Worker id: printable ASCII without spaces.' })
export const ControllerId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' })
export const WorkerUrl = Type.String({ minLength: 1, maxLength: MAX_URL_LENGTH, pattern: '^https?://[^\\s/?#]+[^\\s]*$', description: 'Where the worker serves, http(s)://host[:port][/path].' })
const Name = Type.String({ minLength: 1, maxLength: 256 })
const JsonObject = Type.Record(Type.String(), Type.Unknown())

/** A worker's declared latency/availability objectives. */
export const Slo = Type.Object({
  latency_p95_ms: Type.Optional(Type.Number({ minimum: 0 })),
  latency_p99_ms: Type.Optional(Type.Number({ minimum: 0 })),
  availability: Type.Optional(Type.Number({ minimum: 0, maximum: 1 }))
}, { additionalProperties: true })

/** The platform's CapabilitySchema, field for field. */
export const Capability = Type.Object({
  name: Name,
  verb: Name,
  version: Type.String({ minLength: 1, maxLength: 64 }),
  input_schema: JsonObject,
  output_schema: JsonObject,
  requires_gpu: Type.Boolean(),
  max_concurrency: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
  runtime: Type.Optional(Type.String({ maxLength: 256 })),
  env_profile: Type.Optional(Type.Union([Type.String({ maxLength: 256 }), JsonObject])),
  constraints: Type.Optional(JsonObject),
  slo: Type.Optional(Slo),
  spiffe_id: Type.Optional(Type.String({ maxLength: 2048 })),
  required_capabilities: Type.Optional(Type.Array(Name, { maxItems: 256 })),
  cost_tokens_per_invocation: Type.Optional(Type.Number({ minimum: 0 })),
  slo_bid: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), JsonObject])),
  controller_affinity: Type.Optional(Type.String({ maxLength: 64 }))
}, { additionalProperties: true })
export type Capability = Static<typeof Capability>

export const Capabilities = Type.Array(Capability, { minItems: 1, maxItems: MAX_CAPABILITIES_PER_WORKER })

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
  registered_at: Type.Number({ minimum: 0 })
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
