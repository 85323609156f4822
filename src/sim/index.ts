/**
 * sim — the simulation harness: real controllers and agents, fault
 * injection, history recording, the invariant checker and the report.
 *
 * @example
 * const s = await loadScenario('partition-heal')
 * const { result } = await runScenario(s, { nodes: 5, workers: 200, seed: '42', out: 'reports/sim' })
 * if (!result.ok) console.error(explain(result))
 */
export { Simulation, DEFAULT_TIMING } from './harness.ts'
export type { SimInit, SimNet, SimTiming } from './harness.ts'
export { NetnsLab, netnsUnavailable, removeLeftovers, NETNS_PREFIX } from './netns.ts'
export { scenario, loadScenario } from './scenario.ts'
export type { Scenario, ScenarioDefaults, SimApi } from './scenario.ts'
export { runScenario, explain } from './run.ts'
export type { RunInit, RunResult } from './run.ts'
export { check, AVAILABILITY_TARGET } from './checker.ts'
export type { CheckResult, InvariantName, Verdict, Violation } from './checker.ts'
export { buildReport, renderHtml, writeReport } from './report.ts'
export type { Report } from './report.ts'
export type { SimRecord } from './record.ts'
export { FaultProxy } from './proxy.ts'
