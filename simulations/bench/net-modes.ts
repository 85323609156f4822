/**
 * `npm run bench:net-modes` — the same scenarios with the same seeds on
 * loopback (partitions refuse connections) and in network namespaces
 * (partitions drop packets), one after the other in one run: each
 * checkpoint's convergence time side by side. The figures in
 * docs/benchmarks.md ("Loopback and network namespaces").
 *
 *   sudo npm run bench:net-modes -- [--scenarios a,b] [--seeds 1,2] [--nodes 5] [--workers 100] [--out reports/net-modes]
 *
 * Checkpoints taken right after a crash or a link going down (`sinceLastFault`)
 * time the failover; the others time convergence after the fault ended.
 * Scenarios that need namespaces (`black-hole`) run in that mode only.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { loadScenario, netnsUnavailable, runScenario } from '../../src/sim/index.ts'
import { scriptArgs } from '../args.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'

const { values } = scriptArgs({
  script: 'bench:net-modes',
  summary: `The same scenarios and seeds on loopback and with --net netns (Linux, root), in one run: each
checkpoint's convergence (or failover) time in both modes, the load average around each run, and
the invariants' verdicts. Each run's report goes to <out>/<scenario>-<seed>-<mode>/, the table to
<out>/summary.json. Exits 1 if any run broke an invariant.`,
  options: {
    scenarios: { type: 'string', value: 'LIST', default: 'controller-crash-failover,partition-heal,flapping-partition,black-hole', description: 'scenarios, comma-separated' },
    seeds: { type: 'string', value: 'LIST', default: '1,2', description: 'seeds, comma-separated' },
    nodes: { type: 'string', value: 'N', default: '5', description: 'controllers in each run' },
    workers: { type: 'string', value: 'N', default: '100', description: 'worker agents in each run' },
    out: { type: 'string', value: 'DIR', default: 'reports/net-modes', description: 'where the reports and summary.json go' }
  }
})
const why = netnsUnavailable()
if (why != null) {
  console.error(`--net netns is not available here: ${why}`)
  process.exit(2)
}
const NETNS_ONLY = new Set(['black-hole'])
const scenarios = values.scenarios.split(',').filter(Boolean)
const seeds = values.seeds.split(',').filter(Boolean)
mkdirSync(values.out, { recursive: true })
const verifies = ed25519VerifiesPerSecond()
console.log(`machine: ${verifies} Ed25519 verifies/s; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)

interface Row { scenario: string, seed: string, checkpoint: string, loopback_ms: number | null, netns_ms: number | null, loopback_converged: boolean | null, netns_converged: boolean | null }
const rows: Row[] = []
const runs: Array<Record<string, unknown>> = []
let failed = 0
for (const name of scenarios) {
  const s = await loadScenario(name)
  for (const seed of seeds) {
    for (const net of ['loopback', 'netns'] as const) {
      if (net === 'loopback' && NETNS_ONLY.has(s.name)) continue
      const out = join(values.out, `${s.name}-${seed}-${net}`)
      const loadBefore = loadavg()[0]
      const { result, report } = await runScenario(s, { nodes: Number(values.nodes), workers: Number(values.workers), seed, out, net })
      const loadAfter = loadavg()[0]
      if (!result.ok) failed++
      runs.push({ scenario: s.name, seed, net, ok: result.ok, violations: result.violations.map(v => `${v.invariant}: ${v.message}`), load_before: +loadBefore.toFixed(2), load_after: +loadAfter.toFixed(2), harness_lag_max_ms: report.harness_lag_max_ms })
      console.log(`${s.name} seed ${seed} ${net.padEnd(8)}: ${result.ok ? 'ok  ' : 'FAIL'}  ${report.checkpoints.map(c => `${c.label} ${c.converged ? `${c.convergence_ms} ms` : 'NOT converged'}`).join('; ')}  (load ${loadBefore.toFixed(2)} → ${loadAfter.toFixed(2)}, harness lag max ${report.harness_lag_max_ms} ms)`)
      for (const v of result.violations) console.log(`      ${v.invariant}: ${v.message}`)
      for (const c of report.checkpoints) {
        let row = rows.find(r => r.scenario === s.name && r.seed === seed && r.checkpoint === c.label)
        if (row == null) rows.push(row = { scenario: s.name, seed, checkpoint: c.label, loopback_ms: null, netns_ms: null, loopback_converged: null, netns_converged: null })
        row[`${net}_ms`] = c.convergence_ms
        row[`${net}_converged`] = c.converged
      }
    }
  }
}
const cell = (ms: number | null, ok: boolean | null): string => ok == null ? '—' : ok ? `${ms} ms` : 'not converged'
console.log('\n| scenario | seed | checkpoint | loopback | netns |\n|---|---|---|---|---|')
for (const r of rows) console.log(`| ${r.scenario} | ${r.seed} | ${r.checkpoint} | ${cell(r.loopback_ms, r.loopback_converged)} | ${cell(r.netns_ms, r.netns_converged)} |`)
writeFileSync(join(values.out, 'summary.json'), JSON.stringify({ nodes: Number(values.nodes), workers: Number(values.workers), ed25519_verifies_per_s: verifies, runs, checkpoints: rows }, null, 2) + '\n')
console.log(`\n${runs.length} runs, ${failed} with violations; load average now ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
process.exitCode = failed === 0 ? 0 : 1
