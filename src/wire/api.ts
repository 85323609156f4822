/**
 * The HTTPS wire contract, declared once (TypeBox → JSON Schema): request,
 * reply and error bodies. fastify validates requests and serialises replies
 * with these schemas, @fastify/swagger publishes them at /openapi.json, and
 * the router, the worker agent and `capmesh status` / `capmesh route` use
 * the static types derived from them. Nothing here loads more than typebox.
 */
import { Type, type Static } from 'typebox'
import { MAX_REGISTER_BATCH } from '../constants.ts'
import { Capabilities, Capability, HealthState, Name, WorkerId, WorkerUrl } from './capability.ts'

// ------------------------------------------------------------------ errors

export const ErrorBody = Type.Object({
  error: Type.String({ description: 'Machine-readable error, e.g. validation_failed, no_worker_available.' }),
  code: Type.String({ description: 'Stable CAPMESH_ERR_* code (docs/errors.md).' }),
  message: Type.String(),
  details: Type.Optional(Type.Array(Type.Object({ field: Type.String(), message: Type.String() }))),
  capability: Type.Optional(Type.String()),
  verb: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String({ description: 'Why an identity was refused (401, 403): a stable reason, see docs/errors.md#identity-failures.' }))
})
export type ErrorBody = Static<typeof ErrorBody>

/** 409 to a heartbeat from an older attachment: who holds the worker now. */
export const SupersededBody = Type.Object({
  error: Type.Literal('superseded'),
  code: Type.Literal('CAPMESH_ERR_SUPERSEDED'),
  message: Type.String(),
  worker_id: Type.String(),
  incarnation: Type.Integer({ description: 'The registry\'s incarnation for the worker.' }),
  controller_id: Type.String({ description: 'The controller the worker is attached to now.' })
})

export type SupersededReply = Static<typeof SupersededBody>

/** HTTP 200 to a heartbeat or drain for a worker the controller does not know: the platform's workers re-register on it. */
export const NotRegisteredReply = Type.Object({ error: Type.Literal('worker_not_registered'), worker_id: Type.String() })
export type NotRegisteredReply = Static<typeof NotRegisteredReply>

// ----------------------------------------------------------------- workers

export const RegisterBody = Type.Object({
  worker_id: WorkerId,
  worker_url: WorkerUrl,
  capabilities: Capabilities,
  incarnation: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Attach counter kept by the worker; bumped on every attach.' }))
})
export type RegisterRequest = Static<typeof RegisterBody>

export const RegisterReply = Type.Object({
  status: Type.Literal('registered'),
  worker_id: Type.String(),
  incarnation: Type.Integer(),
  controller_id: Type.String()
})
export type RegisterReply = Static<typeof RegisterReply>

/**
 * `POST /register/batch`: several workers in one request, each as for
 * `/register`. A malformed batch (a bad item, more than MAX_REGISTER_BATCH,
 * a worker id twice) is refused whole with 400 and the items named; a
 * well-formed one gets one result per worker, in order: registered, or
 * refused with the code `/register` would have answered (an identity that
 * does not cover the id, a worker registered by another identity). The
 * registered ones are written in one registry transaction (one seal, one
 * gossip update) before the answer.
 */
export const RegisterBatchBody = Type.Object({
  workers: Type.Array(RegisterBody, { minItems: 1, maxItems: MAX_REGISTER_BATCH, description: `1 to ${MAX_REGISTER_BATCH} registrations, each as the body of POST /register; every worker_id once.` })
})
export type RegisterBatchRequest = Static<typeof RegisterBatchBody>

/** One worker's result in a batch: `registered` (the /register reply's fields) or `refused` (the error body /register would have answered, and its HTTP status). */
export const RegisterBatchItem = Type.Object({
  status: Type.Union([Type.Literal('registered'), Type.Literal('refused')]),
  worker_id: Type.String(),
  incarnation: Type.Optional(Type.Integer()),
  controller_id: Type.Optional(Type.String()),
  http_status: Type.Optional(Type.Integer({ description: 'Refused: the HTTP status /register would have answered (403).' })),
  error: Type.Optional(Type.String()),
  code: Type.Optional(Type.String({ description: 'Refused: the stable CAPMESH_ERR_* code.' })),
  reason: Type.Optional(Type.String({ description: 'Refused by identity: the stable reason (docs/errors.md#identity-failures).' })),
  message: Type.Optional(Type.String())
})
export type RegisterBatchItem = Static<typeof RegisterBatchItem>

