/**
 * `/route` benchmark: throughput and latency over HTTPS keep-alive against a
 * real controller holding 10k healthy workers, measured in the same run
 * against a bare fastify HTTPS handler (same certificate, same fastify, same
 * TLS and keep-alive settings) that returns a fixed JSON body of the same
 * size: the ceiling of this stack. Twice: with mutual TLS on both sides (the
 * bare server asks for and verifies client certificates as the controller
 * does; the controller authenticates every caller: its default) and without
 * (bare without `requestCert`, the controller with `--auth off`). Then the
 * CPU a new connection costs each server, with and without a client
 * certificate, and the in-process route decision time with 100k workers.
 *
 *   npm run bench:route
 *   npm run bench:route -- --workers 10000 --duration 10s --connections 32
 *   npm run bench:route -- --otlp        (tracing on: what it costs, against a run without)
 *   npm run bench:route -- --limits off  (no rate limit, no back-pressure: what they cost)
 *
 * Layout of a run: this process hosts both servers (only one is driven at a
 * time, so they never compete); the load generator is a child process (its
 * own event loop, on the other core), driving undici Pools. Runs alternate
 * bare, capmesh | capmesh, bare | ... so noise and drift on a shared machine
 * hurt both alike; the best and the median of each are reported, with the
 * CPU each side used per request and how much CPU other processes took
 * meanwhile. Everything started is stopped by id, everything listens on
 * 127.0.0.1 only, and the script exits by itself.
 *
 * Flags: `npm run bench:route -- --help` lists each with its default.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import { Client, Pool } from 'undici'
import { resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { ControllerCore } from '../../src/core/index.ts'
import type { Capability } from '../../src/registry/index.ts'
import type { RouteQuery } from '../../src/routing/index.ts'
import { DEFAULT_IDEMPOTENCY_MAX_KEYS } from '../../src/constants.ts'
import { NoHealthyWorkerError, NoWorkerError } from '../../src/errors.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { scriptArgs } from '../args.ts'
import { otlpSink } from '../otlp-sink.ts'

const HOST = '127.0.0.1'
const VERB = 'invoke'
const GENERATOR_FLAG = '--load-generator'

// Parsed before anything starts, in both modes (the generator child is started with GENERATOR_FLAG alone).
const { values } = scriptArgs({
  script: 'bench:route',
  summary: `/route over HTTPS keep-alive against a real controller holding --workers healthy workers, and in
the same run against a bare fastify HTTPS handler returning a same-sized fixed body (the ceiling
of this stack), alternating bare and capmesh --rounds times; the load generator is a child
process. Then the in-process route decision time with --router-workers workers.`,
  options: {
    workers: { type: 'string', value: 'N', default: '10000', description: 'workers registered in the controller' },
    capabilities: { type: 'string', value: 'N', default: '100', description: 'capabilities they are spread over' },
    duration: { type: 'string', value: 'D', default: '10s', description: 'measured window of each run' },
    warmup: { type: 'string', value: 'D', default: '2s', description: 'unmeasured lead-in of each run' },
    rounds: { type: 'string', value: 'N', default: '3', description: 'bare+capmesh pairs' },
    connections: { type: 'string', value: 'N', default: '32', description: 'keep-alive connections of the Pool' },
    pipelining: { type: 'string', value: 'N', default: '1', description: 'requests in flight per connection' },
    requests: { type: 'string', value: 'N', default: '5000000', description: 'cap on measured requests per run' },
    'router-workers': { type: 'string', value: 'N', default: '100000', description: 'workers for the in-process decision bench' },
    'decision-time': { type: 'string', value: 'D', default: '300ms', description: 'time budget per in-process scenario' },
    'skip-http': { type: 'boolean', default: false, description: 'skip the HTTP half' },
    'skip-decision': { type: 'boolean', default: false, description: 'skip the in-process decision half' },
    only: { type: 'string', value: 'bare|capmesh', description: 'drive only these targets, comma-separated (profiling one side with --cpu-prof); both when not set' },
    tls: { type: 'string', value: 'mutual,plain', default: 'mutual,plain', description: 'mutual: both servers ask for client certificates, the controller authenticates (its default); plain: neither does (the controller with --auth off)' },
    'new-connections': { type: 'string', value: 'N', default: '200', description: 'new connections (one request each, full handshake) per server and client kind, after the mutual-TLS rounds; 0: skip' },
    otlp: { type: 'boolean', default: false, description: 'tracing on: the controller exports a span per request (OTLP/HTTPS) to a sink in this process' },
    limits: { type: 'string', value: 'on|off', default: 'on', description: 'off: the controller without its rate limiter and back-pressure (--rate-limit 0 --max-event-loop-delay 0), to see what they cost' },
    'load-generator': { type: 'boolean', default: false, internal: true, description: 'run as the load generator child (takes its runs over IPC)' }
  }
})
const IS_GENERATOR = values['load-generator']

// ---------------------------------------------------------------- messages

/** What the parent asks the generator to do. */
interface RunRequest {
  type: 'run'
  origin: string
  path: string
  ca: string
  /** The client identity the generator presents (controllers ask who is calling). */
  cert: string
  key: string
  bodies: string[]
  connections: number
  pipelining: number
  warmupMs: number
  durationMs: number
  maxRequests: number
}

/** What one run measured (latencies in ms). */
interface RunResult {
  type: 'result'
  requests: number
  errors: number
  statuses: Record<string, number>
  seconds: number
  rps: number
  p50: number
  p90: number
  p99: number
  p999: number
  max: number
  /** Generator CPU over the measured window, as a fraction of one core. */
  generatorCpu: number
  firstBody: string
}

