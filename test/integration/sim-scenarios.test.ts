/**
 * The simulation harness end to end: short versions of three shipped
 * scenarios against real controller processes and real agents (N = 5, a few
 * hundred workers). A broken invariant fails the test with the checker's
 * explanation — reproducible from the scenario and seed in the title.
 */
import { describe, expect, it } from 'vitest'
import { explain, loadScenario, runScenario } from '../../src/sim/index.ts'

const RUNS: Array<{ scenario: string, seed: string, durationMs: number }> = [
  { scenario: 'partition-heal', seed: '7', durationMs: 12_000 },
  { scenario: 'controller-crash-failover', seed: '11', durationMs: 12_000 },
  { scenario: 'randomized', seed: '42', durationMs: 20_000 }
]

describe('simulation scenarios (N=5, 200 workers)', () => {
  for (const r of RUNS) {
    it(`${r.scenario} with seed ${r.seed}: every invariant holds`, async () => {
      const s = await loadScenario(r.scenario)
      const { result, report } = await runScenario(s, { nodes: 5, workers: 200, seed: r.seed, durationMs: r.durationMs })
      expect(result.ok, explain(result)).toBe(true)
      // The run did what the scenario says: faults happened and every checkpoint converged.
      expect(report.faults.length).toBeGreaterThan(2)
      expect(report.checkpoints.length).toBeGreaterThan(0)
      expect(report.checkpoints.every(c => c.converged)).toBe(true)
    }, 240_000)
  }
})