export const RegisterBatchReply = Type.Object({
  registered: Type.Integer({ description: 'Workers registered.' }),
  refused: Type.Integer({ description: 'Workers refused (see their results).' }),
  results: Type.Array(RegisterBatchItem, { description: 'One per worker of the request, in its order.' })
})
export type RegisterBatchReply = Static<typeof RegisterBatchReply>

/** The attachment a heartbeat or drain belongs to (capmesh agents send it). Older than the registry's for a worker attached elsewhere: 409 superseded, ignored. */
const AttachmentIncarnation = Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'The incarnation of the attachment this request belongs to (capmesh agents send it). Older than the registry\'s for a worker attached elsewhere: 409 superseded, ignored.' }))

export const HeartbeatBody = Type.Object({
  worker_id: WorkerId,
  load: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000, description: 'Requests in flight on the worker.' })),
  status: Type.Optional(Type.Union([Type.Literal('ready'), Type.Literal('draining')], { description: '"draining": stop routing new requests here.' })),
  incarnation: AttachmentIncarnation
})
export type HeartbeatRequest = Static<typeof HeartbeatBody>

export const HeartbeatAck = Type.Object({ status: Type.Literal('acknowledged'), timestamp: Type.String(), state: HealthState })
export const HeartbeatReply = Type.Union([HeartbeatAck, NotRegisteredReply])
export type HeartbeatReply = Static<typeof HeartbeatReply>

export const WorkerIdBody = Type.Object({ worker_id: WorkerId })
export type DeregisterRequest = Static<typeof WorkerIdBody>

export const DeregisterReply = Type.Object({ status: Type.Literal('deregistered'), worker_id: Type.String(), known: Type.Boolean() })
export type DeregisterReply = Static<typeof DeregisterReply>

export const DrainBody = Type.Object({ worker_id: WorkerId, incarnation: AttachmentIncarnation })
export type DrainRequest = Static<typeof DrainBody>

export const DrainReply = Type.Union([Type.Object({ status: Type.Literal('draining'), worker_id: Type.String() }), NotRegisteredReply])
export type DrainReply = Static<typeof DrainReply>

// ----------------------------------------------------------------- routing

export const SloConstraints = Type.Object({
  latency_p95_ms: Type.Optional(Type.Number({ minimum: 0 })),
  latency_p99_ms: Type.Optional(Type.Number({ minimum: 0 })),
  availability: Type.Optional(Type.Number({ minimum: 0, maximum: 1 }))
})

export const Strategy = Type.Union([Type.Literal('round_robin'), Type.Literal('least_loaded')])
export type Strategy = Static<typeof Strategy>

export const RouteBody = Type.Object({
  verb: Name,
  capability: Name,
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Exact capability version.' })),
  requires_gpu: Type.Optional(Type.Boolean({ description: 'Only workers whose capability declares requires_gpu: true.' })),
  requester_identity: Type.Optional(Type.String({ maxLength: 2048, description: 'Who is asking (carried for audit; not used to select).' })),
  slo_constraints: Type.Optional(SloConstraints),
  budget_tokens: Type.Optional(Type.Number({ minimum: 0, description: 'Skip workers whose cost_tokens_per_invocation exceeds this; cheapest first.' })),
  idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'Same key within its TTL: same worker while it stays healthy.' })),
  affinity: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Preferred controller id: its workers first, others as fallback.' })),
  strategy: Type.Optional(Strategy)
})
/** A route query (`POST /route`'s body; `GET /route` flattens it into the query string). */
export type RouteQuery = Static<typeof RouteBody>

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
export type RouteQuerystring = Static<typeof RouteQuerystring>