/** Opens `count` connections one after another, one request on each (a full TLS handshake: no session reuse). */
interface ConnectRequest {
  type: 'connect'
  origin: string
  path: string
  body: string
  ca: string
  /** Present this client certificate, or none. */
  cert?: string
  key?: string
  count: number
}

interface ConnectResult {
  type: 'connected'
  count: number
  statuses: Record<string, number>
  /** Generator CPU per connection (ms). */
  clientMs: number
  /** Wall time per connection (ms). */
  wallMs: number
}

type GeneratorMessage = { type: 'ready' } | { type: 'mark', phase: 'start' | 'end' } | RunResult | ConnectResult | { type: 'error', message: string }

// ----------------------------------------------------------- load generator

if (IS_GENERATOR) {
  process.on('message', (msg: RunRequest | ConnectRequest | { type: 'exit' }) => {
    if (msg.type === 'exit') {
      process.disconnect()
      return
    }
    const work: Promise<RunResult | ConnectResult> = msg.type === 'connect' ? connectMany(msg) : drive(msg)
    work.then(
      res => { process.send!(res) },
      (err: Error) => { process.send!({ type: 'error', message: err.stack ?? err.message }) }
    )
  })
  process.send!({ type: 'ready' })
}

/**
 * Closed-loop load: connections × pipelining concurrent callers, each sending
 * the next body as soon as its previous answer is read. Requests started
 * during the warm-up are not measured; the run ends at the time bound or once
 * `maxRequests` measured requests have completed, whichever comes first.
 */
async function drive (req: RunRequest): Promise<RunResult> {
  const pool = new Pool(req.origin, {
    connections: req.connections,
    pipelining: req.pipelining,
    connect: { ca: req.ca, cert: req.cert, key: req.key },
    keepAliveTimeout: 60_000
  })
  const headers = { 'content-type': 'application/json' }
  const latencies: number[] = []
  const statuses: Record<string, number> = {}
  let errors = 0
  let next = 0
  let firstBody = ''
  const t0 = performance.now()
  const measureFrom = t0 + req.warmupMs
  let measureTo = measureFrom + req.durationMs
  let stopped = false
  let cpu0 = process.cpuUsage()
  let cpu: NodeJS.CpuUsage | null = null

  // Marks let the parent sample the server's CPU over exactly the measured window.
  const startTimer = setTimeout(() => {
    cpu0 = process.cpuUsage()
    process.send!({ type: 'mark', phase: 'start' })
  }, req.warmupMs)
  const finish = (): void => {
    if (stopped) return
    stopped = true
    cpu = process.cpuUsage(cpu0)
    process.send!({ type: 'mark', phase: 'end' })
  }
  const stopTimer = setTimeout(finish, req.warmupMs + req.durationMs)

  const caller = async (): Promise<void> => {
    while (!stopped) {
      const body = req.bodies[next++ % req.bodies.length]
      const begin = performance.now()
      let status = 0
      try {
        const res = await pool.request({ origin: req.origin, path: req.path, method: 'POST', headers, body })
        status = res.statusCode
        const text = await res.body.text()
        if (firstBody === '') firstBody = text
      } catch (err) {
        statuses[(err as Error).name] = (statuses[(err as Error).name] ?? 0) + 1
        // A server that is gone fails fast: give up rather than spin until the time bound.
        if (++errors >= 1000) finish()
        continue
      }
      const end = performance.now()
      statuses[status] = (statuses[status] ?? 0) + 1
      if (status !== 200) errors++
      if (begin >= measureFrom && end <= measureTo && !stopped) {
        latencies.push(end - begin)
        if (latencies.length >= req.maxRequests) {
          measureTo = end
          finish()
        }
      }
    }
  }
  await Promise.all(Array.from({ length: req.connections * req.pipelining }, caller))
  clearTimeout(startTimer)
  clearTimeout(stopTimer)
  await pool.close()
  const used = cpu ?? process.cpuUsage(cpu0)

  const seconds = (measureTo - measureFrom) / 1000
  const sorted = Float64Array.from(latencies).sort()
  const q = (p: number): number => sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
  return {
    type: 'result',
    requests: sorted.length,
    errors,
    statuses,
    seconds,
    rps: sorted.length / seconds,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    p999: q(0.999),
    max: sorted.length === 0 ? NaN : sorted[sorted.length - 1],
    generatorCpu: (used.user + used.system) / 1000 / (measureTo - measureFrom),
    firstBody
  }
}

/** New connections one at a time: what a handshake costs the server (the parent samples its CPU between the marks). */
async function connectMany (req: ConnectRequest): Promise<ConnectResult> {
  const statuses: Record<string, number> = {}
  const headers = { 'content-type': 'application/json' }
  process.send!({ type: 'mark', phase: 'start' })
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < req.count; i++) {
    // A client of its own each time, and no TLS session cache: every connection a full handshake.
    const client = new Client(req.origin, { connect: { ca: req.ca, cert: req.cert, key: req.key, maxCachedSessions: 0 } })
    try {
      const res = await client.request({ path: req.path, method: 'POST', headers: { ...headers, connection: 'close' }, body: req.body })
      await res.body.text()
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
    } catch (err) {
      statuses[(err as Error).name] = (statuses[(err as Error).name] ?? 0) + 1
    } finally {
      await client.close()
    }
  }
  const wall = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  process.send!({ type: 'mark', phase: 'end' })
  return { type: 'connected', count: req.count, statuses, clientMs: (cpu.user + cpu.system) / 1000 / req.count, wallMs: wall / req.count }
}

