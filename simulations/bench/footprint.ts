/**
 * `npm run bench:footprint` — what an idle mesh costs in memory and how fast
 * its processes start: three controllers (child processes, `capmesh
 * controller`, one mesh, no workers registered but the demo worker) and one
 * demo worker (`capmesh worker`, the agent serving its capability over
 * HTTPS). Each run prints:
 *
 * - `--help`: wall time of `capmesh --help` (the cost of starting the CLI);
 * - start-up: from spawning the first controller (empty, joining nobody) to
 *   its first `GET /health` answer, and from spawning the worker to its
 *   serving line;
 * - after `--settle`, each process's resident set (VmRSS) and peak (VmHWM)
 *   from /proc, and where controller a's memory is (its `/metrics`: V8 heap
 *   used and total, code space, external and array buffers).
 *
 * `--cli` runs another checkout's `bin/capmesh.js` instead of this one's;
 * `--baseline` runs a second one in the same run, alternating run by run,
 * so two versions are compared on the same machine at the same time:
 *
 *   npm run bench:footprint
 *   npm run bench:footprint -- --baseline /path/to/other/checkout/bin/capmesh.js --runs 5
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { CLI, spawnController, spawnWorker, type ChildController, type ChildWorker } from '../../src/launch/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { ValidationError } from '../../src/errors.ts'
import { scriptArgs } from '../args.ts'
import { isBuilt } from '../../bin/built.js'

const { values } = scriptArgs({
  script: 'bench:footprint',
  summary: `Start-up time and resident memory of an idle 3-controller mesh and one demo worker
(capmesh worker), each its own process; with --baseline, of two checkouts in turn.`,
  options: {
    cli: { type: 'string', value: 'FILE', description: 'the capmesh script to run (default: this checkout\'s bin/capmesh.js)' },
    baseline: { type: 'string', value: 'FILE', description: 'another capmesh script, run alternately with --cli in the same run (default: none)' },
    runs: { type: 'string', value: 'N', default: '1', description: 'meshes started per capmesh script; medians over them' },
    settle: { type: 'string', value: 'D', default: '10s', description: 'wait this long after the worker attached before reading memory' }
  }
})
const SETTLE_MS = parseDuration(values.settle, '--settle')
const RUNS = Number(values.runs)
if (!Number.isInteger(RUNS) || RUNS < 1) throw new ValidationError(`--runs: expected a positive integer, got "${values.runs}"`)

function status (pid: number): { rss: number, peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) / 1024
  return { rss: kb('VmRSS'), peak: kb('VmHWM') }
}

/** One mesh's figures (MB and ms). */
interface Run {
  helpMs: number
  startupMs: number
  workerStartupMs: number
  controllerRss: number[]
  controllerPeak: number[]
  workerRss: number
  workerPeak: number
  /** Controller a's own view of its memory, from /metrics (MB). */
  heap: Record<string, number>
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-footprint-'))
const tlsDir = join(root, 'tls')
const tls = await ensureTls({ dir: tlsDir })
// The worker's certificates (to serve, and its identity) exist already, as on a deployed host (the
// demo worker issues its own only when they are missing, loading the certificate generator for that).
await ensureTls({ dir: tlsDir, hosts: ['127.0.0.1'], name: 'worker-w1' })
await issueIdentity({ dir: tlsDir, role: 'worker', name: 'w1' })
const scraper = await issueIdentity({ dir: tlsDir, role: 'metrics', name: 'bench' })
const client = httpsClient({ ca: tls.ca, cert: scraper.cert, key: scraper.key })

/** Gauges of prom-client's default process metrics, in MB. */
async function heapOf (c: ChildController, http: HttpsClient): Promise<Record<string, number>> {
  const text = String((await http.json('GET', `${c.url}/metrics`)).body)
  const gauge = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN) / 2 ** 20
  return {
    'heap used': gauge(/^nodejs_heap_size_used_bytes (\S+)/m),
    'heap total': gauge(/^nodejs_heap_size_total_bytes (\S+)/m),
    'old space used': gauge(/^nodejs_heap_space_size_used_bytes\{space="old"\} (\S+)/m),
    'code space used': gauge(/^nodejs_heap_space_size_used_bytes\{space="code"\} (\S+)/m),
    external: gauge(/^nodejs_external_memory_bytes (\S+)/m)
  }
}

