/**
 * `npm run bench:failover` — issue 4's two numbers.
 *
 * 1. Failover time. Three `capmesh controller` child processes (A, B, C)
 *    form a mesh; 100 worker agents (in this process, one HTTPS client each,
 *    1 s heartbeat) attach, half of them to A (affinity), a quarter each to
 *    B and C. A is killed with SIGKILL (a real kill -9: no deregistration, no
 *    goodbye to its peers). For every worker that was on A we measure the
 *    time from the kill until it is routable from EVERY surviving
 *    controller: POST /route for its own capability answers with it, owned
 *    by a survivor, with an incarnation newer than before the kill.
 *    Target: max ≤ 3 s (failure threshold 2 × 1 s heartbeat + one
 *    registration round trip).
 *
 * 2. Heartbeat capacity. One controller child process with many registered
 *    workers; a load generator in a separate child process (undici Pool,
 *    HTTPS keep-alive, bounded time) sends POST /heartbeat, first at a fixed
 *    5,000/s, then as fast as it can. The controller's CPU time comes from
 *    /proc/<pid>/stat over the same window. Target: ≥ 5,000/s with the
 *    controller below one core.
 *
 *   npm run bench:failover -- [--workers 100] [--heartbeat 1000]
 *     [--capacity-workers 10000] [--seconds 10] [--rate 5000] [--connections 32] [--warmup 2]
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import { workerAgent, type WorkerAgent } from '../../src/agent/index.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import type { Capability } from '../../src/registry/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'

const SELF = fileURLToPath(import.meta.url)
const { values } = scriptArgs({
  script: 'bench:failover',
  summary: `1. Failover time: three controller processes A, B, C; worker agents attach (half to A); A is
   killed with SIGKILL; for each of A's workers, the time until every survivor routes to it again.
2. Heartbeat capacity: one controller with --capacity-workers workers; a load generator (a child
   process) sends POST /heartbeat at --rate a second, then as fast as it can; the controller's CPU
   comes from /proc.`,
  options: {
    workers: { type: 'string', value: 'N', default: '100', description: 'worker agents in the failover run' },
    heartbeat: { type: 'string', value: 'MS', default: '1000', description: 'their heartbeat interval, in milliseconds' },
    'capacity-workers': { type: 'string', value: 'N', default: '10000', description: 'workers registered for the capacity run' },
    seconds: { type: 'string', value: 'S', default: '10', description: 'measured seconds of each capacity phase' },
    rate: { type: 'string', value: 'N', default: '5000', description: 'heartbeats a second of the fixed-rate phase' },
    connections: { type: 'string', value: 'N', default: '32', description: 'HTTPS keep-alive connections of the load generator' },
    warmup: { type: 'string', value: 'S', default: '2', description: 'unmeasured seconds before each capacity phase' },
    loadgen: { type: 'string', value: 'URL', internal: true, description: 'run as the load generator against this controller' },
    ca: { type: 'string', value: 'FILE', internal: true, description: 'the load generator\'s CA certificate' },
    cert: { type: 'string', value: 'FILE', internal: true, description: 'the load generator\'s client certificate (an operator\'s)' },
    key: { type: 'string', value: 'FILE', internal: true, description: 'its private key' },
    pid: { type: 'string', value: 'PID', internal: true, description: 'the controller process whose CPU the load generator samples' }
  }
})

async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

if (values.loadgen != null) {
  await loadGenerator()
  process.exit(0)
}

const WORKERS = Number(values.workers)
const HEARTBEAT_MS = Number(values.heartbeat)
const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-failover-'))
const tlsDir = join(root, 'tls')
const tls = await ensureTls({ dir: tlsDir })
// Controllers ask who is calling: the bench, its agents and its load generator call as an operator.
const op = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'bench' })
const asOperator = { ca: tls.ca, cert: op.cert, key: op.key }
const children: ChildController[] = []
const client = httpsClient({ ...asOperator, timeoutMs: 10_000, connections: 16 })

const cap = (name: string): Capability => ({ name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 })

async function controller (id: string, extra: string[]): Promise<ChildController> {
  const c = await spawnController({
    id,
    args: [
      '--id', id, '--host', '127.0.0.1', '--https-port', '0', '--p2p-port', '0',
      '--data-dir', join(root, id), '--tls-dir', tlsDir, '--log-level', 'info', ...extra
    ]
  })
  children.push(c)
  return c
}

async function until (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const end = performance.now() + timeoutMs
  while (performance.now() < end) {
    if (await Promise.resolve().then(check).catch(() => false)) return
    await sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}

function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]
}
const ms = (x: number): string => `${Math.round(x)} ms`

try {
  await failoverBench()
  await capacityBench()
} finally {
  await client.close()
  for (const c of children) await c.stop(2000)
  rmSync(root, { recursive: true, force: true })
}

// ------------------------------------------------------------ 1. failover

async function failoverBench (): Promise<void> {
  const timing = ['--heartbeat-interval', `${HEARTBEAT_MS}ms`, '--unhealthy-after', `${3 * HEARTBEAT_MS}ms`, '--stale-after', `${10 * HEARTBEAT_MS}ms`]
  const a = await controller('A', timing)
  const b = await controller('B', [...timing, '--bootstrap', a.p2p[0]])
  const c = await controller('C', [...timing, '--bootstrap', a.p2p[0], '--bootstrap', b.p2p[0]])
  const all = [a, b, c]
  const survivors = [b, c]
  await until('a full mesh', async () => {
    for (const x of all) if ((await client.json('GET', `${x.url}/mesh`)).body.connected_peers !== 2) return false
    return true
  })

  console.log(`failover: 3 controllers (child processes), ${WORKERS} agents, heartbeat ${HEARTBEAT_MS} ms, failure threshold 2 (machine: ${cpus().length} CPUs, load average ${loadavg()[0].toFixed(1)})`)
  const agents: WorkerAgent[] = []
  const urls = all.map(x => x.url)
  for (let i = 0; i < WORKERS; i++) {
    const affinity = i % 2 === 0 ? 'A' : i % 4 === 1 ? 'B' : 'C'
    const id = `fw${String(i).padStart(3, '0')}`
    const agent = workerAgent({ workerId: id, workerUrl: `https://127.0.0.1:7000/${id}`, capabilities: [cap(`cap-${id}`)], controllers: urls, tls: asOperator, heartbeatIntervalMs: HEARTBEAT_MS, affinity })
    agent.on('error', () => {})
    agents.push(agent)
  }
  // Staggered over one heartbeat interval, as independent workers would be: heartbeats keep their phase.
  const t0start = performance.now()
  await Promise.all(agents.map(async (ag, i) => {
    await sleep(i * HEARTBEAT_MS / agents.length)
    await ag.start()
  }))
  const onA = agents.filter(ag => ag.controller?.id === 'A')
  console.log(`  ${agents.length} agents attached in ${ms(performance.now() - t0start)}: ${onA.length} on A, ${agents.filter(ag => ag.controller?.id === 'B').length} on B, ${agents.filter(ag => ag.controller?.id === 'C').length} on C`)
  await until('every worker healthy at every controller', async () => {
    for (const x of all) {
      const res = await client.json('GET', `${x.url}/workers?limit=10000&state=healthy`)
      if (res.body.total !== WORKERS) return false
    }
    return true
  })
  await sleep(2 * HEARTBEAT_MS)

  const before = new Map<string, number>()
  for (const ag of onA) before.set(ag.workerId, (await client.json('POST', `${b.url}/route`, { verb: 'invoke', capability: `cap-${ag.workerId}` })).body.incarnation)

  const firstFailure = new Map<string, number>()
  const failoverAt = new Map<string, number>()
  const routableAt = new Map<string, number>()
  const pending: Array<Promise<void>> = []
  let t0 = 0
  for (const ag of onA) {
    ag.on('heartbeat_failed', () => { if (!firstFailure.has(ag.workerId)) firstFailure.set(ag.workerId, performance.now() - t0) })
    ag.on('failover', f => {
      failoverAt.set(ag.workerId, performance.now() - t0)
      pending.push(waitRoutable(survivors, ag.workerId, ag.controller!.id!, before.get(ag.workerId)!).then(t => { routableAt.set(ag.workerId, t - t0) }))
    })
  }
  const otherFailovers = (): number => agents.filter(ag => !onA.includes(ag)).reduce((n, ag) => n + ag.counters.failovers, 0)

  t0 = performance.now()
  process.kill(a.pid, 'SIGKILL')
  await until('every worker of A failed over', () => failoverAt.size === onA.length, 30 * HEARTBEAT_MS)
  while (pending.length > 0) await pending.shift()

  // Independent check once it is over: every moved worker routable from each survivor, owned there.
  let verified = 0
  for (const ag of onA) {
    for (const s of survivors) {
      const r = await client.json('POST', `${s.url}/route`, { verb: 'invoke', capability: `cap-${ag.workerId}` })
      if (r.status === 200 && r.body.worker_id === ag.workerId && r.body.controller_id === ag.controller?.id && r.body.incarnation > before.get(ag.workerId)!) verified++
    }
  }

  const routable = [...routableAt.values()]
  const detect = [...firstFailure.values()]
  const fo = [...failoverAt.values()]
  const spread = onA.map(ag => routableAt.get(ag.workerId)! - failoverAt.get(ag.workerId)!)
  console.log(`  killed A (SIGKILL, pid ${a.pid}); ${onA.length} workers had to move`)
  console.log(`  first failed heartbeat after the kill   p50 ${ms(pct(detect, 50))}  max ${ms(Math.max(...detect))}`)
  console.log(`  failover (registered at a survivor)     p50 ${ms(pct(fo, 50))}  p99 ${ms(pct(fo, 99))}  max ${ms(Math.max(...fo))}`)
  console.log(`  ... then routable at both survivors     p50 ${ms(pct(spread, 50))}  max ${ms(Math.max(...spread))} (gossip to the other survivor)`)
  console.log(`  kill -> routable from EVERY survivor    p50 ${ms(pct(routable, 50))}  p99 ${ms(pct(routable, 99))}  max ${ms(Math.max(...routable))}  (target max <= 3000 ms: ${Math.max(...routable) <= 3000 ? 'MET' : 'MISSED'})`)
  console.log(`  verified by POST /route afterwards: ${verified}/${onA.length * survivors.length} (worker, survivor) pairs; failovers of workers not on A: ${otherFailovers()}`)
  const moved = new Map<string, number>()
  for (const ag of onA) moved.set(ag.controller!.id!, (moved.get(ag.controller!.id!) ?? 0) + 1)
  console.log(`  moved to: ${[...moved].map(([k, v]) => `${k} ${v}`).join(', ')}`)

  for (let i = 0; i < agents.length; i += 50) await Promise.all(agents.slice(i, i + 50).map(async ag => { await ag.stop() }))
  for (const x of all) await x.stop(2000)
}

/** Polls /route at every survivor until `workerId` is owned by `owner` with an incarnation above `prev`; returns when (performance.now()). */
async function waitRoutable (survivors: ChildController[], workerId: string, owner: string, prev: number): Promise<number> {
  const done = new Set<string>()
  let last = 0
  const end = performance.now() + 30_000
  while (done.size < survivors.length && performance.now() < end) {
    await Promise.all(survivors.filter(s => !done.has(s.url)).map(async s => {
      const r = await client.json('POST', `${s.url}/route`, { verb: 'invoke', capability: `cap-${workerId}` }).catch(() => null)
      if (r?.status === 200 && r.body.controller_id === owner && r.body.incarnation > prev && r.body.state === 'healthy') {
        done.add(s.url)
        last = Math.max(last, performance.now())
      }
    }))
    if (done.size < survivors.length) await sleep(5)
  }
  if (done.size < survivors.length) throw new Error(`${workerId} never became routable everywhere`)
  return last
}