// ------------------------------------------------------------------ options

interface Options {
  workers: number
  capabilities: number
  durationMs: number
  warmupMs: number
  rounds: number
  connections: number
  pipelining: number
  maxRequests: number
  routerWorkers: number
  decisionMs: number
  http: boolean
  decision: boolean
  /** Drive only these targets (profiling one side). */
  only: Array<Target['name']>
  /** Tracing on, exporting to an in-process OTLP sink. */
  otlp: boolean
  /** The controller's rate limiter and back-pressure (off: both disabled). */
  limits: boolean
  /** TLS modes measured, in this order. */
  tls: TlsMode[]
  /** New connections per server and client kind (0: not measured). */
  newConnections: number
}

/** mutual: client certificates asked for and verified on both sides, the controller authenticating; plain: neither. */
type TlsMode = 'mutual' | 'plain'

function options (): Options {
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer ≥ ${min}, got ${JSON.stringify(v)}`)
    return n
  }
  return {
    workers: int('workers', values.workers, 1),
    capabilities: int('capabilities', values.capabilities, 1),
    durationMs: Math.max(100, parseDuration(values.duration, '--duration')),
    warmupMs: parseDuration(values.warmup, '--warmup'),
    rounds: int('rounds', values.rounds, 1),
    connections: int('connections', values.connections, 1),
    pipelining: int('pipelining', values.pipelining, 1),
    maxRequests: int('requests', values.requests, 1),
    routerWorkers: int('router-workers', values['router-workers'], 1),
    decisionMs: Math.max(10, parseDuration(values['decision-time'], '--decision-time')),
    http: !values['skip-http'],
    decision: !values['skip-decision'],
    otlp: values.otlp,
    limits: (() => {
      if (values.limits !== 'on' && values.limits !== 'off') throw new Error(`--limits: expected on or off, got ${JSON.stringify(values.limits)}`)
      return values.limits === 'on'
    })(),
    tls: values.tls.split(',').map(v => {
      if (v !== 'mutual' && v !== 'plain') throw new Error(`--tls: expected mutual and/or plain, got ${JSON.stringify(v)}`)
      return v
    }),
    newConnections: int('new-connections', values['new-connections'], 0),
    only: values.only == null ? ['bare', 'capmesh'] : values.only.split(',').map(v => {
      if (v !== 'bare' && v !== 'capmesh') throw new Error(`--only: expected bare and/or capmesh, got ${JSON.stringify(v)}`)
      return v
    })
  }
}

// ----------------------------------------------------------------- workload

/** A deterministic PRNG (mulberry32), so every run sees the same registry. */
function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const capName = (i: number): string => `cap-${String(i).padStart(3, '0')}`

/**
 * Worker i's one capability: spread round-robin over `capabilities` names,
 * with the optional fields the filters look at: 10% GPU, 10% version 2.0.0,
 * a cost of 1–100 tokens and a p95 SLO of 20–500 ms.
 */
function capabilityOf (i: number, capabilities: number, r: () => number): Capability {
  return {
    name: capName(i % capabilities),
    verb: VERB,
    version: r() < 0.1 ? '2.0.0' : '1.0.0',
    input_schema: { type: 'object' },
    output_schema: { type: 'object' },
    requires_gpu: r() < 0.1,
    max_concurrency: 4,
    cost_tokens_per_invocation: 1 + Math.floor(r() * 100),
    slo: { latency_p95_ms: 20 + Math.floor(r() * 480) }
  }
}

function registerWorkers (core: ControllerCore, workers: number, capabilities: number, seed = 1): void {
  const r = rng(seed)
  for (let i = 0; i < workers; i++) {
    core.register({
      worker_id: `worker-${i}`,
      worker_url: `http://10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`,
      capabilities: [capabilityOf(i, capabilities, r)]
    })
  }
}

// ------------------------------------------------------------- HTTP phase

/** Machine-wide CPU times (ms, all cores): how much of the machine others used during a run. */
function machineTimes (): { busy: number, total: number } {
  let busy = 0
  let total = 0
  for (const c of cpus()) {
    const t = c.times
    busy += t.user + t.nice + t.sys + t.irq
    total += t.user + t.nice + t.sys + t.irq + t.idle
  }
  return { busy, total }
}

interface Target {
  name: 'bare' | 'capmesh'
  origin: string
}

class Generator {
  private readonly child: ChildProcess
  private waiting: ((m: GeneratorMessage) => void) | null = null
  private readonly inbox: GeneratorMessage[] = []
  onMark: (phase: 'start' | 'end') => void = () => {}
  readonly exited: Promise<void>

