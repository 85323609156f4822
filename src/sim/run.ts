/**
 * Runs one scenario end to end: start the cluster, drive the faults, heal
 * everything, take the final checkpoint, stop, check, report.
 */
import { join } from 'node:path'
import { check, type CheckResult } from './checker.ts'
import { Simulation, type SimNet, type SimTiming } from './harness.ts'
import type { SimRecord } from './record.ts'
import { buildReport, writeReport, type Report } from './report.ts'
import type { Scenario, SimApi } from './scenario.ts'

export interface RunInit {
  nodes?: number
  workers?: number
  seed?: string
  durationMs?: number
  /** Folder for report.json, report.html and the controllers' logs (`logs/`). @default no files */
  out?: string
  timing?: Partial<SimTiming>
  progress?: (line: string) => void
  /** `loopback` or `netns` (a network namespace and an address per host; Linux, root). @default 'loopback' */
  net?: SimNet
  /** netns: controllers bootstrap by address or by name (hosts files). @default 'address' */
  bootstrapBy?: 'address' | 'name'
}

export interface RunResult {
  record: SimRecord
  result: CheckResult
  report: Report
  files?: { json: string, html: string }
}

export async function runScenario (s: Scenario, init: RunInit = {}): Promise<RunResult> {
  const durationMs = init.durationMs ?? s.defaults.durationMs
  const sim = new Simulation({
    scenario: s.name,
    nodes: init.nodes ?? s.defaults.nodes,
    workers: init.workers ?? s.defaults.workers,
    seed: init.seed ?? '1',
    durationMs,
    timing: init.timing,
    progress: init.progress,
    net: init.net,
    bootstrapBy: init.bootstrapBy,
    logDir: init.out != null ? join(init.out, 'logs') : undefined
  })
  const api = sim as SimApi
  api.durationMs = durationMs
  api.d = (f: number) => Math.round(f * durationMs)
  api.halves = () => {
    const k = Math.ceil(sim.size / 2)
    return [Array.from({ length: k }, (_, i) => i), Array.from({ length: sim.size - k }, (_, i) => k + i)]
  }
  try {
    await sim.start()
    init.progress?.(`   0.0s  ${sim.size} controllers up, ${sim.workerIds('alive').length} workers attached in ${(sim.setupMs / 1000).toFixed(1)} s; running ${s.name} (seed ${sim.init.seed})`)
    await s.run(api)
    // Whatever the scenario left broken is repaired, then the mesh must converge.
    await sim.at(durationMs)
    await sim.heal()
    await sim.clearNetworkFaults()
    await Promise.all(sim.nodes.map(async (n, i) => { if (n.child == null) await sim.restart(i, { keepData: true }) }))
    await sim.checkpoint('end')
  } finally {
    await sim.stop()
  }
  const record = sim.record()
  const result = check(record)
  const report = buildReport(record, result)
  const files = init.out != null ? writeReport(init.out, report) : undefined
  return { record, result, report, files }
}

/** One paragraph per violation, for test failures and the CLI. */
export function explain (r: CheckResult): string {
  if (r.ok) return 'all invariants hold'
  return r.violations.map(v => `${v.invariant} at ${(v.t / 1000).toFixed(2)} s on ${v.nodes.join(', ')}: ${v.message}\n  evidence: ${JSON.stringify(v.evidence).slice(0, 600)}`).join('\n')
}
