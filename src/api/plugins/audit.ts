/**
 * The audit trail: every request that changes the registry (register,
 * deregister, drain, state import) is logged once answered, with who asked,
 * for which worker, and what came of it. No secrets: identities are their
 * public ids, bodies are not logged. Only the routes that name an audit
 * action get the hook. A batch registration logs one line per worker
 * (`req.auditItems`, set by its handler).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Api } from '../types.ts'
import { addRouteHook } from './route-hooks.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Log this route's requests to the audit trail, under this action name. */
    audit?: string
  }
  interface FastifyRequest {
    /** Per-worker outcomes of a request acting for several workers: one audit line each. */
    auditItems: Array<{ worker_id: string, outcome: string }> | null
  }
}

export function auditPlugin (app: Api, log: FastifyBaseLogger | undefined): void {
  app.decorateRequest('auditItems', null)
  if (log == null) return
  app.addHook('onRoute', route => {
    const action = route.config?.audit
    if (action == null) return
    addRouteHook(route, 'onResponse', (req, reply, done) => {
      const identity = req.identity?.id ?? null
      const status = reply.statusCode
      const items = req.auditItems
      if (items != null && status < 400) {
        for (const it of items) {
          log.info({ audit: action, identity, worker_id: it.worker_id, status, outcome: it.outcome }, `${action} ${it.outcome === 'ok' ? 'done' : 'refused'}`)
        }
      } else {
        const body = req.body as { worker_id?: unknown } | undefined
        const error = status >= 400 ? (req.authFailure ?? req.errorCode ?? `http_${status}`) : null
        log.info({
          audit: action,
          identity,
          worker_id: typeof body?.worker_id === 'string' ? body.worker_id : undefined,
          status,
          outcome: error == null ? 'ok' : error
        }, `${action} ${status < 400 ? 'done' : 'refused'}`)
      }
      done()
    })
  })
}