  constructor () {
    this.child = fork(import.meta.filename, [GENERATOR_FLAG], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.exited = new Promise(resolve => { this.child.once('exit', () => { resolve() }) })
    this.child.on('message', (m: GeneratorMessage) => {
      if (m.type === 'mark') this.onMark(m.phase)
      else this.deliver(m)
    })
    this.child.once('exit', (code, signal) => {
      this.deliver({ type: 'error', message: `load generator exited (code ${code}, signal ${signal})` })
    })
  }

  get pid (): number | undefined { return this.child.pid }

  private deliver (m: GeneratorMessage): void {
    if (this.waiting != null) this.waiting(m)
    else this.inbox.push(m)
  }

  private next (): Promise<GeneratorMessage> {
    const queued = this.inbox.shift()
    if (queued != null) return Promise.resolve(queued)
    return new Promise(resolve => {
      this.waiting = m => {
        this.waiting = null
        resolve(m)
      }
    })
  }

  async ready (): Promise<void> {
    const m = await this.next()
    if (m.type !== 'ready') throw new Error(`load generator did not start: ${JSON.stringify(m)}`)
  }

  async connect (req: ConnectRequest): Promise<ConnectResult> {
    const reply = this.next()
    this.child.send(req)
    const m = await reply
    if (m.type !== 'connected') throw new Error(`load generator failed: ${m.type === 'error' ? m.message : JSON.stringify(m)}`)
    return m
  }

  async run (req: RunRequest): Promise<RunResult> {
    const reply = this.next()
    this.child.send(req)
    const m = await reply
    if (m.type !== 'result') throw new Error(`load generator failed: ${m.type === 'error' ? m.message : JSON.stringify(m)}`)
    return m
  }

  /** Asks the child to leave; kills it by its pid if it has not within 5 s. */
  async stop (): Promise<void> {
    if (this.child.exitCode != null || this.child.signalCode != null) return
    if (this.child.connected) this.child.send({ type: 'exit' })
    const timer = setTimeout(() => { if (this.child.pid != null) process.kill(this.child.pid, 'SIGKILL') }, 5000)
    await this.exited
    clearTimeout(timer)
  }
}

interface Measured extends RunResult {
  tls: TlsMode
  target: Target['name']
  round: number
  /** Server process CPU over the measured window (fraction of one core). */
  serverCpu: number
  /** Server event-loop utilisation over the measured window (0–1). */
  serverElu: number
  /** Server CPU time per measured request (µs): what the stack costs, whatever the contention. */
  serverUsPerReq: number
  /** CPU used by everything else on the machine over the window (cores): other jobs competing. */
  othersCores: number
}

/** What a new connection costs a server (ms of its CPU), by client kind. */
interface ConnectionCost {
  target: Target['name']
  withCert: boolean
  serverMs: number
  clientMs: number
  wallMs: number
  statuses: Record<string, number>
}

async function httpPhase (opts: Options, root: string, cleanups: Array<() => Promise<void>>, mode: TlsMode): Promise<{ runs: Measured[], connections: ConnectionCost[] }> {
  const tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir, hosts: [HOST] })
  // Controllers ask who is calling: the load generator routes as a client (it presents its certificate to whoever asks).
  const caller = await issueIdentity({ dir: tlsDir, role: 'client', name: 'bench' })
  console.log(`\n--- ${mode === 'mutual' ? 'mutual TLS: both servers ask for a client certificate and verify it; the controller authenticates every request' : 'plain TLS: no client certificate asked for; the controller with --auth off'}`)

  // --otlp: tracing on (default sampler: every request), spans to a sink in this process, which only
  // counts them: what the controller pays is its spans, their batching and the OTLP/HTTPS export.
  const sink = opts.otlp ? await otlpSink({ cert: tls.cert, key: tls.key }) : null
  if (sink != null) {
    cleanups.push(async () => {
      await sink.close()
      console.log(`otlp sink: ${sink.stats.spans} spans in ${sink.stats.requests} exports (${(sink.stats.bytes / 1e6).toFixed(1)} MB of JSON)`)
    })
  }
  console.log(`tracing: ${sink != null ? `on, OTLP/HTTPS to ${sink.url}` : 'off'}`)

  // The controller as `capmesh controller` runs it, with every production
  // default (30 s / 60 s / 120 s health, its mesh timers, persistence);
  // not the local preset, whose fast digest and sync timers are for tests.
  const config = resolveControllerConfig({
    id: 'bench',
    host: HOST,
    httpsPort: 0,
    p2pPort: 0,
    dataDir: join(root, `bench-${mode}`),
    tlsDir,
    logLevel: 'silent',
    // One identity makes every request: far above the per-identity default (10k/s), the limiter still runs
    // (unless --limits off, which turns it and the back-pressure check off).
    rateLimit: opts.limits ? 1_000_000 : 0,
    ...(opts.limits ? {} : { maxEventLoopDelayMs: 0 }),
    auth: mode === 'mutual' ? 'required' : 'off',
    ...(sink != null ? { otlpEndpoint: sink.url } : {})
  })
  const controller = new Controller({ config })
  await controller.start()
  cleanups.push(async () => { await controller.stop() })
  const t0 = performance.now()
  registerWorkers(controller.core, opts.workers, opts.capabilities)
  const t1 = performance.now()
  // The registrations' deferred work (the mesh batches them for gossip) runs before any measurement.
  await new Promise(resolve => setImmediate(resolve))
  await new Promise(resolve => setTimeout(resolve, 100))
  const counts = controller.core.liveness.counts()
  console.log(`controller ${controller.url}: ${opts.workers} workers over ${opts.capabilities} capabilities registered in ` +
    `${(t1 - t0).toFixed(0)} ms, deferred work after them ${(performance.now() - t1 - 100).toFixed(0)} ms (healthy ${counts.healthy})`)

  // Every worker heartbeats once per interval, spread evenly, in-process: the
  // liveness work a real controller does, without HTTP clients of our own.
  const tickMs = 100
  const perTick = Math.ceil(opts.workers / (config.heartbeatIntervalMs / tickMs))
  let hb = 0
  const heartbeats = setInterval(() => {
    for (let i = 0; i < perTick; i++) controller.core.heartbeat({ worker_id: `worker-${hb++ % opts.workers}` })
  }, tickMs)
  cleanups.push(async () => { clearInterval(heartbeats) })

  const bodies = Array.from({ length: opts.capabilities }, (_, i) => JSON.stringify({ verb: VERB, capability: capName(i) }))
  const sample = JSON.stringify(controller.core.route({ verb: VERB, capability: capName(0) }))

  // The ceiling: same fastify, same certificate, same keep-alive, one route
  // answering a fixed, pre-serialised body the size of a capmesh answer.
  // With mutual TLS it asks for client certificates exactly as the controller does (api/server.ts).
  const bareTls = mode === 'mutual' ? { requestCert: true, rejectUnauthorized: false, ca: [tls.ca] } : {}
  const bare = Fastify({ https: { cert: tls.cert, key: tls.key, ...bareTls }, logger: false, keepAliveTimeout: 65_000, requestTimeout: 30_000 })
  bare.post('/route', async (_req, reply) => reply.type('application/json; charset=utf-8').send(sample))
  await bare.listen({ host: HOST, port: 0 })
  cleanups.push(async () => { await bare.close() })
  const addr = bare.server.address()
  if (addr == null || typeof addr === 'string') throw new Error('bare server has no address')
  const bareOrigin = `https://${HOST}:${addr.port}`
  const targets = ([
    { name: 'bare', origin: bareOrigin },
    { name: 'capmesh', origin: controller.url }
  ] satisfies Target[]).filter(t => opts.only.includes(t.name))
  console.log(`bare fastify ${bareOrigin}; answer ${Buffer.byteLength(sample)} bytes: ${sample}`)

  const gen = new Generator()
  cleanups.push(async () => { await gen.stop() })
  await gen.ready()
  console.log(`load generator: pid ${gen.pid}, ${opts.connections} connections × pipelining ${opts.pipelining}, ` +
    `${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured per run, ${opts.rounds} rounds\n`)

  const request = (t: Target, warmupMs: number, durationMs: number): RunRequest => ({
    type: 'run',
    origin: t.origin,
    path: '/route',
    ca: tls.ca,
    cert: caller.cert,
    key: caller.key,
    bodies,
    connections: opts.connections,
    pipelining: opts.pipelining,
    warmupMs,
    durationMs,
    maxRequests: opts.maxRequests
  })

  // Server-side CPU and event-loop use over exactly the generator's measured window.
  let cpu0 = process.cpuUsage()
  let elu0 = performance.eventLoopUtilization()
  let wall0 = performance.now()
  let serverCpu = 0
  let serverCpuMs = 0
  let serverElu = 0
  let machine0 = machineTimes()
  let machineBusyCores = 0
  gen.onMark = phase => {
    if (phase === 'start') {
      cpu0 = process.cpuUsage()
      elu0 = performance.eventLoopUtilization()
      wall0 = performance.now()
      machine0 = machineTimes()
    } else {
      const m = machineTimes()
      machineBusyCores = (m.busy - machine0.busy) / (m.total - machine0.total) * cpus().length
      const cpu = process.cpuUsage(cpu0)
      serverCpuMs = (cpu.user + cpu.system) / 1000
      serverCpu = serverCpuMs / (performance.now() - wall0)
      serverElu = performance.eventLoopUtilization(elu0).utilization
    }
  }

  // One short unmeasured pass over each, so both start JIT-warm.
  for (const t of targets) await gen.run(request(t, 0, Math.max(1000, opts.warmupMs)))

  const results: Measured[] = []
  for (let round = 1; round <= opts.rounds; round++) {
    // bare, capmesh | capmesh, bare | ...: a drift in the machine's load favours neither side.
    for (const t of round % 2 === 1 ? targets : [...targets].reverse()) {
      serverCpu = serverElu = serverCpuMs = machineBusyCores = NaN
      const res = await gen.run(request(t, opts.warmupMs, opts.durationMs))
      if (res.errors > 0) throw new Error(`${t.name}: ${res.errors} failed requests (${JSON.stringify(res.statuses)}); first body: ${res.firstBody}`)
      const othersCores = Math.max(0, machineBusyCores - serverCpu - res.generatorCpu)
      const m: Measured = { ...res, tls: mode, target: t.name, round, serverCpu, serverElu, serverUsPerReq: serverCpuMs * 1000 / res.requests, othersCores }
      results.push(m)
      console.log(`  round ${round} ${t.name.padEnd(7)} ${fmt(m.rps, 0).padStart(7)} req/s  p50 ${ms(m.p50)}  p99 ${ms(m.p99)}  ` +
        `server cpu ${pct(m.serverCpu)} (${fmt(m.serverUsPerReq, 1)} µs/req) elu ${pct(m.serverElu)}  generator cpu ${pct(m.generatorCpu)}  ` +
        `other processes ${fmt(m.othersCores, 2)} cores`)
    }
  }
  const healthy = controller.core.liveness.counts().healthy
  if (healthy !== opts.workers) throw new Error(`only ${healthy} of ${opts.workers} workers stayed healthy during the run`)

  // New connections: with mutual TLS, what a handshake costs each server with and without a client
  // certificate (the controller answers a caller without one 401: the handshake is what is measured).
  const connections: ConnectionCost[] = []
  if (mode === 'mutual' && opts.newConnections > 0) {
    console.log(`\nnew connections: ${opts.newConnections} per server and client kind, one request each, full handshakes (no session reuse), ${opts.rounds} rounds`)
    for (let round = 1; round <= opts.rounds; round++) {
      for (const t of targets) {
        for (const withCert of [false, true]) {
          const res = await gen.connect({
            type: 'connect', origin: t.origin, path: '/route', body: bodies[0], ca: tls.ca, count: opts.newConnections,
            ...(withCert ? { cert: caller.cert, key: caller.key } : {})
          })
          const c: ConnectionCost = { target: t.name, withCert, serverMs: serverCpuMs / res.count, clientMs: res.clientMs, wallMs: res.wallMs, statuses: res.statuses }
          connections.push(c)
          console.log(`  round ${round} ${t.name.padEnd(7)} ${withCert ? 'with a client certificate   ' : 'without a client certificate'}  server ${fmt(c.serverMs, 2)} ms CPU, ` +
            `client ${fmt(c.clientMs, 2)} ms CPU, ${fmt(c.wallMs, 2)} ms wall per connection  (answers ${JSON.stringify(c.statuses)})`)
        }
      }
    }
  }
  return { runs: results, connections }
}

