/**
 * Every failure capmesh reports has a class here with a stable `code`
 * (`CAPMESH_ERR_*`), the HTTP status the API maps it to, and the short word
 * its response body carries as `error` (the wire name). An error knows its
 * own response: `wireBody()` and `headers()`, so the API's error handler is
 * one generic branch. Tests and clients match on `code` / `name`, never on
 * message text. `docs/errors.md` lists every code; a unit test keeps the two
 * in step.
 */

export interface ErrorSpec {
  readonly code: string
  readonly status: number
  /** The `error` field of the response body (kept from the platform's wire contract where it had one). */
  readonly wire: string
  readonly description: string
}

/** One table of every error code: HTTP status, wire name, meaning. */
export const ERROR_CODES = {
  CAPMESH_ERR_VALIDATION: { status: 400, wire: 'validation_failed', description: 'A request body, query, flag, config file or peer message failed validation.' },
  CAPMESH_ERR_BODY_TOO_LARGE: { status: 413, wire: 'body_too_large', description: 'A request body exceeded the configured size limit.' },
  CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, wire: 'unsupported_media_type', description: 'A request body was not sent as application/json.' },
  CAPMESH_ERR_NOT_FOUND: { status: 404, wire: 'not_found', description: 'No such endpoint.' },
  CAPMESH_ERR_NO_WORKER: { status: 404, wire: 'no_worker_available', description: 'No registered worker offers the requested verb and capability (with the requested filters).' },
  CAPMESH_ERR_NO_HEALTHY_WORKER: { status: 503, wire: 'no_worker_available', description: 'Workers offer the capability but none is healthy right now; retry after the Retry-After delay.' },
  CAPMESH_ERR_UNAUTHENTICATED: { status: 401, wire: 'unauthenticated', description: 'The request carried no identity capmesh accepts: no client certificate or bearer token, or one that failed verification (`reason` says which check).' },
  CAPMESH_ERR_FORBIDDEN: { status: 403, wire: 'forbidden', description: 'The caller\'s identity is known, but its role may not use this endpoint, or the identity is denied.' },
  CAPMESH_ERR_WORKER_IDENTITY: { status: 403, wire: 'worker_identity', description: 'The caller acted for a worker id its identity does not cover, or for one registered by another identity.' },
  CAPMESH_ERR_ROUTE_DENIED: { status: 403, wire: 'route_denied', description: 'The route policy does not let this identity route to the capability.' },
  CAPMESH_ERR_RATE_LIMITED: { status: 429, wire: 'rate_limited', description: 'The caller made more requests in the last second than its identity may (--rate-limit); retry after the Retry-After delay.' },
  CAPMESH_ERR_OVERLOADED: { status: 503, wire: 'overloaded', description: 'The controller is under pressure (its event loop is late, or its heap is over the limit) and sheds new requests; retry after the Retry-After delay.' },
  CAPMESH_ERR_TOO_MANY_WATCHERS: { status: 503, wire: 'too_many_watchers', description: 'The controller already serves as many watchers (/watch streams and blocking /workers queries) as --max-watchers allows; retry after the Retry-After delay, or at another controller.' },
  CAPMESH_ERR_SUPERSEDED: { status: 409, wire: 'superseded', description: 'A heartbeat (or drain) from an older attachment of a worker that has since attached elsewhere with a newer incarnation; ignored.' },
  CAPMESH_ERR_INVALID_STATE: { status: 400, wire: 'InvalidStateError', description: 'An imported registry document is not a valid capmesh state.' },
  CAPMESH_ERR_UNSIGNED_WRITE: { status: 400, wire: 'unsigned_write', description: 'Registry data (an import, a peer\'s update, a record in the data dir) holds a segment whose content its owner did not sign, or that is signed by a key not admitted for that owner.' },
  CAPMESH_ERR_CONFIG: { status: 400, wire: 'ConfigError', description: 'The controller configuration is invalid (flag or config file).' },
  CAPMESH_ERR_TLS: { status: 500, wire: 'internal_error', description: 'TLS material could not be created or loaded.' },
  CAPMESH_ERR_STORE: { status: 500, wire: 'internal_error', description: 'The data dir could not be read or written.' },
  CAPMESH_ERR_CONTROLLER_UNAVAILABLE: { status: 503, wire: 'controller_unavailable', description: 'Worker agent: a controller could not be reached (refused, reset, TLS failure) or answered 5xx. Retried, then the next controller is tried.' },
  CAPMESH_ERR_TIMEOUT: { status: 504, wire: 'timeout', description: 'Worker agent: a controller did not answer within the per-attempt timeout. Retried like an unavailable controller.' },
  CAPMESH_ERR_REJECTED: { status: 400, wire: 'rejected', description: 'Worker agent: a controller rejected the registration (4xx). Permanent: not retried; the controller\'s reason is attached.' },
  CAPMESH_ERR_NO_CONTROLLER: { status: 503, wire: 'no_controller', description: 'Worker agent: no controller in the failover list accepted the worker.' },
  CAPMESH_ERR_INTERNAL: { status: 500, wire: 'internal_error', description: 'An unexpected internal error (a bug: please report it).' }
} as const satisfies Record<string, Omit<ErrorSpec, 'code'>>

