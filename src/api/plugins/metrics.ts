/**
 * The metrics feature: every answered request is counted and timed by its
 * route's pattern, and `GET /metrics` serves the Prometheus text format.
 * Without `metrics` in the components (unit tests of other routes), neither.
 */
import type { onResponseHookHandler } from 'fastify'
import type { HttpRecorder } from '../../metrics/index.ts'
import type { Api, ApiComponents } from '../types.ts'
import { addRouteHook, type NotFoundHooks } from './route-hooks.ts'

/** Methods kept as a label; anything else a client makes up is counted as `other` (labels must stay few). */
const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'])

export function metricsPlugin (app: Api, { metrics }: ApiComponents): NotFoundHooks {
  if (metrics == null) return {}
  // One callback hook per route, its pattern known when it is declared (route-hooks.ts).
  const hookFor = (route: string): onResponseHookHandler => {
    const recorders = new Map<string, HttpRecorder>()
    return (req, reply, done) => {
      const method = METHODS.has(req.method) ? req.method : 'other'
      let record = recorders.get(method)
      if (record == null) recorders.set(method, record = metrics.httpRecorder(method, route))
      record(reply.statusCode, reply.elapsedTime / 1000)
      if (req.authFailure != null) metrics.observeAuthFailure(req.authFailure, route)
      done()
    }
  }
  app.addHook('onRoute', route => { addRouteHook(route, 'onResponse', hookFor(route.url)) })
  app.get('/metrics', { config: { access: ['metrics'] }, schema: { summary: 'Prometheus metrics (text exposition format)', produces: ['text/plain'] } }, async (_req, reply) => {
    const text = await metrics.text()
    return await reply.type(metrics.contentType).send(text)
  })
  return { onResponse: [hookFor('unmatched')] }
}
