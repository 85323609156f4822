/**
 * `npm run bench:heal` — heal → converged with every controller in its own
 * process, as they run in production (bench:mesh hosts all of them in one
 * process, where N controllers share one thread).
 *
 * N child controllers (`capmesh controller`, real TCP libp2p with noise and
 * yamux, real HTTPS with the project CA) form a mesh; the harness's control
 * channel splits them into two halves that block each other (both
 * directions, existing links cut); `--workers` registrations are POSTed over
 * HTTPS, half on each side, spread over that side's controllers. Once each
 * side agrees and `--settle` has passed, every block is lifted; the time
 * until every controller's /health reports the same registry hash (polled
 * every `--poll`) is the figure. CPU and RSS of each child come from /proc.
 *
 *   npm run bench:heal
 *   npm run bench:heal -- --controllers 8 --workers 10000 --runs 3
 *
 * Flags (all optional):
 *   --controllers N   controllers, split into two halves           (8)
 *   --workers N       workers registered across the partition, per run (10000)
 *   --runs N          partition → register → heal rounds            (3)
 *   --settle D        pause between the last registration and the heal (6s)
 *   --poll D          /health polling interval during the heal        (20ms)
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { spawnController, type ChildController } from '../../src/cli/launch.ts'
import { ensureTls } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { httpsClient } from '../../src/utils/https-client.ts'

const { values } = parseArgs({
  options: {
    controllers: { type: 'string', default: '8' },
    workers: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '3' },
    settle: { type: 'string', default: '6s' },
    poll: { type: 'string', default: '20ms' }
  }
})
const N = Number(values.controllers)
const WORKERS = Number(values.workers)
const RUNS = Number(values.runs)
const SETTLE_MS = parseDuration(values.settle, '--settle')
const POLL_MS = parseDuration(values.poll, '--poll')
if (!Number.isInteger(N) || N < 2) throw new Error('--controllers must be an integer ≥ 2')
if (!Number.isInteger(WORKERS) || WORKERS < 2) throw new Error('--workers must be an integer ≥ 2')
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be an integer ≥ 1')

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const TICKS = 100 // USER_HZ on Linux

/** CPU seconds (user + system) of a process, from /proc. */
function cpuSeconds (pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ')
  return (Number(rest[11]) + Number(rest[12])) / TICKS
}

function rssMb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? NaN : Number(m[1]) / 1024
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-heal-'))
const tls = await ensureTls({ dir: join(root, 'tls') })
const client = httpsClient({ ca: tls.ca, timeoutMs: 30_000, connections: 8 })
const cs: ChildController[] = []

async function health (c: ChildController): Promise<{ hash: string, total: number }> {
  const r = await client.json('GET', `${c.url}/health`)
  return { hash: String(r.body.mesh?.registry_hash ?? ''), total: Number(r.body.workers?.total ?? -1) }
}