/** `GET /route`'s query string as the route query it stands for. */
export function routeQueryOf (q: RouteQuerystring): RouteQuery {
  const query: RouteQuery = { verb: q.verb, capability: q.capability }
  if (q.version != null) query.version = q.version
  if (q.requires_gpu != null) query.requires_gpu = q.requires_gpu === 'true'
  if (q.requester_identity != null) query.requester_identity = q.requester_identity
  if (q.budget_tokens != null) query.budget_tokens = Number(q.budget_tokens)
  if (q.idempotency_key != null) query.idempotency_key = q.idempotency_key
  if (q.affinity != null) query.affinity = q.affinity
  if (q.strategy != null) query.strategy = q.strategy
  if (q.latency_p95_ms != null || q.latency_p99_ms != null || q.availability != null) {
    query.slo_constraints = {}
    if (q.latency_p95_ms != null) query.slo_constraints.latency_p95_ms = Number(q.latency_p95_ms)
    if (q.latency_p99_ms != null) query.slo_constraints.latency_p99_ms = Number(q.latency_p99_ms)
    if (q.availability != null) query.slo_constraints.availability = Number(q.availability)
  }
  return query
}

export const RouteReply = Type.Object({
  worker_id: Type.String(),
  worker_url: Type.String(),
  verb: Type.String(),
  capability: Type.String(),
  version: Type.String(),
  /** Controller the worker is attached to. */
  controller_id: Type.String(),
  incarnation: Type.Integer(),
  state: HealthState,
  load: Type.Integer(),
  cost_tokens_per_invocation: Type.Optional(Type.Number()),
  strategy: Strategy
})
/** The worker a route query chose. */
export type RouteResult = Static<typeof RouteReply>

// ---------------------------------------------------------------- listings

export const CapabilitySummary = Type.Object({
  verb: Type.String(),
  name: Type.String(),
  versions: Type.Array(Type.String()),
  workers: Type.Integer(),
  healthy_workers: Type.Integer()
})
export type CapabilitySummary = Static<typeof CapabilitySummary>

export const CapabilitiesReply = Type.Object({ capabilities: Type.Array(CapabilitySummary) })

export const WorkersQuerystring = Type.Object({
  state: Type.Optional(HealthState),
  capability: Type.Optional(Name),
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$' })),
  offset: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })),
  index: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'Blocking query: answer once something changed after this index (the `index` of an earlier answer), or at `wait`.' })),
  wait: Type.Optional(Type.String({ maxLength: 32, description: 'Blocking query: the longest wait, e.g. 30s, 500ms, 5m (at most 5m; default 60s). Only with `index`.' }))
}, { additionalProperties: false })

export const WorkerView = Type.Object({
  worker_id: Type.String(),
  worker_url: Type.String(),
  capabilities: Type.Array(Capability),
  state: HealthState,
  /** ISO time of the last heartbeat this controller saw, null if none (or owned elsewhere). */
  last_heartbeat: Type.Union([Type.String(), Type.Null()]),
  load: Type.Integer(),
  controller_id: Type.String(),
  incarnation: Type.Integer(),
  registered_at: Type.String()
})
export type WorkerView = Static<typeof WorkerView>

export const WorkersReply = Type.Object({
  total: Type.Integer(),
  workers: Type.Array(WorkerView),
  /** The controller's change index this listing is consistent with (also the `x-capmesh-index` header): the `index` of the next blocking query. */
  index: Type.Integer({ description: 'The change index this listing is consistent with (also in the x-capmesh-index header): pass it as `index` to wait for the next change.' })
})
export type WorkersReply = Static<typeof WorkersReply>

// ------------------------------------------------------------------- watch
//
// `GET /watch` is a Server-Sent Events stream. Each event has a name (the
// SSE `event:` line), a JSON body (`data:`) declared below, and — except
// `overflow` — an id `<epoch>-<index>` (`id:`): the controller process's
// epoch and the event's place in its change log. A client that reconnects
// with the last id it saw (`Last-Event-ID`, or `?since=`) gets every event
// after it; one whose id is from another epoch (a restart, another
// controller) or older than the log holds gets a `snapshot` first.

/** What this controller knows of another controller: heard from, silent for unhealthy-after, gone for stale-after. */
export const OwnerStatus = Type.Union([Type.Literal('unknown'), Type.Literal('alive'), Type.Literal('silent'), Type.Literal('gone')])

/** What a watcher may filter on (`?kind=`): worker registrations, their health, the controllers. */
export const WatchKind = Type.Union([Type.Literal('worker'), Type.Literal('health'), Type.Literal('controller')])
export type WatchKind = Static<typeof WatchKind>

const CapabilityNames = Type.Array(Type.String(), { description: 'Names of the capabilities the worker offers (for filters and caches).' })

