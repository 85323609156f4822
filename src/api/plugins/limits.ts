/**
 * Rate limiting and back-pressure, each a well-kept fastify plugin:
 *
 * - @fastify/rate-limit, keyed by identity (by address for a caller without
 *   one): past `ratePerSecond` requests in a second, 429 `rate_limited` with
 *   Retry-After. The default is generous (a worker heartbeats once every
 *   `heartbeat-interval`; a busy client routes thousands of times a second):
 *   it stops a runaway caller from taking a controller's whole CPU, it does
 *   not meter ordinary use.
 * - @fastify/under-pressure: while the event loop is late by more than
 *   `maxEventLoopDelayMs` or the heap holds more than `maxHeapBytes`, new
 *   requests get 503 `overloaded` with Retry-After, so a controller that
 *   falls behind sheds work instead of queueing it (agents wait and retry).
 */
import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import { OverloadedError, RateLimitedError } from '../../errors.ts'
import type { Api } from '../types.ts'

export interface LimitsInit {
  /** Requests a second per identity (per address without one); 0: no limit. */
  ratePerSecond: number
  /** Shed requests while the event loop is late by more than this (ms); 0: never. */
  maxEventLoopDelayMs: number
  /** Shed requests while the heap holds more than this (bytes); 0: never. */
  maxHeapBytes: number
  /** Retry-After (s) of a shed request. */
  retryAfterSeconds: number
}

export async function limitsPlugin (app: Api, init: LimitsInit): Promise<void> {
  if (init.ratePerSecond > 0) {
    await app.register(rateLimit, {
      global: true,
      max: init.ratePerSecond,
      timeWindow: 1000,
      // After authentication (onRequest), so the key is who is calling.
      hook: 'preHandler',
      keyGenerator: req => req.identity?.id ?? req.ip,
      // Headers only on a refusal: every answer carrying three more would cost the hot path.
      addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
      errorResponseBuilder: (_req, ctx) => new RateLimitedError(Math.max(1, Math.ceil(ctx.ttl / 1000)), ctx.max)
    })
  }
  if (init.maxEventLoopDelayMs > 0 || init.maxHeapBytes > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: init.maxEventLoopDelayMs > 0 ? init.maxEventLoopDelayMs : undefined,
      maxHeapUsedBytes: init.maxHeapBytes > 0 ? init.maxHeapBytes : undefined,
      retryAfter: init.retryAfterSeconds,
      pressureHandler: async (_req, _reply, type, value) => {
        throw new OverloadedError(init.retryAfterSeconds, `${String(type)} ${Math.round(Number(value))}`)
      }
    })
  }
}
