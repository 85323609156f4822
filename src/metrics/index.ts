/**
 * Prometheus metrics (`GET /metrics`): what a controller holds, how its mesh
 * is doing, and what it answered.
 *
 *   const metrics = controllerMetrics({ core, mesh: () => mesh, store: () => store, info })
 *   await metrics.text()
 */
export { ControllerMetrics, controllerMetrics } from './controller-metrics.ts'
export type { ControllerMetricsComponents, ControllerMetricsInit } from './controller-metrics.ts'