/** `worker_added`, `worker_updated` (kind `worker`): the worker as `/workers` lists it, with the state this controller routes it by. */
export const WorkerEventData = Type.Object({ worker: WorkerView })
export type WorkerEventData = Static<typeof WorkerEventData>

/** `worker_removed` (kind `worker`): deregistered, expired, or dropped with its gone controller. */
export const WorkerRemovedData = Type.Object({
  worker_id: Type.String(),
  controller_id: Type.String(),
  incarnation: Type.Integer(),
  capabilities: CapabilityNames
})
export type WorkerRemovedData = Static<typeof WorkerRemovedData>

/** `worker_state` (kind `health`): the state this controller routes a worker by changed. */
export const WorkerStateData = Type.Object({
  worker_id: Type.String(),
  controller_id: Type.String(),
  capabilities: CapabilityNames,
  from: HealthState,
  to: HealthState,
  load: Type.Integer()
})
export type WorkerStateData = Static<typeof WorkerStateData>

/** `controller_status` (kind `controller`): another controller joined (→ alive), went silent, came back or is gone. */
export const ControllerStatusData = Type.Object({
  controller_id: Type.String(),
  from: OwnerStatus,
  to: OwnerStatus
})
export type ControllerStatusData = Static<typeof ControllerStatusData>

/**
 * `self_preservation` (kind `controller`): a controller entered (`on`) or left it. For the
 * controller serving the stream, `reason` says whether its workers or its peers went silent;
 * for another, null (its digests say only that it is in self-preservation).
 */
export const SelfPreservationData = Type.Object({
  controller_id: Type.String(),
  on: Type.Boolean(),
  reason: Type.Union([Type.Literal('workers'), Type.Literal('peers'), Type.Null()])
})
export type SelfPreservationData = Static<typeof SelfPreservationData>

/** One controller in a snapshot: this one (`self: true`) and every other it knows. */
export const WatchController = Type.Object({
  controller_id: Type.String(),
  status: OwnerStatus,
  self_preservation: Type.Boolean(),
  self: Type.Boolean()
})
export type WatchController = Static<typeof WatchController>

/**
 * `snapshot`: the whole state the following events apply to — every worker (those offering the
 * filtered capabilities), every controller — consistent with change `index` of `epoch`. Sent
 * first to a watcher without a usable cursor; it replaces whatever the client held.
 */
export const WatchSnapshot = Type.Object({
  controller_id: Type.String({ description: 'The controller serving the stream.' }),
  epoch: Type.String(),
  index: Type.Integer(),
  workers: Type.Array(WorkerView),
  controllers: Type.Array(WatchController)
})
export type WatchSnapshot = Static<typeof WatchSnapshot>

/** `overflow`: the last event of a stream the controller cut off, and why. No id: reconnect with the last id seen. */
export const WatchOverflowData = Type.Object({
  reason: Type.Union([Type.Literal('lagged'), Type.Literal('stalled')], { description: 'lagged: the change log no longer holds the next event for this watcher; stalled: it read nothing for several keepalive intervals.' }),
  message: Type.String(),
  buffered_bytes: Type.Integer({ description: 'Bytes written to the connection and not yet taken by the client.' }),
  limit_bytes: Type.Integer({ description: 'The controller\'s watch-buffer.' }),
  index: Type.Integer({ description: 'The last change index delivered to this watcher.' })
})
export type WatchOverflowData = Static<typeof WatchOverflowData>

/** Every event of a watch stream, by name: its kind (what `?kind=` selects; null: always sent) and its data. */
export interface WatchEventMap {
  worker_added: WorkerEventData
  worker_updated: WorkerEventData
  worker_removed: WorkerRemovedData
  worker_state: WorkerStateData
  controller_status: ControllerStatusData
  self_preservation: SelfPreservationData
}
export type WatchEventName = keyof WatchEventMap

/** The kind of each event (what `?kind=` selects). */
export const WATCH_EVENT_KINDS: { readonly [K in WatchEventName]: WatchKind } = {
  worker_added: 'worker',
  worker_updated: 'worker',
  worker_removed: 'worker',
  worker_state: 'health',
  controller_status: 'controller',
  self_preservation: 'controller'
}

/** The data schema of every event a watch stream carries, by SSE event name. */
export const WATCH_EVENT_SCHEMAS = {
  worker_added: WorkerEventData,
  worker_updated: WorkerEventData,
  worker_removed: WorkerRemovedData,
  worker_state: WorkerStateData,
  controller_status: ControllerStatusData,
  self_preservation: SelfPreservationData,
  snapshot: WatchSnapshot,
  overflow: WatchOverflowData
} as const

