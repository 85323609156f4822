import type { RouteQuery } from '../../routing/index.ts'
import { ErrorBody, RouteBody, RouteQuerystring, RouteReply } from '../schemas.ts'
import type { Api, ApiComponents } from '../types.ts'

const replies = { 200: RouteReply, 400: ErrorBody, 404: ErrorBody, 503: ErrorBody }

/**
 * POST /route and GET /route — pick a worker for verb + capability from this
 * controller's own replica. 404 when nobody offers it, 503 + Retry-After when
 * workers offer it but none is healthy right now.
 */
export function routeRoute (app: Api, { core }: ApiComponents): void {
  app.post('/route', { schema: { summary: 'Route a request to a worker', body: RouteBody, response: replies } }, async (req) => {
    return core.route(req.body)
  })

  app.get('/route', { schema: { summary: 'Route (query-string form)', querystring: RouteQuerystring, response: replies } }, async (req) => {
    const q = req.query
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
    return core.route(query)
  })
}
