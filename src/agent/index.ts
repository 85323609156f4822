/**
 * agent — the worker SDK: closest-controller selection, registration with
 * retries and quarantine, heartbeats with load, failover with incarnations,
 * drain/stop, and batch registration.
 *
 * @example
 * const agent = workerAgent({
 *   workerId: 'w1', workerUrl: 'https://127.0.0.1:7001', capabilities,
 *   controllers: ['https://127.0.0.1:9000', 'https://127.0.0.1:9001'],
 *   ca: readFileSync('.capmesh/tls/ca.pem', 'utf8'), heartbeatIntervalMs: 1000
 * })
 * agent.on('failover', ({ from, to }) => console.log(`moved ${from} → ${to}`))
 * await agent.start()
 */
export { WorkerAgent, workerAgent } from './agent.ts'
export type { AgentCounters, AgentEvents, AgentState, AttachReason, WorkerAgentInit } from './agent.ts'
export { registerBatch } from './batch.ts'
export type { BatchInit, BatchResult } from './batch.ts'
export { probeControllers } from './probe.ts'
export type { ProbeResult } from './probe.ts'