async function once (cli: string, tag: string): Promise<Run> {
  const h0 = performance.now()
  execFileSync(process.execPath, [cli, '--help'], { stdio: 'ignore' })
  const helpMs = performance.now() - h0
  const controllers: ChildController[] = []
  let worker: ChildWorker | null = null
  try {
    let startupMs = NaN
    for (const id of ['a', 'b', 'c']) {
      const bootstrap = controllers.flatMap(c => ['--bootstrap', c.p2p[0]])
      const s0 = performance.now()
      const c = await spawnController({
        id,
        cli,
        args: ['--id', id, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, `${tag}-${id}`), '--tls-dir', tlsDir, ...bootstrap]
      })
      controllers.push(c)
      if (id === 'a') {
        // Its first answer, as a load balancer or a supervisor would see it (the start-up line comes just before).
        for (;;) {
          const ok = await client.json('GET', `${c.url}/health`).then(r => r.status === 200, () => false)
          if (ok) break
          await new Promise(resolve => setTimeout(resolve, 5))
        }
        startupMs = performance.now() - s0
      }
    }
    const w0 = performance.now()
    worker = await spawnWorker({
      id: 'w1',
      cli,
      args: ['--capability', 'invoke:echo', '--controllers', controllers.map(c => c.url).join(','), '--tls-dir', tlsDir, '--heartbeat-interval', '1s']
    })
    const workerStartupMs = performance.now() - w0
    await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
    const cs = controllers.map(c => status(c.pid))
    const w = status(worker.pid)
    const heap = await heapOf(controllers[0], client)
    return { helpMs, startupMs, workerStartupMs, controllerRss: cs.map(s => s.rss), controllerPeak: cs.map(s => s.peak), workerRss: w.rss, workerPeak: w.peak, heap }
  } finally {
    await worker?.stop()
    await Promise.all(controllers.map(async c => { await c.stop() }))
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const clis: Array<{ name: string, path: string }> = [{ name: values.cli ?? 'this checkout', path: values.cli ?? CLI }]
if (values.baseline != null) clis.push({ name: values.baseline, path: values.baseline })
const runs = new Map<string, Run[]>(clis.map(c => [c.path, []]))
// A checkout whose dist/ is missing or stale runs its TypeScript sources (bin/capmesh.js): say which each one runs.
const runsWhat = (cli: string): string => isBuilt(new URL('../', pathToFileURL(cli))) ? 'dist/' : 'the TypeScript sources'
try {
  console.log(`bench:footprint  ${new Date().toISOString()}  load ${loadavg().map(l => l.toFixed(2)).join(' ')}  ${RUNS} run(s) each, settle ${values.settle}`)
  for (const c of clis) console.log(`  ${c.name} runs ${runsWhat(c.path)}`)
  for (let i = 0; i < RUNS; i++) {
    // Alternate which goes first, so neither always starts on a machine the other just warmed.
    const order = i % 2 === 0 ? clis : [...clis].reverse()
    for (const [k, c] of order.entries()) {
      const r = await once(c.path, `${i}-${k}`)
      runs.get(c.path)!.push(r)
      console.log(`  run ${i + 1}  ${c.name}: --help ${r.helpMs.toFixed(0)} ms, controller start-up ${r.startupMs.toFixed(0)} ms, worker ${r.workerStartupMs.toFixed(0)} ms, controllers RSS ${r.controllerRss.map(x => x.toFixed(0)).join('/')} MB, worker RSS ${r.workerRss.toFixed(0)} MB`)
    }
  }
  const ms = (x: number): string => `${x.toFixed(0).padStart(5)} ms`
  const mb = (x: number): string => `${x.toFixed(0).padStart(4)} MB`
  for (const c of clis) {
    const rs = runs.get(c.path)!
    const m = (f: (r: Run) => number): number => median(rs.map(f))
    console.log(`${c.name}, ${runsWhat(c.path)} (medians of ${rs.length}; load now ${loadavg()[0].toFixed(2)})`)
    console.log(`  capmesh --help                        ${ms(m(r => r.helpMs))}`)
    console.log(`  controller spawn to first /health     ${ms(m(r => r.startupMs))}`)
    console.log(`  worker spawn to serving, attached     ${ms(m(r => r.workerStartupMs))}`)
    console.log(`  controller RSS (idle, median of 3)    ${mb(m(r => median(r.controllerRss)))}   peak ${mb(m(r => median(r.controllerPeak)))}`)
    console.log(`  worker RSS (idle)                     ${mb(m(r => r.workerRss))}   peak ${mb(m(r => r.workerPeak))}`)
    console.log(`  controller a's /metrics: ${Object.keys(rs[0].heap).map(k => `${k} ${m(r => r.heap[k]).toFixed(1)} MB`).join(', ')}`)
  }
} finally {
  client.close()
  rmSync(root, { recursive: true, force: true })
}