/** One change, as a watcher receives it: SSE `id:` (`<epoch>-<index>`), `event:` and `data:`. */
export type WatchEvent = { [K in WatchEventName]: { id: string, index: number, event: K, data: WatchEventMap[K] } }[WatchEventName]

/** `GET /watch`'s query string. */
export const WatchQuerystring = Type.Object({
  capability: Type.Optional(Type.Union([Name, Type.Array(Name, { minItems: 1, maxItems: 64 })], { description: 'Only events about workers offering this capability (repeatable); controller events always pass.' })),
  kind: Type.Optional(Type.String({ pattern: '^(worker|health|controller)(,(worker|health|controller)){0,2}$', description: 'Comma-separated kinds: worker (added, updated, removed), health (worker_state), controller (controller_status, self_preservation). Default: all.' })),
  since: Type.Optional(Type.String({ maxLength: 64, description: 'Resume after this event id (as the Last-Event-ID header, which wins when both are given).' }))
}, { additionalProperties: false })
export type WatchQuerystring = Static<typeof WatchQuerystring>

/** An event id: `<epoch>-<index>`. */
export const WATCH_EVENT_ID = /^([0-9a-z]{1,32})-([0-9]{1,15})$/

// ------------------------------------------------------------------- state

export const STATE_FORMAT = 'capmesh-state'

/** The registry as a portable document (`GET /state/export`, `POST /state/import`). */
export const PortableState = Type.Object({
  format: Type.Literal(STATE_FORMAT),
  version: Type.Literal(1),
  /** Controller that produced the export. */
  controller_id: Type.String({ maxLength: 64 }),
  /** ISO time of the export (informational). */
  exported_at: Type.String({ maxLength: 64 }),
  /** Live workers in the export (informational). */
  workers: Type.Integer({ minimum: 0 }),
  /** The Yjs update, base64. */
  update: Type.String({ pattern: '^[A-Za-z0-9+/]*={0,2}$' })
}, { additionalProperties: false })
export type PortableState = Static<typeof PortableState>

export const ImportReply = Type.Object({
  status: Type.Literal('imported'),
  added: Type.Integer(),
  workers: Type.Integer()
})
export type ImportReply = Static<typeof ImportReply>

// ------------------------------------------------------ health and the mesh

const StateCounts = Type.Object({ healthy: Type.Integer(), unhealthy: Type.Integer(), draining: Type.Integer(), pending: Type.Integer() })
const SelfPreservation = Type.Object({ workers: Type.Boolean(), peers: Type.Boolean() })

export const SyncFailureReason = Type.Union([
  Type.Literal('too_large'), Type.Literal('timeout'), Type.Literal('closed'), Type.Literal('malformed'), Type.Literal('rejected'), Type.Literal('dial'), Type.Literal('internal')
])

/** What /health and /mesh say of anti-entropy. */
export const SyncHealth = Type.Object({
  /** `behind`: exchanges with some connected peer keep failing, so this controller may not converge with it. */
  state: Type.Union([Type.Literal('ok'), Type.Literal('behind')]),
  behind: Type.Array(Type.Object({
    peer_id: Type.String(),
    controller_id: Type.Union([Type.String(), Type.Null()]),
    failures: Type.Integer({ description: 'Failed exchanges in a row.' }),
    reason: Type.String({ description: 'too_large, timeout, closed, malformed, rejected, dial or internal.' }),
    last_error: Type.String(),
    last_error_at: Type.String(),
    failing_since: Type.String()
  }))
})
export type SyncHealth = Static<typeof SyncHealth>

