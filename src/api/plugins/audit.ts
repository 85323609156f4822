/**
 * The audit trail: every request that changes the registry (register,
 * deregister, drain, state import) is logged once answered, with who asked,
 * for which worker, and what came of it. No secrets: identities are their
 * public ids, bodies are not logged.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Api } from '../types.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Log this route's requests to the audit trail, under this action name. */
    audit?: string
  }
}

export function auditPlugin (app: Api, log: FastifyBaseLogger | undefined): void {
  if (log == null) return
  app.addHook('onResponse', (req, reply, done) => {
    const action = req.routeOptions.config.audit
    if (action != null) {
      const body = req.body as { worker_id?: unknown } | undefined
      const error = reply.statusCode >= 400 ? (req.authFailure ?? req.errorCode ?? `http_${reply.statusCode}`) : null
      log.info({
        audit: action,
        identity: req.identity?.id ?? null,
        worker_id: typeof body?.worker_id === 'string' ? body.worker_id : undefined,
        status: reply.statusCode,
        outcome: error == null ? 'ok' : error
      }, `${action} ${reply.statusCode < 400 ? 'done' : 'refused'}`)
    }
    done()
  })
}
