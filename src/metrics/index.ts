/**
 * Prometheus metrics (`GET /metrics`): what a controller holds, how its mesh
 * is doing and what it answered; and a worker agent's counters and state.
 *
 *   const metrics = controllerMetrics({ core, mesh: () => mesh, store: () => store, info })
 *   const forWorker = agentMetrics(agent)
 *   await metrics.text()
 */
export { ControllerMetrics, controllerMetrics } from './controller-metrics.ts'
export type { ControllerMetricsComponents, ControllerMetricsInit, HttpRecorder } from './controller-metrics.ts'
export { AgentMetrics, agentMetrics } from './agent-metrics.ts'
export type { AgentMetricsInit } from './agent-metrics.ts'