// ------------------------------------------------------- 2. heartbeat capacity

async function capacityBench (): Promise<void> {
  const n = Number(values['capacity-workers'])
  const d = await controller('D', ['--heartbeat-interval', '1s', '--unhealthy-after', '60s', '--stale-after', '120s'])
  const reg = httpsClient({ ...asOperator, timeoutMs: 30_000, connections: 32 })
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < n) {
      const i = next++
      const res = await reg.json('POST', `${d.url}/register`, { worker_id: `hb-${i}`, worker_url: `https://10.1.${(i >> 8) & 255}.${i & 255}:8443`, capabilities: [cap('echo')] })
      if (res.status !== 200) throw new Error(`register failed: ${res.status} ${JSON.stringify(res.body)}`)
    }
  }))
  await reg.close()
  console.log(`\nheartbeat capacity: one controller (child process, pid ${d.pid}), ${n} registered workers (registered in ${ms(performance.now() - t0)})`)
  console.log(`  load generator: a separate process, undici Pool, ${values.connections} HTTPS keep-alive connections, ${values.seconds} s per phase after ${values.warmup} s warm-up`)
  for (const rate of [Number(values.rate), 0]) {
    const r = await runLoadgen(d, n, rate)
    const label = rate > 0 ? `offered ${rate}/s` : 'closed loop (max)'
    // CPU per heartbeat is what contention on a shared machine changes least: it gives the rate one full core would carry.
    const usPerBeat = r.controllerCores * 1e6 / r.perSecond
    console.log(`  ${label.padEnd(18)} ${String(Math.round(r.perSecond)).padStart(6)} heartbeats/s acknowledged, errors ${r.errors}${rate > 0 ? `, not sent (over ${64 * Number(values.connections)} in flight) ${r.dropped}` : ''}, latency p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms`)
    console.log(`  ${''.padEnd(18)} controller CPU ${r.controllerCores.toFixed(2)} cores (${usPerBeat.toFixed(0)} us per heartbeat -> ~${Math.round(1e6 / usPerBeat)}/s per core), load generator CPU ${r.loadgenCores.toFixed(2)} cores`)
  }
  console.log(`  machine: ${cpus().length} CPUs, load average ${loadavg().map(x => x.toFixed(1)).join(' ')} (other processes compete for the same cores)`)
  const health = (await client.json('GET', `${d.url}/health`)).body
  console.log(`  controller still healthy: ${health.status}, ${health.workers.total} workers (${health.workers.healthy} healthy)`)
}