// --------------------------------------------------------- decision phase

interface Scenario {
  name: string
  /** The next query of the timed loop. */
  next: () => RouteQuery
  /** Prepares the core before timing (e.g. report load). */
  setup?: (core: ControllerCore) => void
  /** The query is expected to find nobody (the 404/503 path). */
  fails?: boolean
}

interface Decision {
  distribution: string
  scenario: string
  calls: number
  meanUs: number
  p50Us: number
  p99Us: number
  maxUs: number
  /** Fraction of calls that found no worker. */
  empty: number
}

function scenarios (capabilities: number): Scenario[] {
  const caps = Array.from({ length: capabilities }, (_, i) => capName(i))
  const cycle = (queries: RouteQuery[]): () => RouteQuery => {
    let i = 0
    return () => queries[i++ % queries.length]
  }
  const each = (extra: Partial<RouteQuery>): () => RouteQuery => cycle(caps.map(c => ({ verb: VERB, capability: c, ...extra })))
  // Keys never seen before, one per call; `keysIssued` tells how full the idempotency cache is.
  let keysIssued = 0
  const freshKey = (): RouteQuery => ({ verb: VERB, capability: caps[keysIssued % caps.length], idempotency_key: `fresh-${keysIssued++}` })
  return [
    { name: 'plain (round-robin)', next: each({}) },
    { name: 'version 2.0.0 (10% match)', next: each({ version: '2.0.0' }) },
    { name: 'requires_gpu (10% match)', next: each({ requires_gpu: true }) },
    { name: 'slo p95 ≤ 100 ms (17%)', next: each({ slo_constraints: { latency_p95_ms: 100 } }) },
    { name: 'affinity (other controller)', next: each({ affinity: 'elsewhere' }) },
    {
      name: 'idempotency_key, repeated',
      next: cycle(Array.from({ length: 1000 }, (_, i) => ({ verb: VERB, capability: caps[i % caps.length], idempotency_key: `k-${i}` })))
    },
    { name: 'idempotency_key, new each call', next: freshKey },
    {
      // Past DEFAULT_IDEMPOTENCY_MAX_KEYS every new key evicts the oldest one.
      name: `idempotency_key, new, cache full`,
      next: freshKey,
      setup: core => { while (keysIssued + 1000 < DEFAULT_IDEMPOTENCY_MAX_KEYS) core.route(freshKey()) }
    },
    { name: 'budget_tokens 50', next: each({ budget_tokens: 50 }) },
    { name: 'strategy least_loaded', next: each({ strategy: 'least_loaded' }) },
    { name: 'no match (version 9.9.9)', next: each({ version: '9.9.9' }), fails: true },
    {
      name: 'plain, workers report load 0-4',
      next: each({}),
      setup: core => {
        const r = rng(7)
        for (const id of core.liveness.entries()) core.heartbeat({ worker_id: id[0], load: Math.floor(r() * 5) })
      }
    },
    { name: 'least_loaded, load 0-4', next: each({ strategy: 'least_loaded' }) }
  ]
}

