/**
 * `npm run sim:soak` — many seeds of the randomized scenario at scale, the
 * figures docs/benchmarks.md records: violations found, worst convergence
 * after a fault ended, worst partition-side availability, controller RSS.
 *
 *   npm run sim:soak -- [--seeds 50] [--nodes 8] [--workers 1000] [--duration 30s] [--out reports/soak]
 *   npm run sim:soak -- --help    every option with its default
 *
 * Each seed's report.json/html goes to <out>/seed-<n>/; a failing seed is
 * reproduced with `npm run sim -- randomized --seed <n> --nodes .. --workers ..`.
 */
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { explain, loadScenario, netnsUnavailable, runScenario } from '../src/sim/index.ts'
import { parseDuration } from '../src/utils/duration.ts'
import { scriptArgs } from './args.ts'

const { values } = scriptArgs({
  script: 'sim:soak',
  summary: `Many seeds of a scenario (the randomized one unless told) at scale: violations found, worst
convergence after a fault ended, worst partition-side availability, controller RSS. Each seed's
report.json/html goes to <out>/seed-<n>/, the totals to <out>/summary.json; a failing seed is
reproduced with \`npm run sim -- randomized --seed <n> --nodes .. --workers ..\`. Exits 1 on any violation.`,
  options: {
    seeds: { type: 'string', value: 'N', default: '50', description: 'how many seeds to run' },
    first: { type: 'string', value: 'N', default: '1', description: 'the first seed; the others follow it' },
    nodes: { type: 'string', value: 'N', default: '8', description: 'controllers in each run' },
    workers: { type: 'string', value: 'N', default: '1000', description: 'worker agents in each run' },
    duration: { type: 'string', value: 'D', default: '30s', description: 'length of each run (500ms, 30s, 2m)' },
    scenario: { type: 'string', value: 'NAME', default: 'randomized', description: 'scenario: simulations/<NAME>.ts or a path' },
    out: { type: 'string', value: 'DIR', default: 'reports/soak', description: 'where the reports and summary.json go' },
    net: { type: 'string', value: 'NET', default: 'loopback', description: 'loopback, or netns: a network namespace and an address per host, faults dropping packets (Linux, root)' }
  }
})
if (values.net !== 'loopback' && values.net !== 'netns') {
  console.error(`--net: expected loopback or netns, got "${values.net}"`)
  process.exit(2)
}
if (values.net === 'netns') {
  const why = netnsUnavailable()
  if (why != null) {
    console.error(`--net netns is not available here: ${why}`)
    process.exit(2)
  }
}
const seeds = Number(values.seeds)
const first = Number(values.first)
const s = await loadScenario(values.scenario)
mkdirSync(values.out, { recursive: true })
const rows: Array<Record<string, unknown>> = []
let violations = 0
let worstConvergence = 0
let worstAvailability: number | null = null
let maxRss = 0
const t0 = Date.now()
for (let i = 0; i < seeds; i++) {
  const seed = String(first + i)
  // Each seed's progress lines (agents' heartbeats, failures by reason, agreement) for reading a failure afterwards.
  mkdirSync(join(values.out, `seed-${seed}`), { recursive: true })
  const progress = createWriteStream(join(values.out, `seed-${seed}`, 'progress.log'))
  const { result, report } = await runScenario(s, {
    progress: line => { progress.write(`${line}\n`) },
    nodes: Number(values.nodes),
    workers: Number(values.workers),
    seed,
    durationMs: parseDuration(values.duration, '--duration'),
    out: join(values.out, `seed-${seed}`),
    net: values.net as 'loopback' | 'netns'
  })
  await new Promise(resolve => progress.end(resolve))
  const conv = Math.max(0, ...report.checkpoints.map(c => c.convergence_ms ?? 0))
  const avail = report.verdicts.find(v => v.invariant === 'partition-availability')?.figures.worst_side_ratio ?? null
  violations += result.violations.length
  worstConvergence = Math.max(worstConvergence, conv)
  if (avail != null) worstAvailability = Math.min(worstAvailability ?? 1, avail as number)
  maxRss = Math.max(maxRss, report.rss_mb.max ?? 0)
  rows.push({ seed, ok: result.ok, violations: result.violations.length, worst_convergence_ms: conv, worst_side_availability: avail, rss_mb: report.rss_mb.max, faults: report.faults.length, setup_ms: report.setup_ms, harness_lag_max_ms: report.harness_lag_max_ms })
  console.log(`seed ${seed.padStart(3)}: ${result.ok ? 'ok  ' : 'FAIL'}  violations ${result.violations.length}  worst convergence ${conv} ms  worst side availability ${avail == null ? 'n/a' : `${(Number(avail) * 100).toFixed(2)}%`}  RSS max ${report.rss_mb.max} MB  (${report.faults.length} faults; setup ${(report.setup_ms / 1000).toFixed(1)} s; harness lag max ${report.harness_lag_max_ms} ms)`)
  if (!result.ok) console.log(explain(result).split('\n').map(l => `      ${l}`).join('\n'))
}
const summary = {
  scenario: s.name,
  net: values.net,
  seeds,
  nodes: Number(values.nodes),
  workers: Number(values.workers),
  duration: values.duration,
  minutes: +((Date.now() - t0) / 60_000).toFixed(1),
  violations,
  failing_seeds: rows.filter(r => r.ok !== true).map(r => r.seed),
  worst_convergence_ms: worstConvergence,
  worst_side_availability: worstAvailability,
  controller_rss_max_mb: maxRss,
  runs: rows
}
writeFileSync(join(values.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
console.log(`\n${seeds} seeds, N=${summary.nodes}, ${summary.workers} workers, ${summary.minutes} min: ${violations} violations; worst convergence ${worstConvergence} ms; worst partition-side availability ${worstAvailability == null ? 'n/a' : `${(worstAvailability * 100).toFixed(2)}%`}; controller RSS max ${maxRss} MB`)
process.exitCode = violations === 0 ? 0 : 1