export type ErrorCode = keyof typeof ERROR_CODES

/** The JSON body of an error response (see wire/ for its schema). */
export interface ErrorWireBody {
  error: string
  code: ErrorCode
  message: string
  [field: string]: unknown
}

/** Base class: carries a stable code, the HTTP status and optional details. */
export class CapmeshError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly details?: unknown

  constructor (code: ErrorCode, message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options)
    this.name = 'CapmeshError'
    this.code = code
    this.status = ERROR_CODES[code].status
    this.details = details
  }

  /** The `error` word of the response body. */
  get wire (): string { return ERROR_CODES[this.code].wire }

  /** The response body: error, code, message, plus what the subclass adds. */
  wireBody (): ErrorWireBody {
    return { error: this.wire, code: this.code, message: this.message }
  }

  /** Response headers the error asks for (e.g. Retry-After). */
  headers (): Record<string, string> { return {} }
}

/** One problem found by validation: where (`field`, a JSON pointer or flag name) and why. */
export interface FieldProblem {
  field: string
  message: string
}

export class ValidationError extends CapmeshError {
  readonly problems: FieldProblem[]
  constructor (message: string, problems: FieldProblem[] = []) {
    super('CAPMESH_ERR_VALIDATION', message, problems)
    this.name = 'ValidationError'
    this.problems = problems
  }

  override wireBody (): ErrorWireBody {
    return { ...super.wireBody(), details: this.problems }
  }
}

export class ConfigError extends CapmeshError {
  constructor (message: string, details?: unknown) {
    super('CAPMESH_ERR_CONFIG', message, details)
    this.name = 'ConfigError'
  }
}

export class InvalidStateError extends CapmeshError {
  constructor (message: string, options?: ErrorOptions, code: 'CAPMESH_ERR_INVALID_STATE' | 'CAPMESH_ERR_UNSIGNED_WRITE' = 'CAPMESH_ERR_INVALID_STATE') {
    super(code, message, undefined, options)
    this.name = 'InvalidStateError'
  }
}

export class NoWorkerError extends CapmeshError {
  readonly capability: string
  readonly verb: string
  constructor (capability: string, verb: string) {
    super('CAPMESH_ERR_NO_WORKER', `no worker offers ${verb}:${capability} with the requested constraints`)
    this.name = 'NoWorkerError'
    this.capability = capability
    this.verb = verb
  }

  override wireBody (): ErrorWireBody {
    return { ...super.wireBody(), capability: this.capability, verb: this.verb }
  }
}

export class NoHealthyWorkerError extends CapmeshError {
  readonly capability: string
  readonly verb: string
  /** Seconds a client should wait before asking again. */
  readonly retryAfter: number
  constructor (capability: string, verb: string, retryAfter: number) {
    super('CAPMESH_ERR_NO_HEALTHY_WORKER', `workers offer ${verb}:${capability} but none is healthy`)
    this.name = 'NoHealthyWorkerError'
    this.capability = capability
    this.verb = verb
    this.retryAfter = retryAfter
  }

  override wireBody (): ErrorWireBody {
    return { ...super.wireBody(), capability: this.capability, verb: this.verb }
  }

  override headers (): Record<string, string> { return { 'retry-after': String(this.retryAfter) } }
}