/**
 * Times `core.route` for one scenario: a calibration pass picks how many
 * calls fit the time budget, then each call is timed on its own (p50/p99)
 * and the whole loop once (the mean, free of timer overhead).
 */
function timeScenario (core: ControllerCore, s: Scenario, budgetMs: number): Omit<Decision, 'distribution'> {
  let empty = 0
  // A small --router-workers can leave a capability with no worker matching a filter: counted, not fatal.
  const call = (): void => {
    const q = s.next()
    try {
      core.route(q)
    } catch (err) {
      if (!(err instanceof NoWorkerError || err instanceof NoHealthyWorkerError)) throw err
      empty++
      return
    }
    if (s.fails) throw new Error(`${s.name}: expected no worker`)
  }
  // Warm-up and calibration.
  let t = performance.now()
  let warm = 0
  while (warm < 10 || performance.now() - t < budgetMs / 10) {
    call()
    warm++
  }
  const perCall = (performance.now() - t) / warm
  // At least 30 timed calls even for the slow (O(k)) scenarios: their p99 is then their max.
  const calls = Math.max(30, Math.min(1_000_000, Math.floor(budgetMs / 2 / perCall)))

  empty = 0
  t = performance.now()
  for (let k = 0; k < calls; k++) call()
  const meanUs = (performance.now() - t) * 1000 / calls

  const each = new Float64Array(calls)
  for (let k = 0; k < calls; k++) {
    const a = performance.now()
    call()
    each[k] = performance.now() - a
  }
  each.sort()
  const q = (p: number): number => each[Math.min(calls - 1, Math.floor(p * calls))] * 1000
  return { scenario: s.name, calls, meanUs, p50Us: q(0.5), p99Us: q(0.99), maxUs: each[calls - 1] * 1000, empty: empty / (2 * calls) }
}

