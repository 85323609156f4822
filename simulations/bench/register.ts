/**
 * `npm run bench:register` — registrations per second at one controller
 * over HTTPS: one `POST /register` per worker against `POST /register/batch`
 * with `--batch` workers a request, in the same run, alternating.
 *
 * One controller in this process, as `capmesh controller` runs it (every
 * production default: auth on, persistence, seals); a load generator in a
 * child process (undici Pool, `--connections` keep-alive connections, closed
 * loop) registers fresh worker ids as an operator (the same path as a
 * worker registering itself, minus the one-id-per-identity rule). Per run:
 * registrations/s, requests/s, p50/p99 of a request, and the controller's
 * CPU per registration. Everything listens on 127.0.0.1 and is stopped by
 * id; the script exits by itself.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import { resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { MAX_REGISTER_BATCH } from '../../src/constants.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { scriptArgs } from '../args.ts'

const HOST = '127.0.0.1'
const GENERATOR_FLAG = '--load-generator'

const { values } = scriptArgs({
  script: 'bench:register',
  summary: `Registrations per second at one controller over HTTPS (production defaults, auth on): one
POST /register per worker against POST /register/batch with --batch workers a request, alternating
--rounds times; fresh worker ids throughout; the load generator is a child process.`,
  options: {
    duration: { type: 'string', value: 'D', default: '5s', description: 'measured window of each run' },
    warmup: { type: 'string', value: 'D', default: '1s', description: 'unmeasured lead-in of each run' },
    rounds: { type: 'string', value: 'N', default: '2', description: 'single+batch pairs' },
    connections: { type: 'string', value: 'N', default: '32', description: 'keep-alive connections of the single runs (closed loop, one request in flight each)' },
    'batch-connections': { type: 'string', value: 'N', default: '4', description: 'connections of the batch runs (each request carries --batch workers: a few in flight keep the controller busy without queueing seconds of work)' },
    batch: { type: 'string', value: 'N', default: '200', description: `workers per /register/batch request (1..${MAX_REGISTER_BATCH})` },
    'load-generator': { type: 'boolean', default: false, internal: true, description: 'run as the load generator child' }
  }
})

interface RunRequest { type: 'run', origin: string, path: string, ca: string, cert: string, key: string, prefix: string, batch: number, connections: number, warmupMs: number, durationMs: number }
interface RunResult { type: 'result', registrations: number, requests: number, errors: number, shed: number, firstError: string, seconds: number, p50: number, p99: number }
type Message = { type: 'ready' } | { type: 'mark', phase: 'start' | 'end' } | RunResult | { type: 'error', message: string }

const worker = (id: string): Record<string, unknown> => ({
  worker_id: id,
  worker_url: `https://10.0.0.1:8080/${id}`,
  capabilities: [{ name: `cap-${id.length % 100}`, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }]
})

// ----------------------------------------------------------- load generator

if (values['load-generator']) {
  process.on('message', (msg: RunRequest | { type: 'exit' }) => {
    if (msg.type === 'exit') { process.disconnect(); return }
    drive(msg).then(r => { process.send!(r) }, (err: Error) => { process.send!({ type: 'error', message: err.stack ?? err.message }) })
  })
  process.send!({ type: 'ready' })
}

async function drive (req: RunRequest): Promise<RunResult> {
  const pool = new Pool(req.origin, { connections: req.connections, connect: { ca: req.ca, cert: req.cert, key: req.key }, keepAliveTimeout: 60_000 })
  const headers = { 'content-type': 'application/json' }
  let next = 0
  let registrations = 0
  let requests = 0
  let errors = 0
  let firstError = ''
  let shed = 0
  const latencies: number[] = []
  const t0 = performance.now()
  const from = t0 + req.warmupMs
  const to = from + req.durationMs
  let stopped = false
  const startTimer = setTimeout(() => { process.send!({ type: 'mark', phase: 'start' }) }, req.warmupMs)
  const stopTimer = setTimeout(() => { stopped = true; process.send!({ type: 'mark', phase: 'end' }) }, req.warmupMs + req.durationMs)
  const caller = async (): Promise<void> => {
    while (!stopped) {
      const ids = Array.from({ length: req.batch }, () => `${req.prefix}-${next++}`)
      const body = req.path === '/register' ? JSON.stringify(worker(ids[0])) : JSON.stringify({ workers: ids.map(worker) })
      const begin = performance.now()
      const res = await pool.request({ path: req.path, method: 'POST', headers, body })
      const text = await res.body.text()
      const end = performance.now()
      // Shed (503 overloaded: the event loop fell behind) or rate limited: counted, retried after the wait asked for.
      if (res.statusCode === 503 || res.statusCode === 429) {
        shed++
        await new Promise(resolve => setTimeout(resolve, Math.min(2000, Number(res.headers['retry-after'] ?? 1) * 1000)))
        continue
      }
      let ok = res.statusCode === 200
      if (ok && req.path !== '/register') ok = (JSON.parse(text) as { registered: number }).registered === ids.length
      if (!ok) {
        errors++
        firstError ||= `HTTP ${res.statusCode}: ${text.slice(0, 300)}`
        if (errors > 100) stopped = true
        continue
      }
      if (begin >= from && end <= to) {
        requests++
        registrations += ids.length
        latencies.push(end - begin)
      }
    }
  }
  await Promise.all(Array.from({ length: req.connections }, caller))
  clearTimeout(startTimer)
  clearTimeout(stopTimer)
  await pool.close()
  latencies.sort((a, b) => a - b)
  const q = (p: number): number => latencies.length === 0 ? NaN : latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]
  return { type: 'result', registrations, requests, errors, shed, firstError, seconds: req.durationMs / 1000, p50: q(0.5), p99: q(0.99) }
}

// -------------------------------------------------------------------- main

async function main (): Promise<void> {
  const durationMs = parseDuration(values.duration, '--duration')
  const warmupMs = parseDuration(values.warmup, '--warmup')
  const rounds = Number(values.rounds)
  const connections = Number(values.connections)
  const batch = Number(values.batch)
  const batchConnections = Number(values['batch-connections'])
  if (!Number.isInteger(batchConnections) || batchConnections < 1) throw new Error('--batch-connections: an integer ≥ 1')
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds: an integer ≥ 1')
  if (!Number.isInteger(connections) || connections < 1) throw new Error('--connections: an integer ≥ 1')
  if (!Number.isInteger(batch) || batch < 1 || batch > MAX_REGISTER_BATCH) throw new Error(`--batch: an integer 1..${MAX_REGISTER_BATCH}`)

  const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-register-'))
  let controller: Controller | null = null
  let child: ChildProcess | null = null
  try {
    const tlsDir = join(root, 'tls')
    const tls = await ensureTls({ dir: tlsDir, hosts: [HOST] })
    const operator = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'bench' })
    // Production defaults; one identity sends everything, so the per-identity rate limit is raised (it still runs).
    const config = resolveControllerConfig({ id: 'bench', host: HOST, httpsPort: 0, p2pPort: 0, dataDir: join(root, 'data'), tlsDir, logLevel: 'silent', rateLimit: 1_000_000 })
    controller = await new Controller({ config }).start()
    const c = controller

    const gen = fork(import.meta.filename, [GENERATOR_FLAG], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    child = gen
    const inbox: Message[] = []
    let waiting: ((m: Message) => void) | null = null
    let cpu0 = process.cpuUsage()
    let cpuMs = NaN
    gen.on('message', (m: Message) => {
      if (m.type === 'mark') {
        if (m.phase === 'start') cpu0 = process.cpuUsage()
        else { const u = process.cpuUsage(cpu0); cpuMs = (u.user + u.system) / 1000 }
        return
      }
      if (waiting != null) { const w = waiting; waiting = null; w(m) } else inbox.push(m)
    })
    const next = async (): Promise<Message> => inbox.shift() ?? await new Promise<Message>(resolve => { waiting = resolve })
    if ((await next()).type !== 'ready') throw new Error('load generator did not start')

    console.log(`bench:register — controller ${c.url} (production defaults, auth on), single: ${connections} connections, batch: ${batchConnections} connections × ${batch} workers a request, ` +
      `${warmupMs} ms warm-up + ${durationMs} ms measured per run, ${rounds} rounds`)
    const rows: Array<{ kind: string, regPerS: number, reqPerS: number, usPerReg: number, p50: number, p99: number }> = []
    let prefix = 0
    for (let round = 1; round <= rounds; round++) {
      for (const kind of round % 2 === 1 ? ['single', 'batch'] : ['batch', 'single']) {
        cpuMs = NaN
        gen.send({
          type: 'run', origin: c.url, path: kind === 'single' ? '/register' : '/register/batch', ca: tls.ca, cert: operator.cert, key: operator.key,
          prefix: `r${prefix++}`, batch: kind === 'single' ? 1 : batch, connections: kind === 'single' ? connections : batchConnections, warmupMs, durationMs
        } satisfies RunRequest)
        const m = await next()
        if (m.type !== 'result') throw new Error(`load generator failed: ${JSON.stringify(m)}`)
        if (m.errors > 0) throw new Error(`${kind}: ${m.errors} failed requests; first: ${m.firstError}`)
        const row = { kind, regPerS: m.registrations / m.seconds, reqPerS: m.requests / m.seconds, usPerReg: cpuMs * 1000 / m.registrations, p50: m.p50, p99: m.p99 }
        rows.push(row)
        console.log(`  round ${round} ${kind.padEnd(6)} ${Math.round(row.regPerS).toLocaleString('en-US').padStart(8)} registrations/s  ` +
          `(${Math.round(row.reqPerS).toLocaleString('en-US')} requests/s, p50 ${row.p50.toFixed(2)} ms, p99 ${row.p99.toFixed(2)} ms${m.shed > 0 ? `, ${m.shed} shed with 503/429 and retried` : ''})  controller CPU ${row.usPerReg.toFixed(1)} µs/registration`)
      }
    }
    const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 === 1 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
    const single = median(rows.filter(r => r.kind === 'single').map(r => r.regPerS))
    const batched = median(rows.filter(r => r.kind === 'batch').map(r => r.regPerS))
    console.log(`\nnode ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map(l => l.toFixed(2)).join(' ')}, ${new Date().toISOString()}`)
    console.log(`registrations/s (median): single ${Math.round(single).toLocaleString('en-US')}, batch of ${batch} ${Math.round(batched).toLocaleString('en-US')} (${(batched / single).toFixed(1)}×); ` +
      `controller CPU per registration (median): single ${median(rows.filter(r => r.kind === 'single').map(r => r.usPerReg)).toFixed(1)} µs, batch ${median(rows.filter(r => r.kind === 'batch').map(r => r.usPerReg)).toFixed(1)} µs`)
    console.log(`target ≥ 15,000 registrations/s at one controller: ${batched >= 15_000 ? 'MET' : 'NOT MET'} with batches (${Math.round(batched).toLocaleString('en-US')}/s); ${c.core.registry.size.toLocaleString('en-US')} workers registered in all`)
    gen.send({ type: 'exit' })
  } finally {
    if (child != null && child.exitCode == null && child.signalCode == null) {
      const exited = new Promise(resolve => child!.once('exit', resolve))
      const t = setTimeout(() => { if (child!.pid != null) process.kill(child!.pid, 'SIGKILL') }, 5000)
      await exited
      clearTimeout(t)
    }
    await controller?.stop()
    rmSync(root, { recursive: true, force: true })
  }
}

if (!values['load-generator']) {
  main().catch(err => { console.error(err); process.exitCode = 1 })
}
