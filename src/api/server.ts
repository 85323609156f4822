/**
 * Builds the controller's fastify app: HTTPS only (there is no option for a
 * plain listener), JSON bodies with a size limit, TypeBox validation without
 * type coercion (a string is never silently taken for a number), one error
 * handler, and an OpenAPI document at /openapi.json.
 *
 * Handlers and hooks are plain functions wherever their work is synchronous
 * (the view's always is): fastify sends what a handler returns, or the error
 * it throws, at once, where an async one costs a promise and a microtask on
 * every request.
 */
import Fastify, { type FastifyBaseLogger, type FastifyServerOptions } from 'fastify'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { MAX_JSON_DEPTH } from '../constants.ts'
import { ValidationError } from '../errors.ts'
import { tooDeep } from '../utils/json.ts'
import { errorHandler } from './plugins/errors.ts'
import { metricsPlugin } from './plugins/metrics.ts'
import { deregisterRoute } from './routes/deregister.ts'
import { healthRoute, meshRoute } from './routes/health.ts'
import { heartbeatRoute } from './routes/heartbeat.ts'
import { listingRoutes } from './routes/listing.ts'
import { registerRoute } from './routes/register.ts'
import { routeRoute } from './routes/route.ts'
import { stateRoutes } from './routes/state.ts'
import type { Api, ApiComponents } from './types.ts'

export interface ApiInit extends ApiComponents {
  /** PEM certificate and key the server presents. */
  tls: { cert: string, key: string }
  /** Max request body (bytes) outside /state/import. */
  bodyLimit: number
  /** A pino logger for request/error logs. @default none (silent) */
  logger?: FastifyBaseLogger
}

export async function buildApi (init: ApiInit): Promise<Api> {
  // fastify's overloads type an https server differently; the routes only need the TypeBox provider.
  const app = Fastify({
    https: { cert: init.tls.cert, key: init.tls.key },
    bodyLimit: init.bodyLimit,
    ...(init.logger != null ? { loggerInstance: init.logger } : { logger: false }),
    // Clients are long-lived workers heartbeating over keep-alive.
    keepAliveTimeout: 65_000,
    requestTimeout: 30_000,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: true } }
  } as unknown as FastifyServerOptions).withTypeProvider<TypeBoxTypeProvider>() as unknown as Api

  errorHandler(app)
  metricsPlugin(app, init)
  // Only JSON bodies: without this, fastify's text/plain parser would accept text and fail later as "must be object".
  app.removeContentTypeParser('text/plain')
  // Refuse absurdly nested JSON before validation or storage recurse into it.
  app.addHook('preValidation', (req, _reply, done) => {
    // Only objects: every endpoint wants one, and the schema rejects anything else without recursing.
    const body = req.body
    const where = body != null && typeof body === 'object' && !Array.isArray(body) ? tooDeep(body, MAX_JSON_DEPTH) : null
    if (where == null) {
      done()
      return
    }
    done(new ValidationError(`body${where} is nested deeper than ${MAX_JSON_DEPTH} levels`, [{ field: `body${where}`, message: `must not nest deeper than ${MAX_JSON_DEPTH} levels` }]))
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
  listingRoutes(app, init)
  healthRoute(app, init)
  meshRoute(app, init)
  stateRoutes(app, init)
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  return app
}
