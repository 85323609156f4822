import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { ControllerCore } from '../controller/core.ts'
import type { ControllerMetrics } from '../metrics/index.ts'

/** What /health says of anti-entropy. */
export interface SyncHealth {
  state: 'ok' | 'behind'
  /** The peers exchanges keep failing with, and the last error with each. */
  behind: Array<{ peer_id: string, controller_id: string | null, failures: number, reason: string, last_error: string, last_error_at: string, failing_since: string }>
}

/** The fastify instance every route file receives: TypeBox-typed requests. */
export type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>

/** What the routes need from the controller. */
export interface ApiComponents {
  core: ControllerCore
  /** Extra facts for /health (store sizes, TLS, mesh), supplied by the controller. */
  health: () => Record<string, unknown>
  /** Mesh status for GET /mesh (peers, sync, owners), supplied by the controller. */
  mesh: () => Record<string, unknown>
  /** Anti-entropy as a whole: `behind` while exchanges with some connected peer keep failing. */
  sync: () => SyncHealth
  /** Max `/state/import` body (bytes). */
  importBodyLimit: number
  /** Prometheus metrics: requests are counted and `GET /metrics` serves them. @default none (no /metrics) */
  metrics?: ControllerMetrics
}