/**
 * A heartbeat that names an incarnation older than the registry's for a
 * worker now attached elsewhere: a message from before a failover, arriving
 * late. Taking it as a move back would undo the failover.
 */
export class SupersededError extends CapmeshError {
  readonly workerId: string
  /** The incarnation the heartbeat carried. */
  readonly incarnation: number
  /** The registry's incarnation and owner for the worker. */
  readonly current: { incarnation: number, owner: string }
  constructor (workerId: string, incarnation: number, current: { incarnation: number, owner: string }) {
    super('CAPMESH_ERR_SUPERSEDED', `worker ${workerId} attached to ${current.owner} with incarnation ${current.incarnation}; this request is from its attachment with incarnation ${incarnation}`, current)
    this.name = 'SupersededError'
    this.workerId = workerId
    this.incarnation = incarnation
    this.current = current
  }

  override wireBody (): ErrorWireBody {
    return { ...super.wireBody(), worker_id: this.workerId, incarnation: this.current.incarnation, controller_id: this.current.owner }
  }
}

export class TlsError extends CapmeshError {
  constructor (message: string, options?: ErrorOptions) {
    super('CAPMESH_ERR_TLS', message, undefined, options)
    this.name = 'TlsError'
  }
}

export class StoreError extends CapmeshError {
  constructor (message: string, options?: ErrorOptions) {
    super('CAPMESH_ERR_STORE', message, undefined, options)
    this.name = 'StoreError'
  }
}

/** Agent: a controller could not be reached or answered 5xx (retryable). */
export class ControllerUnavailableError extends CapmeshError {
  readonly controller: string
  /** The controller's Retry-After (ms), when it said when to come back (429, 503). */
  readonly retryAfterMs: number | null
  constructor (controller: string, message: string, options?: ErrorOptions & { retryAfterMs?: number | null }) {
    super('CAPMESH_ERR_CONTROLLER_UNAVAILABLE', `${controller}: ${message}`, undefined, options)
    this.name = 'ControllerUnavailableError'
    this.controller = controller
    this.retryAfterMs = options?.retryAfterMs ?? null
  }
}

/** Agent: a controller did not answer in time (retryable). */
export class ControllerTimeoutError extends CapmeshError {
  readonly controller: string
  constructor (controller: string, timeoutMs: number, options?: ErrorOptions) {
    super('CAPMESH_ERR_TIMEOUT', `${controller}: no answer within ${timeoutMs} ms`, undefined, options)
    this.name = 'ControllerTimeoutError'
    this.controller = controller
  }
}

/** Agent: a controller rejected the worker with a 4xx (permanent). `reason` is the controller's body. */
export class RegistrationRejectedError extends CapmeshError {
  readonly controller: string
  readonly httpStatus: number
  readonly reason: unknown
  constructor (controller: string, httpStatus: number, reason: unknown) {
    const msg = typeof reason === 'object' && reason != null && 'message' in reason ? String((reason as { message: unknown }).message) : JSON.stringify(reason)
    super('CAPMESH_ERR_REJECTED', `${controller} rejected the worker (HTTP ${httpStatus}): ${msg}`, reason)
    this.name = 'RegistrationRejectedError'
    this.controller = controller
    this.httpStatus = httpStatus
    this.reason = reason
  }
}

/** Agent: every controller in the list failed. */
export class NoControllerError extends CapmeshError {
  readonly failures: Array<{ controller: string, error: string }>
  constructor (failures: Array<{ controller: string, error: string }>) {
    super('CAPMESH_ERR_NO_CONTROLLER', `no controller accepted the worker: ${failures.map(f => `${f.controller} (${f.error})`).join('; ') || 'none configured'}`, failures)
    this.name = 'NoControllerError'
    this.failures = failures
  }
}

/**
 * Why an identity was refused, each with the code (and so the HTTP status)
 * it is reported under. The reason travels in the response body as
 * `reason`; like codes, reasons are stable.
 */
