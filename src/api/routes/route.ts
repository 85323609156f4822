import type { FastifyReply } from 'fastify'
import { AuthError } from '../../errors.ts'
import type { Identity } from '../../identity/index.ts'
import { ErrorBody, RouteBody, routeQueryOf, RouteQuerystring, RouteReply, type RouteQuery } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

const replies = { 200: RouteReply, 400: ErrorBody, 403: ErrorBody, 404: ErrorBody, 503: ErrorBody }
/** What fastify's serialiser would have labelled the answer (a string payload with a JSON type is sent as it is). */
const JSON_TYPE = 'application/json; charset=utf-8'
/** Sends JSON text as it is (the typed reply accepts only the schema's objects). */
const sendText = (reply: unknown, text: string): void => { void (reply as FastifyReply).type(JSON_TYPE).send(text) }

/**
 * POST /route and GET /route — pick a worker for verb + capability from this
 * controller's own replica. 404 when nobody offers it, 503 + Retry-After when
 * workers offer it but none is healthy right now, 403 `route_denied` when the
 * route policy does not let the caller route to that capability.
 *
 * The answer comes from the view as JSON text (`routeText`), the `RouteReply`
 * schema's fields in its order: the common pick is a cached string, read
 * without touching the worker's objects (routing/tier.ts).
 */
export function routeRoute (app: Api, { view, policy }: ApiComponents): void {
  const route = (q: RouteQuery, identity: Identity | null): string => {
    if (identity != null && !policy.allowsRoute(identity, q.capability)) throw new AuthError('route_policy', `${identity.id} may not route to ${q.capability}`)
    return view.routeText(q, identity)
  }
  const config = { access: ['client' as const], trace: 'route' as const }
  app.post('/route', { config, schema: { summary: 'Route a request to a worker', body: RouteBody, response: replies } }, (req, reply) => {
    sendText(reply, route(req.body, req.identity))
  })
  app.get('/route', { config, schema: { summary: 'Route (query-string form)', querystring: RouteQuerystring, response: replies } }, (req, reply) => {
    sendText(reply, route(routeQueryOf(req.query), req.identity))
  })
}