interface LoadResult { perSecond: number, errors: number, dropped: number, p50: number, p99: number, controllerCores: number, loadgenCores: number }

async function runLoadgen (d: ChildController, n: number, rate: number): Promise<LoadResult> {
  const child = spawn(process.execPath, [
    SELF, '--loadgen', d.url, '--ca', join(tlsDir, 'ca.pem'), '--cert', op.certPath, '--key', op.keyPath, '--pid', String(d.pid), '--capacity-workers', String(n),
    '--rate', String(rate), '--seconds', values.seconds!, '--connections', values.connections!, '--warmup', values.warmup!
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  let result: LoadResult | null = null
  createInterface({ input: child.stdout }).on('line', line => { result = JSON.parse(line) as LoadResult })
  const code = await new Promise<number | null>(resolve => child.once('exit', c => { resolve(c) }))
  if (code !== 0 || result == null) throw new Error(`load generator failed (exit ${code})`)
  return result
}

/** Child mode: drives POST /heartbeat at a controller and prints one JSON result line. */
async function loadGenerator (): Promise<void> {
  const url = values.loadgen!
  const n = Number(values['capacity-workers'])
  const rate = Number(values.rate)
  const seconds = Number(values.seconds)
  const connections = Number(values.connections)
  const pool = new Pool(url, { connections, pipelining: 1, connect: { ca: readFileSync(values.ca!, 'utf8'), cert: readFileSync(values.cert!, 'utf8'), key: readFileSync(values.key!, 'utf8') } })
  const cpuOf = (pid: string): number => {
    // utime + stime, in clock ticks (USER_HZ = 100 on Linux).
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) * 10
  }
  let measuring = false
  let ok = 0
  let errors = 0
  let dropped = 0
  const lat: number[] = []
  const one = async (): Promise<void> => {
    const t = performance.now()
    try {
      const res = await pool.request({
        method: 'POST',
        path: '/heartbeat',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ worker_id: `hb-${Math.floor(Math.random() * n)}`, load: 0 })
      })
      const body = await res.body.json() as { status?: string }
      if (!measuring) return
      if (res.statusCode === 200 && body.status === 'acknowledged') {
        ok++
        lat.push(performance.now() - t)
      } else errors++
    } catch {
      if (measuring) errors++
    }
  }

  const stopAt = { t: Infinity }
  const drive = async (): Promise<void> => {
    if (rate > 0) {
      // Open loop: `rate` requests per second of elapsed time, whatever the answers do (bounded in flight).
      let inFlight = 0
      let sent = 0
      const start = performance.now()
      while (performance.now() < stopAt.t) {
        const due = Math.floor((performance.now() - start) / 1000 * rate)
        for (; sent < due; sent++) {
          if (inFlight >= 64 * connections) { if (measuring) dropped++; continue }
          inFlight++
          void one().finally(() => { inFlight-- })
        }
        await sleep(5)
      }
    } else {
      // Closed loop: 2 requests outstanding per connection (one on the wire, one queued).
      await Promise.all(Array.from({ length: connections * 2 }, async () => { while (performance.now() < stopAt.t) await one() }))
    }
  }
  const done = drive()
  await sleep(Number(values.warmup) * 1000)
  measuring = true
  const c0 = cpuOf(values.pid!)
  const self0 = process.cpuUsage()
  const t0 = performance.now()
  await sleep(seconds * 1000)
  const wall = performance.now() - t0
  const c1 = cpuOf(values.pid!)
  const self1 = process.cpuUsage(self0)
  measuring = false
  stopAt.t = 0
  await done
  await pool.close()
  lat.sort((a, b) => a - b)
  const result: LoadResult = {
    perSecond: ok / (wall / 1000),
    errors,
    dropped,
    p50: lat[Math.floor(lat.length * 0.5)] ?? NaN,
    p99: lat[Math.floor(lat.length * 0.99)] ?? NaN,
    controllerCores: (c1 - c0) / wall,
    loadgenCores: (self1.user + self1.system) / 1000 / wall
  }
  console.log(JSON.stringify(result))
}
