import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { ControllerView } from '../core/index.ts'
import type { RoutePolicy } from '../identity/index.ts'
import type { ControllerMetrics } from '../metrics/index.ts'

/** The fastify instance every route file receives: TypeBox-typed requests. */
export type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>

/** What the routes need: the controller's view, and the API's own options. */
export interface ApiComponents {
  view: ControllerView
  /** Max `/state/import` body (bytes). */
  importBodyLimit: number
  /** Who may route to which capability (with auth off: not asked). */
  policy: RoutePolicy
  /** `GET /health` needs no identity. */
  healthOpen: boolean
  /** Prometheus metrics: requests are counted and `GET /metrics` serves them. @default none (no /metrics) */
  metrics?: ControllerMetrics
  /** `/watch` and blocking `/workers` queries. @default the defaults of constants.ts */
  watch?: WatchLimits
}

/** Limits on watchers (`/watch` streams and blocking `/workers` queries). */
export interface WatchLimits {
  /** Watchers served at once; past it, 503 + Retry-After. @default 1000 */
  maxWatchers: number
  /** Unsent bytes a watcher's connection may hold before writing stops until it reads. @default 262144 */
  bufferBytes: number
  /** A keepalive comment this often (ms); a watcher that reads nothing for 4 of them is cut off. @default 15000 */
  keepaliveMs: number
}
