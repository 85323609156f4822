/**
 * The report: `report.json` (every figure and violation) and a
 * self-contained `report.html` a person opens in a browser: verdicts first,
 * then a timeline of faults, per-node registry agreement, route success per
 * node, and convergence time after each heal. Chart.js is inlined, so the
 * page needs no network.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { CheckResult } from './checker.ts'
import type { SimRecord } from './record.ts'

export interface Report {
  scenario: string
  seed: string
  /** `loopback` or `netns`. */
  net: 'loopback' | 'netns'
  nodes: number
  workers: number
  duration_ms: number
  ok: boolean
  verdicts: CheckResult['verdicts']
  violations: CheckResult['violations']
  faults: SimRecord['faults']
  checkpoints: Array<{ label: string, t: number, converged: boolean, convergence_ms: number | null }>
  series: {
    /** Per second: per node, its healthy-worker count; and how many distinct registry views there were. */
    agreement: Array<{ t: number, distinct_views: number, healthy: Record<string, number> }>
    /** Per second: per node, the share of /route queries answered 200. */
    route_success: Array<{ t: number, ratio: Record<string, number | null> }>
  }
  rss_mb: { max: number | null, by_node: Record<string, number> }
  timing: SimRecord['timing']
  setup_ms: number
  /** Worst event-loop delay of the harness (ms); a high figure means the agents, not the mesh, were starved. */
  harness_lag_max_ms: number
}

export function buildReport (rec: SimRecord, result: CheckResult): Report {
  const seconds = Math.ceil(rec.durationMs / 1000)
  const agreement: Report['series']['agreement'] = []
  const routeSuccess: Report['series']['route_success'] = []
  for (let s = 0; s < seconds; s++) {
    const from = s * 1000
    const to = from + 1000
    const latest = new Map<string, { hash: string, healthy: number }>()
    for (const st of rec.states) if (st.t >= from && st.t < to) latest.set(st.node, { hash: st.hash, healthy: st.healthy })
    const healthy: Record<string, number> = {}
    for (const [n, v] of latest) healthy[n] = v.healthy
    agreement.push({ t: s, distinct_views: new Set([...latest.values()].map(v => v.hash)).size, healthy })
    const ratio: Record<string, number | null> = {}
    for (const n of rec.nodes) {
      const rs = rec.routes.filter(r => r.node === n && r.t >= from && r.t < to)
      ratio[n] = rs.length === 0 ? null : rs.filter(r => r.status === 200).length / rs.length
    }
    routeSuccess.push({ t: s, ratio })
  }
  const byNode: Record<string, number> = {}
  for (const r of rec.rss) byNode[r.node] = Math.max(byNode[r.node] ?? 0, r.rssMb)
  const max = Object.values(byNode).length > 0 ? Math.max(...Object.values(byNode)) : null
  return {
    scenario: rec.scenario,
    seed: rec.seed,
    net: rec.net ?? 'loopback',
    nodes: rec.nodes.length,
    workers: rec.workers,
    duration_ms: Math.round(rec.durationMs),
    ok: result.ok,
    verdicts: result.verdicts,
    violations: result.violations,
    faults: rec.faults,
    checkpoints: rec.checkpoints.map(c => ({ label: c.label, t: Math.round(c.t), converged: c.converged, convergence_ms: c.convergenceMs == null ? null : Math.round(c.convergenceMs) })),
    series: { agreement, route_success: routeSuccess },
    rss_mb: { max, by_node: byNode },
    timing: rec.timing,
    setup_ms: Math.round(rec.setupMs),
    harness_lag_max_ms: rec.harnessLagMaxMs
  }
}

export function writeReport (dir: string, report: Report): { json: string, html: string } {
  mkdirSync(dir, { recursive: true })
  const json = join(dir, 'report.json')
  const html = join(dir, 'report.html')
  writeFileSync(json, JSON.stringify(report, null, 2) + '\n')
  writeFileSync(html, renderHtml(report))
  return { json, html }
}

const esc = (s: string): string => s.replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)

function chartJs (): string {
  const require = createRequire(import.meta.url)
  // The UMD build is not in chart.js's "exports"; it sits beside the main entry.
  return readFileSync(join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), 'utf8')
}