export const HealthReply = Type.Object({
  /** `self_preservation` outranks `behind`, which outranks `ok`. */
  status: Type.Union([Type.Literal('ok'), Type.Literal('behind'), Type.Literal('self_preservation')]),
  controller_id: Type.String(),
  uptime_s: Type.Integer(),
  /** Every worker in the registry, by the state this controller routes it by. */
  workers: Type.Intersect([Type.Object({ total: Type.Integer() }), StateCounts]),
  /** The workers attached here (this controller holds their heartbeats). */
  own_workers: StateCounts,
  registry: Type.Object({
    workers: Type.Integer(),
    segments: Type.Integer(),
    ownSegment: Type.Union([Type.String(), Type.Null()]),
    ownGarbage: Type.Integer(),
    compactions: Type.Integer()
  }),
  sync: SyncHealth,
  mesh: Type.Object({
    peer_id: Type.Union([Type.String(), Type.Null()]),
    /** Where the p2p listener is bound (`/ip4/0.0.0.0/tcp/9100` when bound to every interface). */
    listen_addrs: Type.Array(Type.String()),
    /** What peers are told to dial: the `--advertise` names and addresses with the p2p port and peer id. */
    advertised_addrs: Type.Array(Type.String()),
    connected_peers: Type.Integer(),
    registry_hash: Type.String(),
    self_preservation: SelfPreservation,
    /** Public id of the primary mesh key (what this controller keys new connections with). */
    mesh_key_id: Type.Union([Type.String(), Type.Null()]),
    /** Every mesh key this controller accepts, the primary first (more than one during a key rotation). */
    mesh_key_ids: Type.Array(Type.String())
  }),
  store: Type.Union([Type.Object({ logBytes: Type.Integer(), snapshotBytes: Type.Integer() }), Type.Null()]),
  tls: Type.Object({ ca_path: Type.Union([Type.String(), Type.Null()]) }),
  /** `off`: this controller asks nobody who they are (anyone may change the registry). */
  auth: Type.Object({ mode: Type.Union([Type.Literal('required'), Type.Literal('off')]), trust_domain: Type.String(), health: Type.Union([Type.Literal('open'), Type.Literal('required')]) }),
  config: Type.Object({ heartbeat_interval_ms: Type.Integer(), unhealthy_after_ms: Type.Integer(), stale_after_ms: Type.Integer() })
})
export type HealthReply = Static<typeof HealthReply>

export const PeerStatus = Type.Object({
  peer_id: Type.String(),
  controller_id: Type.Union([Type.String(), Type.Null()]),
  connected: Type.Boolean(),
  /** ISO time of the last completed anti-entropy exchange. */
  last_sync_at: Type.Union([Type.String(), Type.Null()]),
  last_sync_ms: Type.Union([Type.Number(), Type.Null()]),
  /** State vectors were equal at the last exchange. */
  in_sync: Type.Union([Type.Boolean(), Type.Null()]),
  /** `behind`: exchanges with it keep failing (see sync_failures and last_sync_error). */
  sync_state: Type.Union([Type.Literal('ok'), Type.Literal('failing'), Type.Literal('behind')]),
  /** Failed exchanges in a row (0 after a success). */
  sync_failures: Type.Integer(),
  /** The last failure of this run, null once an exchange succeeds. */
  last_sync_error: Type.Union([Type.Object({ reason: SyncFailureReason, message: Type.String(), at: Type.String() }), Type.Null()]),
  last_message_at: Type.Union([Type.String(), Type.Null()])
})
export type PeerStatus = Static<typeof PeerStatus>

export const MemberStatus = Type.Object({
  status: OwnerStatus,
  last_heard_ms_ago: Type.Union([Type.Integer(), Type.Null()]),
  registry_hash: Type.Union([Type.String(), Type.Null()]),
  registry_hash_matches: Type.Union([Type.Boolean(), Type.Null()]),
  self_preservation: Type.Boolean()
})
export type MemberStatus = Static<typeof MemberStatus>

/** Why a peer was refused (it is not in the allow list), by where it was turned away. */
export const RefusalReason = Type.Union([
  Type.Literal('inbound'), Type.Literal('outbound'), Type.Literal('dial'), Type.Literal('introduced'), Type.Literal('gossip'), Type.Literal('revoked')
], { description: 'inbound: its connection; outbound: a connection this controller dialled led to it; dial: not dialled; introduced: an introduction of it not taken; gossip: a message it signed, forwarded by another peer, dropped; revoked: hung up on after a reload removed it.' })

/** A libp2p peer that holds the mesh key but is not admitted by the allow list, as /mesh lists it. */
export const RefusedPeer = Type.Object({
  peer_id: Type.String(),
  /** The remote address of its last refused connection (or the introduced address), when known. */
  address: Type.Union([Type.String(), Type.Null()]),
  /** Refusals since this controller started. */
  count: Type.Integer(),
  /** ISO time of the last refusal. */
  last_at: Type.String(),
  /** Where the last refusal happened. */
  reason: RefusalReason
})
export type RefusedPeer = Static<typeof RefusedPeer>

