/**
 * routing — pure selection over an index of the registry view: filters
 * (version, GPU, SLO, budget, saturation), strategies (round-robin,
 * least-loaded), controller affinity and idempotency keys.
 *
 * @example
 * const router = new Router({ controllerId: 'a' })
 * router.upsert(record, 'healthy')
 * router.route({ verb: 'invoke', capability: 'echo', budget_tokens: 10 })
 */
export { Router } from './router.ts'
export type { RoutableWorker, RouteQuery, RouteResult, RouterInit, Strategy } from './router.ts'
export { IdempotencyCache } from './idempotency.ts'
export type { IdempotencyCacheInit } from './idempotency.ts'
