/**
 * Every failure capmesh reports has a class here with a stable `code`
 * (`CAPMESH_ERR_*`) and the HTTP status the API maps it to. Tests and
 * clients match on `code` / `name`, never on message text.
 * `docs/errors.md` lists every code; a unit test keeps the two in step.
 */

export interface ErrorSpec {
  readonly code: string
  readonly status: number
  readonly description: string
}

/** One table of every error code: message template, HTTP status. */
export const ERROR_CODES = {
  CAPMESH_ERR_VALIDATION: { status: 400, description: 'A request body, query, flag, config file or peer message failed validation.' },
  CAPMESH_ERR_BODY_TOO_LARGE: { status: 413, description: 'A request body exceeded the configured size limit.' },
  CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, description: 'A request body was not sent as application/json.' },
  CAPMESH_ERR_NOT_FOUND: { status: 404, description: 'No such endpoint.' },
  CAPMESH_ERR_NO_WORKER: { status: 404, description: 'No registered worker offers the requested verb and capability (with the requested filters).' },
  CAPMESH_ERR_NO_HEALTHY_WORKER: { status: 503, description: 'Workers offer the capability but none is healthy right now; retry after the Retry-After delay.' },
  CAPMESH_ERR_INVALID_STATE: { status: 400, description: 'An imported registry document is not a valid capmesh state.' },
  CAPMESH_ERR_CONFIG: { status: 400, description: 'The controller configuration is invalid (flag or config file).' },
  CAPMESH_ERR_TLS: { status: 500, description: 'TLS material could not be created or loaded.' },
  CAPMESH_ERR_STORE: { status: 500, description: 'The data dir could not be read or written.' },
  CAPMESH_ERR_INTERNAL: { status: 500, description: 'An unexpected internal error (a bug: please report it).' }
} as const satisfies Record<string, Omit<ErrorSpec, 'code'>>

export type ErrorCode = keyof typeof ERROR_CODES

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
}

export class ConfigError extends CapmeshError {
  constructor (message: string, details?: unknown) {
    super('CAPMESH_ERR_CONFIG', message, details)
    this.name = 'ConfigError'
  }
}

export class InvalidStateError extends CapmeshError {
  constructor (message: string, options?: ErrorOptions) {
    super('CAPMESH_ERR_INVALID_STATE', message, undefined, options)
    this.name = 'InvalidStateError'
  }
}

export class NoWorkerError extends CapmeshError {
  readonly capability: string
  constructor (capability: string, verb: string) {
    super('CAPMESH_ERR_NO_WORKER', `no worker offers ${verb}:${capability} with the requested constraints`)
    this.name = 'NoWorkerError'
    this.capability = capability
  }
}

export class NoHealthyWorkerError extends CapmeshError {
  readonly capability: string
  /** Seconds a client should wait before asking again. */
  readonly retryAfter: number
  constructor (capability: string, verb: string, retryAfter: number) {
    super('CAPMESH_ERR_NO_HEALTHY_WORKER', `workers offer ${verb}:${capability} but none is healthy`)
    this.name = 'NoHealthyWorkerError'
    this.capability = capability
    this.retryAfter = retryAfter
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
