/**
 * The platform's registration data model as TypeBox schemas: worker and
 * controller ids, worker URLs and the `CapabilitySchema`. The API validates
 * requests with them, the registry validates what peers and imports store
 * with the same schemas compiled, and the agent types its bodies with them.
 */
import { Type, type Static } from 'typebox'
import { CONTROLLER_ID, MAX_CAPABILITIES_PER_WORKER, MAX_ID_LENGTH, MAX_URL_LENGTH } from '../constants.ts'

export { CONTROLLER_ID }

/** Printable ASCII, no spaces: safe in logs, URLs and map keys. */
export const WorkerId = Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH, pattern: '^[\\x21-\\x7e]+$', description: 'Worker id: printable ASCII without spaces.' })
export const ControllerId = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' })
export const WorkerUrl = Type.String({ minLength: 1, maxLength: MAX_URL_LENGTH, pattern: '^https?://[^\\s/?#]+[^\\s]*$', description: 'Where the worker serves, http(s)://host[:port][/path].' })
export const Name = Type.String({ minLength: 1, maxLength: 256 })
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

/** How the API and the router name a worker's health. */
export const HealthState = Type.Union([Type.Literal('healthy'), Type.Literal('unhealthy'), Type.Literal('draining'), Type.Literal('pending')])
export type HealthState = Static<typeof HealthState>
