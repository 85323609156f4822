/**
 * One place that turns every failure into a JSON body with a stable code:
 * fastify's validation errors (which field, why), body-parser errors (bad
 * JSON, wrong content type, too large), capmesh's own typed errors, and
 * unknown routes. Nothing a client sends reaches a 5xx; a 5xx here is a bug,
 * logged with its stack.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { AuthError, CapmeshError, ERROR_CODES, type ErrorCode, type FieldProblem } from '../../errors.ts'

interface AjvIssue {
  instancePath: string
  message?: string
  keyword: string
  params: Record<string, unknown>
}

/** `body/worker_id`, `querystring/verb`: where the problem is, as a client sees it. */
function problemOf (issue: AjvIssue, context: string): FieldProblem {
  let path = issue.instancePath
  if (issue.keyword === 'required') path += `/${String(issue.params.missingProperty)}`
  if (issue.keyword === 'additionalProperties') path += `/${String(issue.params.additionalProperty)}`
  const field = `${context}${path}`
  let message = issue.message ?? issue.keyword
  if (issue.keyword === 'additionalProperties') message = 'is not an allowed field'
  if (issue.keyword === 'pattern' && path.endsWith('worker_url')) message = 'must be an http(s) URL'
  if (issue.keyword === 'pattern' && path.endsWith('worker_id')) message = 'must be printable ASCII without spaces'
  return { field, message }
}

/** fastify's own body-parser errors: the code they get, and a more precise wire word where there is one. */
const FASTIFY_CODES: Record<string, [ErrorCode, string?]> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE'],
  FST_ERR_CTP_BODY_TOO_LARGE: ['CAPMESH_ERR_BODY_TOO_LARGE'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['CAPMESH_ERR_VALIDATION', 'invalid_content_length'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['CAPMESH_ERR_VALIDATION'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['CAPMESH_ERR_VALIDATION', 'invalid_json'],
  FST_ERR_CTP_EMPTY_TYPE: ['CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE']
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The CAPMESH_ERR_* code the request was answered with, if it failed (for the audit trail). */
    errorCode: string | null
  }
}

export function errorHandler (app: FastifyInstance): void {
  app.decorateRequest('errorCode', null)
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    // capmesh's own errors know their status, headers and body (a 500 is a bug: logged below).
    if (err instanceof CapmeshError && err.status !== 500) {
      req.errorCode = err.code
      if (err instanceof AuthError) req.authFailure = err.reason
      return reply.code(err.status).headers(err.headers()).send(err.wireBody())
    }
    if (err.validation != null) {
      const details = (err.validation as AjvIssue[]).map(i => problemOf(i, err.validationContext ?? 'body'))
      const summary = details.map(d => `${d.field} ${d.message}`).join('; ')
      return reply.code(400).send({ error: 'validation_failed', code: 'CAPMESH_ERR_VALIDATION', message: summary, details })
    }
    const mapped = FASTIFY_CODES[err.code]
    if (mapped != null) {
      const [code, wire] = mapped
      return reply.code(err.statusCode ?? 400).send({ error: wire ?? ERROR_CODES[code].wire, code, message: err.message })
    }
    if (err.statusCode != null && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: 'bad_request', code: 'CAPMESH_ERR_VALIDATION', message: err.message })
    }
    req.log.error({ err }, 'unhandled error')
    return reply.code(500).send({ error: 'internal_error', code: 'CAPMESH_ERR_INTERNAL', message: 'internal error (logged on the controller)' })
  })

  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: 'not_found', code: 'CAPMESH_ERR_NOT_FOUND', message: `no endpoint ${req.method} ${req.url.split('?')[0].slice(0, 200)}` })
  })
}
