/**
 * The tracing feature (only when tracing is on; off, no hook is added and
 * no request pays for it). A route that names an operation in its config
 * (`trace: 'register'`) gets one SERVER span per request, a child of the
 * caller's W3C `traceparent`/`tracestate` when it sent a valid one (a
 * garbage header is ignored: the span starts a new trace, the request is
 * served as usual). Heartbeats are many and alike: one in `heartbeatEvery`
 * gets a span; the others still run in the caller's context, so that a
 * registry write one causes (a failover adoption) joins the worker's trace.
 *
 * The route's handler runs with the span active: the registry write it
 * makes carries the span's context into gossip (gossip/tracing.ts), and
 * applying it on every other controller is a span of the same trace.
 * Every endpoint accepts the headers; routes without `trace` ignore them.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, trace, type Context, type Span, type TextMapGetter, type TextMapPropagator, type Tracer } from '@opentelemetry/api'
import type { IncomingHttpHeaders } from 'node:http'
import { SPAN_ATTR } from '../../constants.ts'
import type { FastifyRequest } from 'fastify'
import type { Api } from '../types.ts'

/** The operations traced (a route's `config.trace`). */
export type TracedOperation = 'register' | 'deregister' | 'drain' | 'heartbeat' | 'route' | 'state_import'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Trace this route's requests as this operation. */
    trace?: TracedOperation
  }
  interface FastifyRequest {
    /** The context the handler runs in: the request's span, or the caller's context alone (an unsampled heartbeat). */
    traceContext: Context | null
    /** The request's span, ended once the reply is sent. */
    traceSpan: Span | null
  }
}

export interface ApiTracing {
  tracer: Tracer
  /** W3C trace context. */
  propagator: TextMapPropagator
  /** One heartbeat in this many gets a span; 0: none. */
  heartbeatEvery: number
  /** Recorded on every span. */
  controllerId: string
}

const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: carrier => Object.keys(carrier),
  get: (carrier, key) => carrier[key]
}

export function tracingPlugin (app: Api, init: ApiTracing | undefined): void {
  if (init == null) return
  const { tracer, propagator, heartbeatEvery, controllerId } = init
  app.decorateRequest('traceContext', null)
  app.decorateRequest('traceSpan', null)
  let heartbeats = 0

  // Added before the other plugins' hooks: a request refused by auth or the rate limit has its span too.
  app.addHook('onRequest', (req, _reply, done) => {
    const op = req.routeOptions.config.trace
    if (op == null) {
      done()
      return
    }
    // No header, or one that does not parse: the root context, and the span below starts a new trace.
    const parent = req.headers.traceparent != null ? propagator.extract(ROOT_CONTEXT, req.headers, headerGetter) : ROOT_CONTEXT
    if (op === 'heartbeat' && (heartbeatEvery === 0 || heartbeats++ % heartbeatEvery !== 0)) {
      if (parent !== ROOT_CONTEXT) req.traceContext = parent
      done()
      return
    }
    const route = req.routeOptions.url ?? req.url
    const span = tracer.startSpan(`${req.method} ${route}`, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': req.method, 'http.route': route, 'capmesh.operation': op, [SPAN_ATTR.controllerId]: controllerId }
    }, parent)
    req.traceSpan = span
    req.traceContext = trace.setSpan(parent, span)
    done()
  })

  // Every traced route's handler runs in its request's context (set above).
  app.addHook('onRoute', route => {
    if (route.config?.trace == null) return
    const handler = route.handler
    route.handler = function (this: ThisParameterType<typeof handler>, req, reply) {
      const ctx = req.traceContext
      return ctx == null ? handler.call(this, req, reply) : context.with(ctx, handler, this, req, reply)
    } as typeof handler
  })

  const end = (req: FastifyRequest, status: number): void => {
    const span = req.traceSpan
    if (span == null) return
    req.traceSpan = null
    span.setAttribute('http.response.status_code', status)
    const body = req.body as { worker_id?: unknown } | undefined
    if (typeof body?.worker_id === 'string') span.setAttribute(SPAN_ATTR.workerId, body.worker_id)
    if (status >= 400) span.setAttribute(SPAN_ATTR.error, req.authFailure ?? req.errorCode ?? `http_${status}`)
    // Server spans: a 4xx is the caller's doing, not an error of this span.
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
    span.end()
  }
  app.addHook('onResponse', (req, reply, done) => {
    end(req, reply.statusCode)
    done()
  })
  app.addHook('onRequestAbort', (req, done) => {
    end(req, 499)
    done()
  })
}
