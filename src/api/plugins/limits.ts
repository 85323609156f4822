/**
 * Rate limiting and back-pressure:
 *
 * - A fixed one-second window per identity (per address for a caller
 *   without one): past `ratePerSecond` requests in the window, 429
 *   `rate_limited` with Retry-After (the rest of the window). The default is
 *   generous (a worker heartbeats once every `heartbeat-interval`; a busy
 *   client routes thousands of times a second): it stops a runaway caller
 *   from taking a controller's whole CPU, it does not meter ordinary use.
 *   The windows of the last RATE_LIMIT_KEYS callers are kept, least recently
 *   seen dropped first (toad-cache's LRU map, fastify's own cache). This is
 *   @fastify/rate-limit's local store and algorithm, checked synchronously:
 *   the plugin's per-request path (an async hook awaiting the key generator
 *   and a promise around its store) cost 5–7 µs a request measured through
 *   `inject` (docs/benchmarks.md, "Where the time goes").
 * - Back-pressure: while the event loop is late by more than
 *   `maxEventLoopDelayMs` or the heap holds more than `maxHeapBytes` (as
 *   @fastify/under-pressure samples them), new requests get 503
 *   `overloaded` with Retry-After, so a controller that falls behind sheds
 *   work instead of queueing it (agents wait and retry).
 *
 * The rate limit runs right after authentication (the key is who is
 * calling) and before the body is parsed: a refused request costs little.
 */
import type { onRequestHookHandler } from 'fastify'
import underPressure from '@fastify/under-pressure'
import { LruMap } from 'toad-cache'
import { RATE_LIMIT_KEYS } from '../../constants.ts'
import { OverloadedError, RateLimitedError } from '../../errors.ts'
import type { Api } from '../types.ts'
import { addRouteHook, type NotFoundHooks } from './route-hooks.ts'

const WINDOW_MS = 1000

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

/** One caller's current window. */
interface Window {
  /** When it opened (ms, Date.now()). */
  start: number
  /** Requests in it so far. */
  count: number
}

/** Registers the limits; returns the rate limit's hook for the 404 handler (see route-hooks.ts). */
export async function limitsPlugin (app: Api, init: LimitsInit): Promise<NotFoundHooks> {
  let hooks: NotFoundHooks = {}
  if (init.ratePerSecond > 0) {
    const max = init.ratePerSecond
    const windows = new LruMap<Window>(RATE_LIMIT_KEYS)
    const limit: onRequestHookHandler = (req, _reply, done) => {
      const key = req.identity?.id ?? req.ip
      const now = Date.now()
      let w = windows.get(key)
      if (w == null || now - w.start >= WINDOW_MS) windows.set(key, w = { start: now, count: 0 })
      if (++w.count > max) {
        done(new RateLimitedError(Math.max(1, Math.ceil((w.start + WINDOW_MS - now) / 1000)), max))
        return
      }
      done()
    }
    // Per route, after the auth plugin's hook (registered before this one): the key is the identity.
    app.addHook('onRoute', route => { addRouteHook(route, 'onRequest', limit) })
    hooks = { onRequest: [limit] }
  }
  if (init.maxEventLoopDelayMs > 0 || init.maxHeapBytes > 0) {
    // The plugin samples (the event loop's mean delay and the heap, once a second). Given no
    // threshold, it adds no hook of its own: its hook looked up a per-route handler in
    // req.routeOptions, which fastify builds afresh on each access (~3 µs a request through
    // `inject`); this
    // one compares the latest sample with the limits.
    await app.register(underPressure)
    const { maxEventLoopDelayMs: maxDelay, maxHeapBytes: maxHeap, retryAfterSeconds } = init
    app.addHook('onRequest', (_req, _reply, done) => {
      const m = app.memoryUsage()
      // The delay is Infinity when the loop was blocked for a whole sample (no tick measured).
      if (maxDelay > 0 && m.eventLoopDelay > maxDelay) done(new OverloadedError(retryAfterSeconds, `eventLoopDelay ${Math.round(m.eventLoopDelay)}`))
      else if (maxHeap > 0 && m.heapUsed > maxHeap) done(new OverloadedError(retryAfterSeconds, `heapUsedBytes ${m.heapUsed}`))
      else done()
    })
  }
  return hooks
}