function decisionPhase (opts: Options): Decision[] {
  const out: Decision[] = []
  const dists: Array<{ name: string, capabilities: number }> = [
    { name: `100 caps × ${Math.ceil(opts.routerWorkers / 100)}`, capabilities: Math.min(100, opts.routerWorkers) },
    { name: `1 cap × ${opts.routerWorkers}`, capabilities: 1 }
  ]
  for (const d of dists) {
    const core = new ControllerCore({ controllerId: 'bench', heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 })
    const t0 = performance.now()
    registerWorkers(core, opts.routerWorkers, d.capabilities)
    console.log(`\n${opts.routerWorkers} workers, ${d.name}: ControllerCore built in ${(performance.now() - t0).toFixed(0)} ms; timing core.route()`)
    for (const s of scenarios(d.capabilities)) {
      s.setup?.(core)
      const r = timeScenario(core, s, opts.decisionMs)
      out.push({ distribution: d.name, ...r })
      const empty = r.empty > 0 && s.fails !== true ? `, ${pct(r.empty).trim()} found no worker` : ''
      console.log(`  ${r.scenario.padEnd(32)} mean ${us(r.meanUs)}  p50 ${us(r.p50Us)}  p99 ${us(r.p99Us)}  (${r.calls} calls${empty})`)
    }
  }
  return out
}

// ------------------------------------------------------------------ report

const fmt = (n: number, digits = 1): string => Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–'
const ms = (v: number): string => `${fmt(v, 2).padStart(6)} ms`
const us = (v: number): string => `${fmt(v, v < 10 ? 2 : 0).padStart(8)} µs`
const pct = (v: number): string => Number.isFinite(v) ? `${(v * 100).toFixed(0).padStart(3)}%` : '  –'

