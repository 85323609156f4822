/**
 * The metrics feature: every answered request is counted and timed by its
 * route's pattern, and `GET /metrics` serves the Prometheus text format.
 * Without `metrics` in the components (unit tests of other routes), neither.
 */
import type { Api, ApiComponents } from '../types.ts'

/** Methods kept as a label; anything else a client makes up is counted as `other` (labels must stay few). */
const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'])

export function metricsPlugin (app: Api, { metrics }: ApiComponents): void {
  if (metrics == null) return
  // A callback hook, not an async one: it runs on every request, routes included.
  app.addHook('onResponse', (req, reply, done) => {
    const method = METHODS.has(req.method) ? req.method : 'other'
    const route = req.routeOptions.url ?? 'unmatched'
    metrics.observeHttp(method, route, reply.statusCode, reply.elapsedTime / 1000)
    if (req.authFailure != null) metrics.observeAuthFailure(req.authFailure, route)
    done()
  })
  app.get('/metrics', { config: { access: ['metrics'] }, schema: { summary: 'Prometheus metrics (text exposition format)', produces: ['text/plain'] } }, async (_req, reply) => {
    const text = await metrics.text()
    return await reply.type(metrics.contentType).send(text)
  })
}