/** A mesh key this controller accepts, or one it no longer accepts that open connections still use. */
export const MeshKeyStatus = Type.Object({
  id: Type.String(),
  /** New connections are keyed with it. */
  primary: Type.Boolean(),
  /** False for a key that was removed from the ring but still keys open connections (they are being closed and re-dialled). */
  accepted: Type.Boolean(),
  /** Open connections keyed with it, in either direction. */
  connections: Type.Integer()
})
export type MeshKeyStatus = Static<typeof MeshKeyStatus>

export const MeshReply = Type.Object({
  controller_id: Type.String(),
  peer_id: Type.Union([Type.String(), Type.Null()]),
  /** Where the p2p listener is bound. */
  listen_addrs: Type.Array(Type.String()),
  /** What peers are told to dial (identify, liveness digests). */
  advertised_addrs: Type.Array(Type.String()),
  connected_peers: Type.Integer(),
  /** libp2p peers: connection and anti-entropy state with each. */
  peers: Type.Array(PeerStatus),
  /** Controllers known from the registry or heard from, by controller id: what each last said. */
  owners: Type.Record(Type.String(), MemberStatus),
  registry_hash: Type.String(),
  sync: SyncHealth,
  self_preservation: SelfPreservation,
  /** Public id of the primary mesh key. */
  mesh_key_id: Type.Union([Type.String(), Type.Null()]),
  /** Every accepted mesh key, the primary first, with the connections using each; then removed keys still in use. */
  mesh_keys: Type.Array(MeshKeyStatus),
  /** The peer allow list in force: its file, and the controllers it admits. */
  admission: Type.Object({
    file: Type.Union([Type.String(), Type.Null()]),
    controllers: Type.Array(Type.Object({ controller_id: Type.String(), peer_id: Type.String() }))
  }),
  /** Peers refused because the allow list does not admit them, most recent first (at most 1024). */
  refused: Type.Array(RefusedPeer)
})
export type MeshReply = Static<typeof MeshReply>

// --------------------------------------------------------------- dashboard

/** One controller as the dashboard draws it: what this controller last heard of it, and its link to it. */
export const DashboardController = Type.Object({
  controller_id: Type.String(),
  /** The controller serving the dashboard. */
  self: Type.Boolean(),
  status: OwnerStatus,
  /** Since its last digest (ms); null for this controller, or one never heard from. */
  last_heard_ms_ago: Type.Union([Type.Integer(), Type.Null()]),
  /** The registry hash in its last digest (this controller's own for `self`). */
  registry_hash: Type.Union([Type.String(), Type.Null()]),
  self_preservation: Type.Boolean(),
  /** This controller's libp2p link to it; null for `self`, or a controller it has no peer entry for. */
  link: Type.Union([Type.Object({
    connected: Type.Boolean(),
    /** State vectors were equal at the last anti-entropy exchange. */
    in_sync: Type.Union([Type.Boolean(), Type.Null()]),
    last_sync_ms: Type.Union([Type.Number(), Type.Null()]),
    sync_state: Type.Union([Type.Literal('ok'), Type.Literal('failing'), Type.Literal('behind')])
  }), Type.Null()])
})
export type DashboardController = Static<typeof DashboardController>

/** `GET /ui/mesh`: the mesh as the dashboard shows it (a client's share of /health and /mesh: no peer ids, keys or allow list). */
export const DashboardMeshReply = Type.Object({
  controller_id: Type.String(),
  /** This controller's clock (ISO), for the dashboard to place the watch's timestamps against its own. */
  now: Type.String(),
  status: Type.Union([Type.Literal('ok'), Type.Literal('behind'), Type.Literal('self_preservation')]),
  registry_hash: Type.String(),
  self_preservation: SelfPreservation,
  workers: Type.Intersect([Type.Object({ total: Type.Integer() }), StateCounts]),
  config: Type.Object({ heartbeat_interval_ms: Type.Integer(), unhealthy_after_ms: Type.Integer(), stale_after_ms: Type.Integer() }),
  /** This controller first, then every other it knows, by id. */
  controllers: Type.Array(DashboardController)
})
export type DashboardMeshReply = Static<typeof DashboardMeshReply>