function table (header: string[], rows: string[][]): string {
  const width = header.map((h, c) => Math.max(h.length, ...rows.map(r => r[c].length)))
  const line = (cells: string[]): string => '| ' + cells.map((v, c) => c === 0 ? v.padEnd(width[c]) : v.padStart(width[c])).join(' | ') + ' |'
  const rule = '|' + width.map((w, c) => c === 0 ? ':' + '-'.repeat(w + 1) : '-'.repeat(w + 1) + ':').join('|') + '|'
  return [line(header), rule, ...rows.map(line)].join('\n')
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** The target of each mode: issue 16 (plain TLS) and issue 17 (mutual TLS, the controller authenticating). */
const TARGETS: Record<TlsMode, number> = { plain: 0.90, mutual: 0.85 }

function report (opts: Options, allHttp: Measured[], connections: ConnectionCost[], decisions: Decision[]): void {
  console.log('\n=== /route benchmark ===')
  console.log(`node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map(l => l.toFixed(2)).join(' ')}, ${new Date().toISOString()}`)
  for (const mode of opts.tls) {
    const http = allHttp.filter(r => r.tls === mode)
    if (http.length === 0 || opts.only.length !== 2) continue
    console.log(`\n${mode === 'mutual' ? 'Mutual TLS (bare: requestCert + the CA; capmesh: --auth required, the default)' : 'Plain TLS (bare: no requestCert; capmesh: --auth off)'}: ` +
      `HTTPS keep-alive, ${opts.workers} workers / ${opts.capabilities} capabilities, ${opts.connections} connections × pipelining ${opts.pipelining}, ` +
      `${opts.durationMs / 1000} s measured per run, ${opts.rounds} runs each (alternating), tracing ${opts.otlp ? 'ON (OTLP/HTTPS to an in-process sink)' : 'off'}, rate limit and back-pressure ${opts.limits ? 'on' : 'OFF'}\n`)
    const rows: string[][] = []
    const summary: Record<string, { best: number, median: number, p50: number, p99: number, usPerReq: number }> = {}
    for (const name of ['bare', 'capmesh'] as const) {
      const runs = http.filter(r => r.target === name)
      const rps = runs.map(r => r.rps)
      summary[name] = {
        best: Math.max(...rps),
        median: median(rps),
        p50: median(runs.map(r => r.p50)),
        p99: median(runs.map(r => r.p99)),
        usPerReq: median(runs.map(r => r.serverUsPerReq))
      }
      rows.push([
        name === 'bare' ? 'bare fastify (fixed JSON)' : 'capmesh POST /route',
        fmt(summary[name].best, 0),
        fmt(summary[name].median, 0),
        `${fmt(summary[name].p50, 2)} ms`,
        `${fmt(summary[name].p99, 2)} ms`,
        `${fmt(summary[name].usPerReq, 1)} µs`,
        pct(median(runs.map(r => r.serverCpu))).trim(),
        pct(median(runs.map(r => r.generatorCpu))).trim(),
        fmt(median(runs.map(r => r.othersCores)), 2)
      ])
    }
    console.log(table(['target', 'best req/s', 'median req/s', 'p50 (median)', 'p99 (median)', 'server cpu/req', 'server cpu', 'generator cpu', 'others (cores)'], rows))
    const ratioBest = summary.capmesh.best / summary.bare.best
    const ratioMedian = summary.capmesh.median / summary.bare.median
    const pairs = http.filter(r => r.target === 'capmesh').map(c => c.rps / http.find(b => b.target === 'bare' && b.round === c.round)!.rps)
    const cpuPairs = http.filter(r => r.target === 'capmesh').map(c => http.find(b => b.target === 'bare' && b.round === c.round)!.serverUsPerReq / c.serverUsPerReq)
    const cpuRatio = summary.bare.usPerReq / summary.capmesh.usPerReq
    // The verdict: the median of the rounds' ratios. Each round pairs two adjacent runs, so a change of the
    // machine's speed between rounds (a shared VM halves it at times) moves both sides of a ratio alike.
    const ratioRounds = median(pairs)
    const others = median(http.map(r => r.othersCores))
    const shared = others > 0.2
    const target = TARGETS[mode]
    console.log(`\n${mode}: capmesh / bare req/s: best ${(ratioBest * 100).toFixed(1)}%, median ${(ratioMedian * 100).toFixed(1)}%, ` +
      `per round ${pairs.map(p => `${(p * 100).toFixed(1)}%`).join(', ')} (median of the rounds ${(ratioRounds * 100).toFixed(1)}%)`)
    console.log(`${mode}: server CPU per request, bare / capmesh: median ${(cpuRatio * 100).toFixed(1)}%, per round ${cpuPairs.map(p => `${(p * 100).toFixed(1)}%`).join(', ')} ` +
      '(includes kernel send and wake-up costs, which grow when the generator is often asleep)')
    console.log(`${mode}: target capmesh ≥ ${(target * 100).toFixed(0)}% of bare req/s: ${ratioRounds >= target ? 'MET' : 'NOT MET'} on the median of the rounds (${(ratioRounds * 100).toFixed(1)}%)` +
      (shared ? ', UNRELIABLE this time (see below)' : ''))
    if (shared) {
      console.log(`warning: other processes used a median ${fmt(others, 2)} of ${cpus().length} cores during the runs; req/s then ` +
        'measures the CPU share and wake-up latency each run got more than the stack (the lighter bare server suffers most). ' +
        'Rerun on a quiet machine, or compare the server CPU per request.')
    }
  }
  if (connections.length > 0) {
    console.log(`\nNew connection, mutual-TLS servers (one request each, full handshake), median of ${opts.rounds} rounds × ${opts.newConnections} connections\n`)
    const rows: string[][] = []
    for (const target of ['bare', 'capmesh'] as const) {
      for (const withCert of [false, true]) {
        const cs = connections.filter(c => c.target === target && c.withCert === withCert)
        if (cs.length === 0) continue
        rows.push([
          `${target === 'bare' ? 'bare fastify' : 'capmesh'}, ${withCert ? 'with a client certificate' : 'without one'}${target === 'capmesh' && !withCert ? ' (401)' : ''}`,
          `${fmt(median(cs.map(c => c.serverMs)), 2)} ms`,
          `${fmt(median(cs.map(c => c.clientMs)), 2)} ms`,
          `${fmt(median(cs.map(c => c.wallMs)), 2)} ms`
        ])
      }
    }
    console.log(table(['server, client', 'server cpu / connection', 'client cpu / connection', 'wall / connection'], rows))
  }
  if (decisions.length > 0) {
    console.log(`\nIn-process route decision, ControllerCore.route() (target ≤ 20 µs with ${opts.routerWorkers} workers)\n`)
    const names = (ds: Decision[]): string => [...new Set(ds.map(d => d.scenario))].join('; ')
    const verdict = (d: Decision): string => d.p99Us <= 20 ? 'yes' : d.p50Us <= 20 ? 'p50 only' : 'NO'
    const rows = decisions.map(d => [d.scenario, d.distribution, us(d.meanUs).trim(), us(d.p50Us).trim(), us(d.p99Us).trim(), verdict(d)])
    console.log(table(['query', 'capabilities × workers', 'mean', 'p50', 'p99', '≤ 20 µs'], rows))
    const tail = decisions.filter(d => verdict(d) === 'p50 only')
    const misses = decisions.filter(d => verdict(d) === 'NO')
    console.log(`\n${decisions.length - tail.length - misses.length} of ${decisions.length} rows within 20 µs at p99` +
      (tail.length > 0 ? `; ${tail.length} only at p50 (${names(tail)})` : '') +
      (misses.length > 0 ? `; ${misses.length} NOT even at p50 (${names(misses)})` : ''))
  }
}

// -------------------------------------------------------------------- main

async function main (): Promise<void> {
  const opts = options()
  const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-'))
  const cleanups: Array<() => Promise<void>> = []
  let cleaning: Promise<void> | null = null
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      for (const fn of cleanups.splice(0).reverse()) await fn().catch(err => { console.error('cleanup:', err) })
      rmSync(root, { recursive: true, force: true })
    })()
    await cleaning
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`\n${sig}: stopping`)
    void cleanup().finally(() => { process.exit(130) })
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    const http: Measured[] = []
    const connections: ConnectionCost[] = []
    for (const mode of opts.http ? opts.tls : []) {
      const r = await httpPhase(opts, root, cleanups, mode)
      http.push(...r.runs)
      connections.push(...r.connections)
      // Each mode's controller, bare server and generator stop before the next mode starts.
      for (const fn of cleanups.splice(0).reverse()) await fn()
    }
    await cleanup()
    const decisions = opts.decision ? decisionPhase(opts) : []
    report(opts, http, connections, decisions)
  } finally {
    await cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

if (!IS_GENERATOR) {
  main().catch(err => {
    console.error(err)
    process.exitCode = 1
  })
}