export const AUTH_REASONS = {
  /** Neither a verified client certificate nor a bearer token. */
  credentials_missing: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** A client certificate was sent but Node's TLS did not verify it against the trusted CAs. */
  certificate_untrusted: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The certificate names two or more SPIFFE ids (the same twice, or different ones). */
  certificate_ambiguous: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The certificate's SPIFFE id is malformed or outside the trust domain. */
  certificate_malformed_san: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** No SPIFFE id in the certificate and its subject is not in the subject map. */
  certificate_no_identity: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The bearer token is larger than the configured limit. */
  token_too_large: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The bearer token is not a compact JWS with a JSON header and claims. */
  token_malformed: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The token's `alg` is not EdDSA or ES256 (`none` included). */
  token_algorithm: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** No configured key fits the token (its `kid` is unknown, or no key of its algorithm). */
  token_unknown_key: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The signature does not verify with the configured keys. */
  token_signature: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** `exp` has passed (beyond the clock tolerance). */
  token_expired: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** `nbf` is in the future (beyond the clock tolerance). */
  token_not_yet_valid: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** `sub`, `role` or `exp` missing or of the wrong type, unknown role, or a bad `worker_ids`. */
  token_claims: 'CAPMESH_ERR_UNAUTHENTICATED',
  /** The identity's role may not use this endpoint. */
  role_not_allowed: 'CAPMESH_ERR_FORBIDDEN',
  /** The identity is on the deny list (`--deny-identity`, the policy file's `deny`). */
  identity_denied: 'CAPMESH_ERR_FORBIDDEN',
  /** The worker id is not among those the identity covers. */
  worker_not_covered: 'CAPMESH_ERR_WORKER_IDENTITY',
  /** The worker id is registered by another identity. */
  worker_owned_by_other: 'CAPMESH_ERR_WORKER_IDENTITY',
  /** No rule of the route policy lets the identity route to the capability. */
  route_policy: 'CAPMESH_ERR_ROUTE_DENIED'
} as const satisfies Record<string, ErrorCode>

export type AuthReason = keyof typeof AUTH_REASONS

/**
 * An identity refused: 401 when there is none capmesh accepts (the response
 * asks for a bearer token with `www-authenticate: Bearer`), 403 when it may
 * not do what it asked. The reason decides the code.
 */
export class AuthError extends CapmeshError {
  readonly reason: AuthReason
  constructor (reason: AuthReason, message: string, options?: ErrorOptions) {
    super(AUTH_REASONS[reason], message, undefined, options)
    this.name = 'AuthError'
    this.reason = reason
  }

  override wireBody (): ErrorWireBody {
    return { ...super.wireBody(), reason: this.reason }
  }

  override headers (): Record<string, string> {
    return this.status === 401 ? { 'www-authenticate': 'Bearer' } : {}
  }
}

/** Too many requests from one identity; the client should wait `retryAfter` seconds. */
export class RateLimitedError extends CapmeshError {
  readonly retryAfter: number
  constructor (retryAfter: number, limit: number) {
    super('CAPMESH_ERR_RATE_LIMITED', `more than ${limit} requests a second from this identity; retry in ${retryAfter} s`)
    this.name = 'RateLimitedError'
    this.retryAfter = retryAfter
  }

  override headers (): Record<string, string> { return { 'retry-after': String(this.retryAfter) } }
}

/** The controller sheds load (event loop late, heap over the limit); the client should wait `retryAfter` seconds. */
export class OverloadedError extends CapmeshError {
  readonly retryAfter: number
  constructor (retryAfter: number, why: string) {
    super('CAPMESH_ERR_OVERLOADED', `the controller is overloaded (${why}); retry in ${retryAfter} s`)
    this.name = 'OverloadedError'
    this.retryAfter = retryAfter
  }

  override headers (): Record<string, string> { return { 'retry-after': String(this.retryAfter) } }
}

/** The controller already serves `max` watchers (`/watch` streams and blocking `/workers` queries); come back after `retryAfter` seconds. */
export class TooManyWatchersError extends CapmeshError {
  readonly retryAfter: number
  constructor (max: number, retryAfter: number) {
    super('CAPMESH_ERR_TOO_MANY_WATCHERS', `this controller already serves ${max} watchers (--max-watchers); retry in ${retryAfter} s, or at another controller`)
    this.name = 'TooManyWatchersError'
    this.retryAfter = retryAfter
  }

  override headers (): Record<string, string> { return { 'retry-after': String(this.retryAfter) } }
}
