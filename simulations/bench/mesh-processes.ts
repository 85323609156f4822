/**
 * `npm run bench:mesh-processes` — the mesh benchmark with every controller
 * in its own process, as they run in production (`bench:mesh` hosts all of
 * them in one process, where N controllers share one JS thread).
 *
 * N child controllers (`capmesh controller`, real TCP libp2p with noise and
 * yamux, real HTTPS with the project CA) form a mesh, then:
 *
 * 1. registration → routable everywhere: workers are registered one at a
 *    time with POST /register at controller 0; each controller reports over
 *    its control channel (`watch`) the wall-clock moment its router returns
 *    the worker, healthy. Figure: from sending the request to the last
 *    controller's report (one machine, one clock), p50 / p99 / max.
 * 2. heal → converged (sizes in `--heal-sizes`): the control channel splits
 *    the controllers into two halves that block each other (both directions,
 *    links cut); `--heal-workers` registrations are POSTed, half on each side,
 *    spread over that side's controllers. Once each side agrees and
 *    `--settle` has passed, every block is lifted; each controller reports
 *    every change of its registry hash over its control channel (`hashes`),
 *    and the figure is the moment the last one reported the common hash of
 *    all the workers. Repeated `--heal-runs` times.
 *
 * CPU (user + system) and RSS of each child come from /proc.
 *
 *   npm run bench:mesh-processes
 *   npm run bench:mesh-processes -- --sizes 8,32 --registrations 200 --heal-sizes 8 --heal-runs 3
 *
 *   npm run bench:mesh-processes -- --help    every flag, what it does, its default
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'

const { values } = scriptArgs({
  script: 'bench:mesh-processes',
  summary: `The mesh benchmark with every controller in its own process (\`capmesh controller\` children):
1. registration → routable everywhere: from POST /register at controller 0 until the last
   controller reports the worker routable, p50 / p99 / max.
2. heal → converged (sizes in --heal-sizes): two halves blocking each other, --heal-workers
   registrations across the split, then the time from lifting every block until the last
   controller reports the common registry hash; --heal-runs times.
CPU and RSS of each child come from /proc.`,
  options: {
    sizes: { type: 'string', value: 'N,N', default: '8,32', description: 'mesh sizes' },
    registrations: { type: 'string', value: 'N', default: '200', description: 'measured registrations per size' },
    gap: { type: 'string', value: 'D', default: '20ms', description: 'pause between two registrations' },
    'heal-sizes': { type: 'string', value: 'N,N', default: '8', description: 'sizes that also measure the heal; "" for none' },
    'heal-workers': { type: 'string', value: 'N', default: '10000', description: 'workers registered across the partition, per run' },
    'heal-runs': { type: 'string', value: 'N', default: '3', description: 'partition → register → heal rounds' },
    settle: { type: 'string', value: 'D', default: '6s', description: 'pause between the last registration and the heal' },
    poll: { type: 'string', value: 'D', default: '5ms', description: 'how often the bench looks at what was reported' }
  }
})
const ints = (v: string, flag: string, min: number): number[] => v === '' ? [] : v.split(',').map(x => {
  const n = Number(x)
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: "${x}" is not an integer ≥ ${min}`)
  return n
})
const SIZES = ints(values.sizes, '--sizes', 2)
const HEAL_SIZES = new Set(ints(values['heal-sizes'], '--heal-sizes', 2))
const [REGISTRATIONS] = ints(values.registrations, '--registrations', 0)
const [WORKERS] = ints(values['heal-workers'], '--heal-workers', 2)
const [RUNS] = ints(values['heal-runs'], '--heal-runs', 1)
const GAP_MS = parseDuration(values.gap, '--gap')
const SETTLE_MS = parseDuration(values.settle, '--settle')
const POLL_MS = parseDuration(values.poll, '--poll')

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const wallNow = (): number => performance.timeOrigin + performance.now()
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

function pct (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-heal-'))
const tls = await ensureTls({ dir: join(root, 'tls') })
// Controllers ask who is calling: the bench registers and reads as an operator.
const op = await issueIdentity({ dir: join(root, 'tls'), role: 'operator', name: 'bench' })
const client = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, timeoutMs: 30_000, connections: 8 })
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

interface SizeResult {
  n: number
  meshMs: number
  idle: { cpuMsPerS: number[], rss: number[] }
  reg: { p50: number, p99: number, max: number, count: number, timeouts: number, cpuMsPerS: number[] } | null
  heals: Array<{ convergedMs: number, perController: number[], cpuMs: number[], cores: number }>
  rssEnd: number[]
}

const median = (xs: number[]): number => pct([...xs].sort((a, b) => a - b), 50)

async function runSize (n: number): Promise<SizeResult> {
  const cs: ChildController[] = []
  /** worker id → controllers that reported it routable, and when the last did. */
  const routable = new Map<string, { left: Set<number>, done: (at: number) => void }>()
  /** Each controller's registry hash as it last reported it (during heals), and when it changed (wall clock). */
  const hashes: Array<{ hash: string, workers: number, at: number } | undefined> = []
  const tMesh = performance.now()
  let stopping = false
  try {
    for (let i = 0; i < n; i++) {
      cs.push(await spawnController({
        id: `n${n}-c${i}`,
        ipc: true,
        timeoutMs: 60_000,
        args: [
          '--id', `n${n}-c${i}`, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, `n${n}-c${i}`), '--tls-dir', join(root, 'tls'),
          // Production-like liveness: nobody heartbeats during the run and nobody may expire.
          '--heartbeat-interval', '10s', '--unhealthy-after', '5m', '--stale-after', '10m',
          '--digest-interval', '1s', '--sync-interval', '500ms', '--reconnect-interval', '250ms', '--log-level', 'info',
          ...(i === 0 ? [] : ['--bootstrap', cs[0].p2p[0], '--bootstrap', cs[i - 1].p2p[0]])
        ],
        onEvent: e => {
          if (e.event === 'hash') {
            hashes[i] = { hash: e.hash, workers: e.workers, at: e.at }
            return
          }
          const w = routable.get(e.worker)
          if (w == null || !w.left.delete(i)) return
          if (w.left.size === 0) w.done(e.at)
        }
      }))
    }
    // A controller that dies mid-run says why (its stderr), before the run fails on the reset connections.
    for (const c of cs) {
      const errs: string[] = []
      c.process.stderr?.on('data', (d: Buffer) => { errs.push(d.toString()) })
      c.process.once('exit', (code, signal) => {
        if (!stopping) console.error(`controller ${c.id} exited (${code ?? signal}) during the run:\n${errs.join('').slice(-3000)}`)
      })
    }
    await until(`a full mesh of ${n}`, async () => {
      const sizes = await Promise.all(cs.map(async c => Number((await client.json('GET', `${c.url}/mesh`)).body.connected_peers ?? 0)))
      return sizes.every(x => x >= n - 1)
    }, 120_000, 200)
    const meshMs = performance.now() - tMesh
    console.log(`  full mesh of ${n} controllers after ${(meshMs / 1000).toFixed(1)} s`)
    await Promise.all(cs.map(async c => { await c.control({ cmd: 'watch', prefix: 'reg-' }) }))

    // At rest: what every later figure runs on top of.
    await sleep(2_000)
    let cpu0 = cs.map(c => cpuSeconds(c.pid))
    let t0 = performance.now()
    await sleep(5_000)
    const idle = { cpuMsPerS: cs.map((c, i) => (cpuSeconds(c.pid) - cpu0[i]) * 1e6 / (performance.now() - t0)), rss: cs.map(c => rssMb(c.pid)) }
    console.log(`  at rest: CPU per controller median ${median(idle.cpuMsPerS).toFixed(0)} ms/s (${(idle.cpuMsPerS.reduce((a, b) => a + b, 0) / 1000).toFixed(2)} cores in all), RSS median ${median(idle.rss).toFixed(0)} MB`)

    // ---- 1. registration → routable at every controller
    let reg: SizeResult['reg'] = null
    if (REGISTRATIONS > 0) {
      const register = async (id: string): Promise<number | null> => {
        let resolve!: (at: number) => void
        const done = new Promise<number>(r => { resolve = r })
        routable.set(id, { left: new Set(cs.map((_c, i) => i)), done: resolve })
        const sent = wallNow()
        const res = await client.json('POST', `${cs[0].url}/register`, { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap(`cap-${id}`)] })
        if (res.status !== 200) throw new Error(`register ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
        const at = await Promise.race([done, sleep(10_000).then(() => -1)])
        routable.delete(id)
        return at < 0 ? null : at - sent
      }
      for (let k = 0; k < 5; k++) await register(`reg-warm-${k}`)
      cpu0 = cs.map(c => cpuSeconds(c.pid))
      t0 = performance.now()
      const totals: number[] = []
      let timeouts = 0
      for (let k = 0; k < REGISTRATIONS; k++) {
        const ms = await register(`reg-${k}`)
        if (ms == null) timeouts++
        else totals.push(ms)
        await sleep(GAP_MS)
      }
      const cpuMsPerS = cs.map((c, i) => (cpuSeconds(c.pid) - cpu0[i]) * 1e6 / (performance.now() - t0))
      totals.sort((a, b) => a - b)
      reg = { p50: pct(totals, 50), p99: pct(totals, 99), max: totals.at(-1) ?? NaN, count: totals.length, timeouts, cpuMsPerS }
      console.log(`  registration → routable at all ${n}: p50 ${reg.p50.toFixed(1)} ms, p99 ${reg.p99.toFixed(1)} ms, max ${reg.max.toFixed(1)} ms over ${reg.count} (${timeouts} timed out); CPU per controller median ${median(cpuMsPerS).toFixed(0)} ms/s`)
    }

    // ---- 2. heal → converged
    const heals: SizeResult['heals'] = []
    if (HEAL_SIZES.has(n)) {
      const half = Math.floor(n / 2)
      const A = cs.slice(0, half)
      const B = cs.slice(half)
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
              const id = `heal${run}-${s}-${k}`
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
        console.log(`  heal run ${run}: ${WORKERS} workers registered across the partition over HTTPS, each side agrees after ${((performance.now() - tReg) / 1000).toFixed(1)} s; settling ${SETTLE_MS / 1000} s`)
        await sleep(SETTLE_MS)

        // Each controller reports its registry hash as it changes (no polling: 8 controllers polled
        // every 20 ms over HTTPS cost a good part of two cores). Converged: every last report is the
        // same hash over all the workers; the time is that of the last controller to get there.
        hashes.length = 0
        await Promise.all(cs.map(async c => { await c.control({ cmd: 'hashes', on: true }) }))
        await until('every controller to report its hash', async () => hashes.filter(h => h != null).length === n, 10_000, 5)
        const cpuBefore = cs.map(c => cpuSeconds(c.pid))
        const expected = base + WORKERS
        const tHeal = wallNow()
        const tHealMono = performance.now()
        await Promise.all(cs.map(async c => { await c.control({ cmd: 'unblock' }) }))
        await until('every controller to hold the same registry', async () => {
          return hashes.every(h => h != null && h.workers === expected && h.hash === hashes[0]!.hash)
        }, 120_000, POLL_MS)
        const perController = hashes.map(h => h!.at - tHeal).sort((a, b) => a - b)
        const convergedMs = perController.at(-1)!
        const cpuMs = cs.map((c, i) => (cpuSeconds(c.pid) - cpuBefore[i]) * 1000)
        const cores = cpuMs.reduce((a, b) => a + b, 0) / (performance.now() - tHealMono)
        await Promise.all(cs.map(async c => { await c.control({ cmd: 'hashes', on: false }) }))
        heals.push({ convergedMs, perController, cpuMs, cores })
        console.log(`  heal run ${run}: heal → converged ${convergedMs.toFixed(0)} ms (controllers complete after ${perController.map(t => t.toFixed(0)).join(', ')} ms); CPU per controller ${cpuMs.map(x => x.toFixed(0)).join('/')} ms, ${cores.toFixed(2)} cores in all`)
      }
    }
    return { n, meshMs, idle, reg, heals, rssEnd: cs.map(c => rssMb(c.pid)) }
  } finally {
    stopping = true
    await Promise.all(cs.map(async c => { await c.stop() }))
  }
}

const results: SizeResult[] = []
try {
  console.log(`capmesh mesh benchmark, one process per controller: sizes ${SIZES.join(', ')}, ${REGISTRATIONS} registrations; heal at ${[...HEAL_SIZES].join(', ') || 'none'} with ${WORKERS} workers × ${RUNS} runs; load average ${loadavg().map(x => x.toFixed(1)).join(' ')}; machine: ${ed25519VerifiesPerSecond()} Ed25519 verifies/s`)
  for (const n of SIZES) {
    console.log(`N = ${n}`)
    results.push(await runSize(n))
  }
  console.log('\n| N | full mesh | CPU per controller at rest | reg → routable everywhere p50 / p99 / max | heal → converged, median (runs) | CPU per controller per heal, median | RSS per controller at the end |')
  console.log('|---|---|---|---|---|---|---|')
  for (const r of results) {
    const regCell = r.reg == null ? '—' : `${r.reg.p50.toFixed(1)} / ${r.reg.p99.toFixed(1)} / ${r.reg.max.toFixed(1)} ms${r.reg.timeouts > 0 ? ` (${r.reg.timeouts} timed out)` : ''}`
    const healCell = r.heals.length === 0 ? '—' : `${median(r.heals.map(h => h.convergedMs)).toFixed(0)} ms (${r.heals.map(h => h.convergedMs.toFixed(0)).join(', ')})`
    const healCpu = r.heals.length === 0 ? '—' : `${median(r.heals.flatMap(h => h.cpuMs)).toFixed(0)} ms`
    console.log(`| ${r.n} | ${(r.meshMs / 1000).toFixed(1)} s | ${median(r.idle.cpuMsPerS).toFixed(0)} ms/s | ${regCell} | ${healCell} | ${healCpu} | ${Math.min(...r.rssEnd).toFixed(0)}–${Math.max(...r.rssEnd).toFixed(0)} MB |`)
  }
  console.log(`load average at the end ${loadavg().map(x => x.toFixed(1)).join(' ')}`)
} finally {
  await client.close()
  rmSync(root, { recursive: true, force: true })
}
