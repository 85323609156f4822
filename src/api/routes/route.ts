import { ErrorBody, RouteBody, routeQueryOf, RouteQuerystring, RouteReply } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

const replies = { 200: RouteReply, 400: ErrorBody, 404: ErrorBody, 503: ErrorBody }

/**
 * POST /route and GET /route — pick a worker for verb + capability from this
 * controller's own replica. 404 when nobody offers it, 503 + Retry-After when
 * workers offer it but none is healthy right now.
 */
export function routeRoute (app: Api, { view }: ApiComponents): void {
  app.post('/route', { schema: { summary: 'Route a request to a worker', body: RouteBody, response: replies } }, (req) => view.route(req.body))
  app.get('/route', { schema: { summary: 'Route (query-string form)', querystring: RouteQuerystring, response: replies } }, (req) => view.route(routeQueryOf(req.query)))
}