export function renderHtml (r: Report): string {
  // JSON inside <script>: keep "</script>" and friends from closing the tag.
  const data = JSON.stringify(r).replace(/</g, '\\u003c')
  const verdictRows = r.verdicts.map(v => `<tr class="${v.ok ? 'ok' : 'bad'}"><td>${v.ok ? 'PASS' : 'FAIL'}</td><td>${esc(v.invariant)}</td><td>${esc(v.summary)}</td></tr>`).join('')
  const violationRows = r.violations.length === 0
    ? '<p class="none">No violations.</p>'
    : `<ol>${r.violations.map(v => `<li><b>${esc(v.invariant)}</b> at ${(v.t / 1000).toFixed(2)} s on ${esc(v.nodes.join(', '))}: ${esc(v.message)}<pre>${esc(JSON.stringify(v.evidence, null, 1).slice(0, 2000))}</pre></li>`).join('')}</ol>`
  const faultRows = r.faults.map(f => `<tr><td>${(f.t / 1000).toFixed(2)} s</td><td>${esc(f.name)}</td><td>${esc(JSON.stringify(f.args) ?? '')}</td></tr>`).join('')
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>capmesh simulation: ${esc(r.scenario)} (seed ${esc(r.seed)})</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1d2430; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
  .sub { color: #5b6575; }
  .overall { display: inline-block; padding: .3rem .8rem; border-radius: 4px; font-weight: 600; color: white; }
  .overall.ok { background: #1e8e3e; } .overall.bad { background: #c5221f; }
  table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #e3e6ea; padding: .35rem .5rem; text-align: left; vertical-align: top; }
  tr.ok td:first-child { color: #1e8e3e; font-weight: 600; } tr.bad td:first-child { color: #c5221f; font-weight: 600; }
  pre { background: #f5f6f8; padding: .4rem; overflow-x: auto; font-size: 12px; }
  .chart { position: relative; height: 260px; margin: 1rem 0; }
  .none { color: #1e8e3e; }
</style>
</head>
<body>
<h1>capmesh simulation — ${esc(r.scenario)}</h1>
<p class="sub">seed <code>${esc(r.seed)}</code> · network ${esc(r.net)} · ${r.nodes} controllers · ${r.workers} workers · ${(r.duration_ms / 1000).toFixed(1)} s · heartbeat ${r.timing.heartbeatMs} ms, unhealthy ${r.timing.unhealthyMs} ms, stale ${r.timing.staleMs} ms · controller RSS max ${r.rss_mb.max ?? 'n/a'} MB · setup ${(r.setup_ms / 1000).toFixed(1)} s · harness event-loop lag max ${r.harness_lag_max_ms} ms</p>
<p><span id="overall" class="overall ${r.ok ? 'ok' : 'bad'}">${r.ok ? 'ALL INVARIANTS HOLD' : `${r.violations.length} VIOLATION(S)`}</span></p>
<h2>Invariants</h2>
<table id="verdicts"><tr><th></th><th>invariant</th><th>result</th></tr>${verdictRows}</table>
<h2>Violations</h2>
<div id="violations">${violationRows}</div>
<h2>Timeline of faults</h2>
<div class="chart"><canvas id="timeline"></canvas></div>
<table>${faultRows}</table>
<h2>Registry agreement per controller</h2>
<p class="sub">Healthy workers each controller lists, per second; the dashed line counts distinct registry views (1 = all agree). Shaded: partitions.</p>
<div class="chart"><canvas id="agreement"></canvas></div>
<h2>Route success per controller</h2>
<p class="sub">Share of /route queries answered with a worker, per second.</p>
<div class="chart"><canvas id="routes"></canvas></div>
<h2>Convergence after each fault</h2>
<div class="chart"><canvas id="convergence"></canvas></div>
<script>${chartJs()}</script>
<script>
const R = ${data};
const COLORS = ['#1a73e8','#e8710a','#1e8e3e','#d01884','#9334e6','#12b5cb','#f9ab00','#5f6368','#c5221f','#7cb342'];
const nodes = [...new Set(R.series.route_success.flatMap(s => Object.keys(s.ratio)))].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
const bands = [];
let open = null;
for (const f of R.faults) {
  if (f.name === 'partition') { if (open) { open.end = f.t / 1000; bands.push(open) } open = { start: f.t / 1000, end: R.duration_ms / 1000 } }
  if (f.name === 'heal' && open) { open.end = f.t / 1000; bands.push(open); open = null }
}
if (open) bands.push(open);
const shade = { id: 'shade', beforeDatasetsDraw (chart) {
  const { ctx, chartArea: a, scales: { x } } = chart;
  ctx.save(); ctx.fillStyle = 'rgba(197,34,31,0.08)';
  for (const b of bands) ctx.fillRect(x.getPixelForValue(b.start), a.top, x.getPixelForValue(b.end) - x.getPixelForValue(b.start), a.bottom - a.top);
  ctx.strokeStyle = 'rgba(0,0,0,0.25)';
  for (const f of R.faults) { const px = x.getPixelForValue(f.t / 1000); ctx.beginPath(); ctx.moveTo(px, a.top); ctx.lineTo(px, a.bottom); ctx.stroke() }
  ctx.restore();
} };
const xAxis = { type: 'linear', min: 0, max: Math.ceil(R.duration_ms / 1000), title: { display: true, text: 'seconds' } };
const kinds = [...new Set(R.faults.map(f => f.name))];
new Chart(document.getElementById('timeline'), { type: 'scatter', plugins: [shade],
  data: { datasets: [{ label: 'faults', data: R.faults.map(f => ({ x: f.t / 1000, y: kinds.indexOf(f.name) })), pointRadius: 6, backgroundColor: '#c5221f' }] },
  options: { maintainAspectRatio: false, animation: false, scales: { x: xAxis, y: { min: -1, max: kinds.length, ticks: { stepSize: 1, autoSkip: false, callback: v => Number.isInteger(v) ? (kinds[v] ?? '') : '' } } },
    plugins: { legend: { display: false }, tooltip: { callbacks: { label: c => { const f = R.faults[c.dataIndex]; return f.name + ' ' + JSON.stringify(f.args) } } } } } });
new Chart(document.getElementById('agreement'), { type: 'line', plugins: [shade],
  data: { datasets: [
    ...nodes.map((n, i) => ({ label: n, data: R.series.agreement.filter(p => p.healthy[n] != null).map(p => ({ x: p.t, y: p.healthy[n] })), borderColor: COLORS[i % COLORS.length], pointRadius: 0, borderWidth: 1.5 })),
    { label: 'distinct views', yAxisID: 'y2', data: R.series.agreement.filter(p => p.distinct_views > 0).map(p => ({ x: p.t, y: p.distinct_views })), borderColor: '#000', borderDash: [4, 4], pointRadius: 0, borderWidth: 1 }
  ] },
  options: { maintainAspectRatio: false, animation: false, parsing: false, scales: { x: xAxis, y: { title: { display: true, text: 'healthy workers' } }, y2: { position: 'right', min: 0, ticks: { stepSize: 1 }, grid: { drawOnChartArea: false }, title: { display: true, text: 'distinct views' } } } } });
new Chart(document.getElementById('routes'), { type: 'line', plugins: [shade],
  data: { datasets: nodes.map((n, i) => ({ label: n, data: R.series.route_success.filter(p => p.ratio[n] != null).map(p => ({ x: p.t, y: p.ratio[n] })), borderColor: COLORS[i % COLORS.length], pointRadius: 0, borderWidth: 1.5 })) },
  options: { maintainAspectRatio: false, animation: false, parsing: false, scales: { x: xAxis, y: { min: 0, max: 1.05, title: { display: true, text: 'success ratio' } } } } });
new Chart(document.getElementById('convergence'), { type: 'bar',
  data: { labels: R.checkpoints.map(c => c.label + ' @' + (c.t / 1000).toFixed(1) + 's'), datasets: [{ label: 'convergence (ms)', data: R.checkpoints.map(c => c.convergence_ms ?? 0), backgroundColor: R.checkpoints.map(c => c.converged ? '#1a73e8' : '#c5221f') }] },
  options: { maintainAspectRatio: false, animation: false, scales: { y: { title: { display: true, text: 'ms after the fault ended' } } } } });
document.body.dataset.rendered = 'true';
</script>
</body>
</html>
`
}
