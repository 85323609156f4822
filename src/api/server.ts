/**
 * Builds the controller's fastify app: HTTPS only (there is no option for a
 * plain listener), every caller identified (plugins/auth.ts: a client
 * certificate the TLS layer verified, or a bearer token), JSON bodies with a
 * size limit, TypeBox validation without type coercion (a string is never
 * silently taken for a number), one error handler, and an OpenAPI document
 * at /openapi.json.
 *
 * Handlers and hooks are plain functions wherever their work is synchronous
 * (the view's mostly is): fastify sends what a handler returns, or the error
 * it throws, at once, where an async one costs a promise and a microtask on
 * every request.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyServerOptions } from 'fastify'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { MAX_JSON_DEPTH } from '../constants.ts'
import { ValidationError } from '../errors.ts'
import { tooDeep } from '../utils/json.ts'
import { auditPlugin } from './plugins/audit.ts'
import { authPlugin, type AuthInit } from './plugins/auth.ts'
import { errorHandler, notFoundHandler } from './plugins/errors.ts'
import { limitsPlugin, type LimitsInit } from './plugins/limits.ts'
import { metricsPlugin } from './plugins/metrics.ts'
import { mergeNotFoundHooks } from './plugins/route-hooks.ts'
import { tracingPlugin, type ApiTracing } from './plugins/tracing.ts'
import { watchersPlugin } from './plugins/watchers.ts'
import { deregisterRoute } from './routes/deregister.ts'
import { healthRoute, meshRoute } from './routes/health.ts'
import { heartbeatRoute } from './routes/heartbeat.ts'
import { listingRoutes } from './routes/listing.ts'
import { registerRoute } from './routes/register.ts'
import { routeRoute } from './routes/route.ts'
import { stateRoutes } from './routes/state.ts'
import { uiRoutes } from './routes/ui.ts'
import { watchRoute } from './routes/watch.ts'
import type { Api, ApiComponents } from './types.ts'

export interface ApiInit extends ApiComponents {
  /** PEM certificate and key the server presents, and the CAs whose client certificates it trusts. */
  tls: { cert: string, key: string, clientCas: string[] }
  /** Who may call (see plugins/auth.ts). */
  auth: Omit<AuthInit, 'policy'>
  /** Rate limits and back-pressure (see plugins/limits.ts). */
  limits: LimitsInit
  /** Max request body (bytes) outside /state/import. */
  bodyLimit: number
  /** A pino logger for request/error logs. @default none (silent) */
  logger?: FastifyBaseLogger
  /** Where the audit trail goes (every registry-changing request). @default none */
  audit?: FastifyBaseLogger
  /** Spans for the traced endpoints, W3C trace context from callers (see plugins/tracing.ts). @default none: tracing off, no hooks */
  tracing?: ApiTracing
}

const debugging = (log: FastifyBaseLogger): boolean => log.level === 'debug' || log.level === 'trace'

export async function buildApi (init: ApiInit): Promise<Api> {
  const verbose = init.logger != null && debugging(init.logger)
  // fastify's overloads type an https server differently; the routes only need the TypeBox provider.
  const app = Fastify({
    https: {
      cert: init.tls.cert,
      key: init.tls.key,
      // Ask every client for a certificate and let TLS verify it against the trusted client CAs,
      // but keep connections without one (or with one that failed): those may still carry a bearer
      // token, and /health stays open. plugins/auth.ts refuses a request whose certificate TLS did
      // not verify (socket.authorized false) with 401 certificate_untrusted: verification is not off.
      ...(init.auth.mode === 'required' ? { requestCert: true, rejectUnauthorized: false, ca: init.tls.clientCas } : {})
    },
    bodyLimit: init.bodyLimit,
    ...(init.logger != null ? { loggerInstance: init.logger } : { logger: false }),
    // No child logger per request (a pino child costs about a microsecond) unless debugging: the
    // error handler names the request in the lines it logs.
    ...(init.logger != null && !verbose ? { childLoggerFactory: (logger: FastifyBaseLogger) => logger } : {}),
    // fastify's "incoming request" / "request completed" lines are info: below the API logger's level
    // unless debugging, yet each built its object (and read the clock) on every request.
    logController: new LogController({ disableRequestLogging: !verbose }),
    // Clients are long-lived workers heartbeating over keep-alive.
    keepAliveTimeout: 65_000,
    requestTimeout: 30_000,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: true } }
  } as unknown as FastifyServerOptions).withTypeProvider<TypeBoxTypeProvider>() as unknown as Api

  errorHandler(app)
  // First: its span covers what the other plugins refuse, and its onRoute hook must precede the routes.
  tracingPlugin(app, init.tracing)
  // Authentication, rate limit, metrics and audit hooks are attached per route (plugins/route-hooks.ts); the 404
  // handler gets the same ones.
  const authNotFound = authPlugin(app, { ...init.auth, policy: init.policy })
  const limitsNotFound = await limitsPlugin(app, init.limits)
  const metricsNotFound = metricsPlugin(app, init)
  auditPlugin(app, init.audit)
  notFoundHandler(app, mergeNotFoundHooks(authNotFound, limitsNotFound, metricsNotFound))
  const watchers = watchersPlugin(app, { max: init.watch?.maxWatchers })
  // Only JSON bodies: without this, fastify's text/plain parser would accept text and fail later as "must be object".
  app.removeContentTypeParser('text/plain')
  // fastify's own JSON parser, then absurdly nested JSON refused before validation or storage recurse
  // into it: in the parser, not a preValidation hook, so a request pays for no extra hook phase.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, text, done) => {
    parseJson(req, text as string, (err: Error | null, body?: unknown) => {
      // Only objects: every endpoint wants one, and the schema rejects anything else without recursing.
      const where = err == null && body != null && typeof body === 'object' && !Array.isArray(body) ? tooDeep(body, MAX_JSON_DEPTH) : null
      if (where == null) done(err, body)
      else done(new ValidationError(`body${where} is nested deeper than ${MAX_JSON_DEPTH} levels`, [{ field: `body${where}`, message: `must not nest deeper than ${MAX_JSON_DEPTH} levels` }]), undefined)
    })
  })
  await app.register(swagger, {
    openapi: {
      info: { title: 'capmesh controller', version: '1', description: 'Worker registry and routing (the platform wire contract).' }
    }
  })
  registerRoute(app, init)
  heartbeatRoute(app, init)
  deregisterRoute(app, init)
  routeRoute(app, init)
  listingRoutes(app, init, watchers)
  watchRoute(app, init, watchers)
  healthRoute(app, init)
  meshRoute(app, init)
  stateRoutes(app, init)
  uiRoutes(app, init)
  app.get('/openapi.json', { config: { access: ['worker', 'client', 'metrics'] }, schema: { hide: true } }, async () => app.swagger())
  return app
}