async function until (what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs: number): Promise<void> {
  const t0 = performance.now()
  while (!(await check())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

const cap = (name: string): Record<string, unknown> => ({
  name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4
})

try {
  console.log(`capmesh heal benchmark: ${N} controllers in their own processes, ${WORKERS} workers across the partition, ${RUNS} runs; load average ${loadavg().map(x => x.toFixed(1)).join(' ')}`)
  for (let i = 0; i < N; i++) {
    cs.push(await spawnController({
      id: `h${i}`,
      ipc: true,
      args: [
        '--id', `h${i}`, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, `h${i}`), '--tls-dir', join(root, 'tls'),
        // Production-like liveness: nobody heartbeats during the run and nobody may expire.
        '--heartbeat-interval', '10s', '--unhealthy-after', '5m', '--stale-after', '10m',
        '--digest-interval', '1s', '--sync-interval', '500ms', '--reconnect-interval', '250ms', '--log-level', 'info',
        ...(i === 0 ? [] : ['--bootstrap', cs[0].p2p[0]])
      ]
    }))
  }
  await until('a full mesh', async () => {
    const sizes = await Promise.all(cs.map(async c => Number((await client.json('GET', `${c.url}/mesh`)).body.connected_peers ?? 0)))
    return sizes.every(s => s >= N - 1)
  }, 60_000, 100)
  console.log(`  full mesh of ${N} controllers`)

  const half = Math.floor(N / 2)
  const A = cs.slice(0, half)
  const B = cs.slice(half)
  const rows: Array<{ convergedMs: number, perController: number[], cores: number, cpuPerController: number[] }> = []
  for (let run = 1; run <= RUNS; run++) {
    await Promise.all([
      ...A.map(async c => { await c.control({ cmd: 'block', peers: B.map(x => x.peerId) }) }),
      ...B.map(async c => { await c.control({ cmd: 'block', peers: A.map(x => x.peerId) }) })
    ])
    const base = (await health(cs[0])).total
    const perSide = [Math.floor(WORKERS / 2), WORKERS - Math.floor(WORKERS / 2)]
    const tReg = performance.now()
    await Promise.all([A, B].map(async (side, s) => {
      let next = 0
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < perSide[s]) {
          const k = next++
          const id = `r${run}-${s}-${k}`
          const res = await client.json('POST', `${side[k % side.length].url}/register`, {
            worker_id: id, worker_url: `https://10.${s}.${(k >> 8) & 255}.${k & 255}:8443/${run}`, capabilities: [cap(`cap-heal-${k % 100}`)]
          })
          if (res.status !== 200) throw new Error(`register ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
        }
      }))
    }))
    const sideAgrees = async (side: ChildController[], total: number): Promise<boolean> => {
      const hs = await Promise.all(side.map(health))
      return hs.every(h => h.total === total && h.hash === hs[0].hash)
    }
    await until('each side to agree internally', async () => await sideAgrees(A, base + perSide[0]) && await sideAgrees(B, base + perSide[1]), 300_000, 100)
    console.log(`  run ${run}: ${WORKERS} workers registered across the partition over HTTPS, each side agrees after ${((performance.now() - tReg) / 1000).toFixed(1)} s; settling ${SETTLE_MS / 1000} s`)
    await sleep(SETTLE_MS)

    const cpu0 = cs.map(c => cpuSeconds(c.pid))
    const expected = base + WORKERS
    const done = new Map<number, number>()
    const t0 = performance.now()
    await Promise.all(cs.map(async c => { await c.control({ cmd: 'unblock' }) }))
    await until('every controller to hold the same registry', async () => {
      const hs = await Promise.all(cs.map(health))
      const t = performance.now() - t0
      hs.forEach((h, i) => { if (!done.has(i) && h.total === expected) done.set(i, t) })
      return hs.every(h => h.total === expected && h.hash === hs[0].hash)
    }, 120_000, POLL_MS)
    const convergedMs = performance.now() - t0
    const cpuPerController = cs.map((c, i) => cpuSeconds(c.pid) - cpu0[i])
    const cores = cpuPerController.reduce((a, b) => a + b, 0) / (convergedMs / 1000)
    const perController = [...done.values()].sort((a, b) => a - b)
    rows.push({ convergedMs, perController, cores, cpuPerController })
    console.log(`  run ${run}: heal → converged ${convergedMs.toFixed(0)} ms (controllers complete after ${perController.map(t => t.toFixed(0)).join(', ')} ms); CPU per controller ${cpuPerController.map(s => (s * 1000).toFixed(0)).join('/')} ms, ${cores.toFixed(2)} cores in all`)
  }
  const rss = cs.map(c => rssMb(c.pid))
  const sorted = rows.map(r => r.convergedMs).sort((a, b) => a - b)
  console.log(`\n| controllers | workers per heal | heal → converged, median (runs) | CPU per controller per heal, median | RSS per controller at the end |`)
  console.log('|---|---|---|---|---|')
  const cpuAll = rows.flatMap(r => r.cpuPerController).sort((a, b) => a - b)
  console.log(`| ${N} | ${WORKERS} | ${sorted[Math.floor((sorted.length - 1) / 2)].toFixed(0)} ms (${rows.map(r => r.convergedMs.toFixed(0)).join(', ')}) | ${(cpuAll[Math.floor(cpuAll.length / 2)] * 1000).toFixed(0)} ms | ${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)} MB |`)
  console.log(`load average at the end ${loadavg().map(x => x.toFixed(1)).join(' ')}`)
} finally {
  await Promise.all(cs.map(async c => { await c.stop() }))
  await client.close()
  rmSync(root, { recursive: true, force: true })
}
