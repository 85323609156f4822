import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { ControllerCore } from '../controller/core.ts'
import type { ControllerMetrics } from '../metrics/index.ts'

/** The fastify instance every route file receives: TypeBox-typed requests. */
export type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>

/** What the routes need from the controller. */
export interface ApiComponents {
  core: ControllerCore
  /** Extra facts for /health (store sizes, TLS, mesh), supplied by the controller. */
  health: () => Record<string, unknown>
  /** Mesh status for GET /mesh (peers, sync, owners), supplied by the controller. */
  mesh: () => Record<string, unknown>
  /** Max `/state/import` body (bytes). */
  importBodyLimit: number
  /** Prometheus metrics: requests are counted and `GET /metrics` serves them. @default none (no /metrics) */
  metrics?: ControllerMetrics
}
