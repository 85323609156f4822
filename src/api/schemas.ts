/**
 * Request and response schemas of the HTTP API (TypeBox → JSON Schema):
 * fastify validates requests with them, serialises responses with them, and
 * @fastify/swagger turns them into the OpenAPI document at /openapi.json.
 */
import { Type } from 'typebox'
import { Capabilities, Capability, WorkerId, WorkerUrl } from '../registry/schema.ts'

export const ErrorBody = Type.Object({
  error: Type.String({ description: 'Machine-readable error, e.g. validation_failed, no_worker_available.' }),
  code: Type.String({ description: 'Stable CAPMESH_ERR_* code (docs/errors.md).' }),
  message: Type.String(),
  details: Type.Optional(Type.Array(Type.Object({ field: Type.String(), message: Type.String() }))),
  capability: Type.Optional(Type.String()),
  verb: Type.Optional(Type.String())
})

/** 409 to a heartbeat from an older attachment: who holds the worker now. */
export const SupersededBody = Type.Object({
  error: Type.Literal('superseded'),
  code: Type.Literal('CAPMESH_ERR_SUPERSEDED'),
  message: Type.String(),
  worker_id: Type.String(),
  incarnation: Type.Integer({ description: 'The registry\'s incarnation for the worker.' }),
  controller_id: Type.String({ description: 'The controller the worker is attached to now.' })
})

export const RegisterBody = Type.Object({
  worker_id: WorkerId,
  worker_url: WorkerUrl,
  capabilities: Capabilities,
  incarnation: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Attach counter kept by the worker; bumped on every attach.' }))
})

export const RegisterReply = Type.Object({
  status: Type.Literal('registered'),
  worker_id: Type.String(),
  incarnation: Type.Integer(),
  controller_id: Type.String()
})

/** The attachment a heartbeat or drain belongs to (capmesh agents send it). Older than the registry's for a worker attached elsewhere: 409 superseded, ignored. */
const AttachmentIncarnation = Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'The incarnation of the attachment this request belongs to (capmesh agents send it). Older than the registry\'s for a worker attached elsewhere: 409 superseded, ignored.' }))

export const HeartbeatBody = Type.Object({
  worker_id: WorkerId,
  load: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000, description: 'Requests in flight on the worker.' })),
  status: Type.Optional(Type.Union([Type.Literal('ready'), Type.Literal('draining')], { description: '"draining": stop routing new requests here.' })),
  incarnation: AttachmentIncarnation
})

export const HeartbeatReply = Type.Union([
  Type.Object({ status: Type.Literal('acknowledged'), timestamp: Type.String(), state: Type.String() }),
  Type.Object({ error: Type.Literal('worker_not_registered'), worker_id: Type.String() })
])

export const WorkerIdBody = Type.Object({ worker_id: WorkerId })

export const DrainBody = Type.Object({ worker_id: WorkerId, incarnation: AttachmentIncarnation })

export const SloConstraints = Type.Object({
  latency_p95_ms: Type.Optional(Type.Number({ minimum: 0 })),
  latency_p99_ms: Type.Optional(Type.Number({ minimum: 0 })),
  availability: Type.Optional(Type.Number({ minimum: 0, maximum: 1 }))
})

const Strategy = Type.Union([Type.Literal('round_robin'), Type.Literal('least_loaded')])
const Name = Type.String({ minLength: 1, maxLength: 256 })

export const RouteBody = Type.Object({
  verb: Name,
  capability: Name,
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  requires_gpu: Type.Optional(Type.Boolean()),
  requester_identity: Type.Optional(Type.String({ maxLength: 2048 })),
  slo_constraints: Type.Optional(SloConstraints),
  budget_tokens: Type.Optional(Type.Number({ minimum: 0 })),
  idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  affinity: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  strategy: Type.Optional(Strategy)
})

const NUMBER = '^[0-9]+(\\.[0-9]+)?$'
/** GET /route: the same fields flattened into the query string (numbers and booleans as text). */
export const RouteQuerystring = Type.Object({
  verb: Name,
  capability: Name,
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  requires_gpu: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  requester_identity: Type.Optional(Type.String({ maxLength: 2048 })),
  latency_p95_ms: Type.Optional(Type.String({ pattern: NUMBER })),
  latency_p99_ms: Type.Optional(Type.String({ pattern: NUMBER })),
  availability: Type.Optional(Type.String({ pattern: NUMBER })),
  budget_tokens: Type.Optional(Type.String({ pattern: NUMBER })),
  idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  affinity: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  strategy: Type.Optional(Strategy)
}, { additionalProperties: false })

export const RouteReply = Type.Object({
  worker_id: Type.String(),
  worker_url: Type.String(),
  verb: Type.String(),
  capability: Type.String(),
  version: Type.String(),
  controller_id: Type.String(),
  incarnation: Type.Integer(),
  state: Type.String(),
  load: Type.Integer(),
  cost_tokens_per_invocation: Type.Optional(Type.Number()),
  strategy: Type.String()
})

export const CapabilitiesReply = Type.Object({
  capabilities: Type.Array(Type.Object({
    verb: Type.String(),
    name: Type.String(),
    versions: Type.Array(Type.String()),
    workers: Type.Integer(),
    healthy_workers: Type.Integer()
  }))
})

const HealthState = Type.Union([Type.Literal('healthy'), Type.Literal('unhealthy'), Type.Literal('draining'), Type.Literal('pending')])

export const WorkersQuerystring = Type.Object({
  state: Type.Optional(HealthState),
  capability: Type.Optional(Name),
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$' })),
  offset: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' }))
}, { additionalProperties: false })

export const WorkersReply = Type.Object({
  total: Type.Integer(),
  workers: Type.Array(Type.Object({
    worker_id: Type.String(),
    worker_url: Type.String(),
    capabilities: Type.Array(Capability),
    state: HealthState,
    last_heartbeat: Type.Union([Type.String(), Type.Null()]),
    load: Type.Integer(),
    controller_id: Type.String(),
    incarnation: Type.Integer(),
    registered_at: Type.String()
  }))
})

export const ImportReply = Type.Object({
  status: Type.Literal('imported'),
  added: Type.Integer(),
  workers: Type.Integer()
})
