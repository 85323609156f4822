/**
 * The simulation harness: real controllers (child processes: real libp2p
 * over TCP, real HTTPS), real worker agents, faults on a schedule, and a
 * recorder that keeps asking every reachable controller for routes and
 * registry digests.
 *
 * Topology. Every worker has a *home*: the place of one controller. Its
 * HTTPS paths to every controller go through a FaultProxy per (home,
 * controller) pair, so a partition cuts the workers' paths exactly like the
 * controllers' gossip links (`block` over the sim-control IPC channel): a
 * worker on the wrong side cannot reach a controller on the other side.
 * The recorder is a client at each controller's place: it asks controllers
 * directly.
 *
 * Networks (`net`). `loopback` (the default): every controller on
 * 127.0.0.1 with its own ports; partitions refuse (the connection gater
 * closes and refuses libp2p links, the proxies destroy and refuse
 * sockets). `netns` (Linux, root): every controller and every workers'
 * place in a network namespace of its own with its own address, joined by
 * a bridge (sim/netns.ts); controllers bind their address at the same
 * ports, and partitions drop packets at the bridge, so links hang until
 * their own timeouts. The workers' proxies then lead to a relay inside
 * their place's namespace, the recorder's to one inside the controller's.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, type WriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import seedrandom from 'seedrandom'
import { WorkerAgent } from '../agent/index.ts'
import { spawnController, type ChildController } from '../launch/index.ts'
import { ConfigError, ControllerTimeoutError } from '../errors.ts'
import type { Capability } from '../wire/index.ts'
import { ensureTls } from '../tls/index.ts'
import { httpsClient, type HttpsClient } from '../utils/https-client.ts'
import { tokenIssuer, type TokenIssuer } from './tokens.ts'
import { NetnsLab } from './netns.ts'
import { FaultProxy } from './proxy.ts'
import type { Checkpoint, FaultRecord, RouteSample, SimRecord, StateSample, WorkerFate } from './record.ts'

export interface SimTiming {
  /** Worker heartbeat interval (ms). @default 1000 */
  heartbeatMs: number
  /** Controllers: unhealthy after (ms). @default 3000 */
  unhealthyMs: number
  /** Controllers: removed after (ms). @default 6000 */
  staleMs: number
}

export interface SimInit {
  scenario: string
  nodes: number
  workers: number
  seed: string
  /** Planned scenario length (ms); the scenario decides how to use it. */
  durationMs: number
  timing?: Partial<SimTiming>
  /** How often each controller is asked for a route (ms). @default 200 */
  probeIntervalMs?: number
  /** Longest wait for convergence at a checkpoint (ms). @default 20000 */
  convergeTimeoutMs?: number
  /** Progress lines (elapsed, faults, agreement). @default none */
  progress?: (line: string) => void
  /** Folder for each controller's log (`<node>.log`, JSON lines with the simulation time `sim_t`, kept across restarts). @default none */
  logDir?: string
  /** `loopback`: every controller on 127.0.0.1; `netns`: each in a network namespace with its own address (Linux, root). @default 'loopback' */
  net?: SimNet
  /** With `netns`: controllers find each other by address (`/ip4/10.77.0.1/tcp/9100`) or by name (`/dns4/n1.sim/tcp/9100`, through the hosts files of the namespaces, and advertise that name). @default 'address' */
  bootstrapBy?: 'address' | 'name'
}

export type SimNet = 'loopback' | 'netns'
/** Ports of every controller in `netns` mode (each has its own address). */
const NETNS_HTTPS_PORT = 9000
const NETNS_P2P_PORT = 9100

interface SimNode {
  index: number
  id: string
  dataDir: string
  child: ChildController | null
  /** proxies[j]: the path from home j to this controller. */
  proxies: FaultProxy[]
  /** netns: the recorder's path to this controller (a relay in its namespace); loopback: none, it asks directly. */
  observer: FaultProxy | null
}

interface SimWorker {
  id: string
  home: number
  capability: string
  agent: WorkerAgent
  fate: WorkerFate
}

/** Short enough that a run shows every transition in seconds, long enough for a loaded 2-core machine. */
export const DEFAULT_TIMING: SimTiming = { heartbeatMs: 1000, unhealthyMs: 3000, staleMs: 6000 }

export class Simulation {
  readonly init: SimInit
  readonly timing: SimTiming
  /** Seeded: the schedule and every random choice of a scenario come from here. */
  readonly rng: seedrandom.PRNG
  readonly nodes: SimNode[] = []
  private readonly workers = new Map<string, SimWorker>()
  private readonly root: string
  private ca = ''
  private client: HttpsClient | null = null
  private tokens: TokenIssuer | null = null
  private t0 = 0
  private groups: number[][] | null = null
  /** A one-way partition in force (netns): frames from `from` to `to` are dropped. */
  private oneWayCut: { from: number[], to: number[] } | null = null
  /** The namespaces, with `net: 'netns'`. */
  private lab: NetnsLab | null = null
  private readonly faults: FaultRecord[] = []
  private readonly routes: RouteSample[] = []
  private readonly states: StateSample[] = []
  private readonly checkpoints: Checkpoint[] = []
  private readonly rss: Array<{ t: number, node: string, rssMb: number }> = []
  private readonly logs = new Map<string, WriteStream>()
  private probeTimer: NodeJS.Timeout | null = null
  private progressTimer: NodeJS.Timeout | null = null
  /** Agents' counters at the last progress line (the line shows what happened since). */
  private lastAgents = { ok: 0, failed: 0, failovers: 0, reregistrations: 0, registrations: 0 }
  /** New HTTPS connections the harness (agents and recorder) opened since the last progress line: a reconnect storm shows here first. */
  private connects = 0
  private readonly onConnect = (): void => { this.connects++ }
  /** Heartbeat failures by reason since the last progress line. */
  private readonly heartbeatFailures = new Map<string, number>()
  /** Event-loop delay of the harness itself: if it is high, the agents (not the mesh) are starved. */
  private readonly lag = monitorEventLoopDelay({ resolution: 20 })
  private lagMaxMs = 0
  private nextWorker = 0
  private capabilities: string[] = []
  private probing = false
  private tick = 0
  /** How long starting the cluster and attaching the workers took (ms). */
  setupMs = 0

  constructor (init: SimInit) {
    this.init = init
    this.timing = { ...DEFAULT_TIMING, ...init.timing }
    this.rng = seedrandom(init.seed)
    this.root = mkdtempSync(join(tmpdir(), 'capmesh-sim-'))
  }

  /** Milliseconds since the simulation started. */
  now (): number { return performance.now() - this.t0 }

  get size (): number { return this.nodes.length }

  /** The network the run uses. */
  get net (): SimNet { return this.init.net ?? 'loopback' }

  /** Ids of the workers in a given fate. */
  workerIds (fate?: WorkerFate['status']): string[] {
    return [...this.workers.values()].filter(w => fate == null || w.fate.status === fate).map(w => w.id)
  }

  // ----------------------------------------------------------------- setup

  async start (): Promise<void> {
    this.t0 = performance.now()
    subscribe('undici:client:connected', this.onConnect)
    if (this.net === 'netns') this.lab = await NetnsLab.create({ controllers: this.init.nodes, socketDir: join(this.root, 's'), httpsPort: NETNS_HTTPS_PORT })
    // One server certificate for every controller, made before they start: netns, every address and name.
    const tls = await ensureTls({ dir: join(this.root, 'tls'), hosts: this.lab?.hosts ?? [] })
    this.ca = tls.ca
    // Controllers ask every caller who it is: the recorder calls as an operator, each agent with its own worker token.
    this.tokens = tokenIssuer(join(this.root, 'tls'))
    this.client = httpsClient({ ca: tls.ca, token: await this.tokens.sign('operator', 'harness'), timeoutMs: 2000, connections: 32 })
    for (let i = 0; i < this.init.nodes; i++) {
      this.nodes.push({ index: i, id: `n${i + 1}`, dataDir: join(this.root, `n${i + 1}`), child: null, proxies: [], observer: null })
    }
    if (this.lab != null) await this.startRelays(this.lab)
    // The first controller, then the rest joining through it (digests spread everyone's addresses).
    await this.spawn(this.nodes[0])
    await Promise.all(this.nodes.slice(1).map(async n => { await this.spawn(n) }))
    if (this.lab == null) {
      for (const n of this.nodes) {
        for (let j = 0; j < this.nodes.length; j++) n.proxies.push(await new FaultProxy(this.target(n)).start())
      }
    }
    await this.waitFor(async () => (await this.meshSizes()).every(s => s >= this.nodes.length - 1), 30_000, 'a full mesh')
    this.capabilities = Array.from({ length: Math.max(3, Math.min(20, Math.ceil(this.init.workers / 30))) }, (_, i) => `cap-${i}`)
    const setupTimer = this.init.progress == null ? null : setInterval(() => {
      this.init.progress?.(`setup ${((performance.now() - this.t0) / 1000).toFixed(1).padStart(5)}s  workers attached ${this.workers.size}/${this.init.workers}; ${this.agentActivity()}`)
    }, 2000)
    try {
      await this.addWorkers(this.init.workers)
    } finally {
      if (setupTimer != null) clearInterval(setupTimer)
    }
    // The scenario's clock starts now, with the cluster up and every worker attached.
    this.setupMs = performance.now() - this.t0
    this.t0 = performance.now()
    for (const w of this.workers.values()) w.fate.since = 0
    this.lag.enable()
    this.probeTimer = setInterval(() => { void this.probe() }, this.init.probeIntervalMs ?? 200)
    if (this.init.progress != null) this.progressTimer = setInterval(() => { void this.progressLine() }, 1000)
  }

  async stop (): Promise<void> {
    this.lag.disable()
    unsubscribe('undici:client:connected', this.onConnect)
    if (this.probeTimer != null) clearInterval(this.probeTimer)
    if (this.progressTimer != null) clearInterval(this.progressTimer)
    for (const w of this.workers.values()) w.agent.abandon()
    await Promise.all(this.nodes.map(async n => { await n.child?.kill() }))
    for (const n of this.nodes) for (const p of [...n.proxies, ...(n.observer != null ? [n.observer] : [])]) await p.stop()
    await this.client?.close()
    await Promise.all([...this.logs.values()].map(async log => { await new Promise(resolve => log.end(resolve)) }))
    await this.lab?.destroy()
    rmSync(this.root, { recursive: true, force: true })
  }

  private target (n: SimNode): { host: string, port: number } {
    const u = new URL(n.child!.url)
    return { host: '127.0.0.1', port: Number(u.port) }
  }

  /** Where the recorder asks controller `n`. */
  private urlOf (n: SimNode): string {
    return n.observer != null ? `https://127.0.0.1:${n.observer.port}` : n.child!.url
  }

  /**
   * netns: a relay in each controller's namespace for the recorder, and one
   * in each workers' place with a socket per controller, each behind a
   * loopback proxy of the harness (slow() still delays there).
   */
  private async startRelays (lab: NetnsLab): Promise<void> {
    const sock = (name: string): string => join(this.root, 's', `${name}.sock`)
    mkdirSync(join(this.root, 's'), { recursive: true })
    await Promise.all(this.nodes.map(async (n, i) => {
      await lab.relay(lab.controllerNs(i), [{ socket: sock(`o${i + 1}`), host: lab.controllerAddr(i), port: NETNS_HTTPS_PORT }])
      await lab.relay(lab.homeNs(i), this.nodes.map((_m, k) => ({ socket: sock(`h${i + 1}-n${k + 1}`), host: lab.controllerAddr(k), port: NETNS_HTTPS_PORT })))
    }))
    for (const [k, n] of this.nodes.entries()) {
      n.observer = await new FaultProxy({ path: sock(`o${k + 1}`) }).start()
      for (let j = 0; j < this.nodes.length; j++) n.proxies.push(await new FaultProxy({ path: sock(`h${j + 1}-n${k + 1}`) }).start())
    }
  }

  private async spawn (n: SimNode): Promise<void> {
    const lab = this.lab
    const byName = this.init.bootstrapBy === 'name'
    // netns: the first three controllers' fixed addresses (or names), known before they run; loopback: up to three running ones.
    const peers = lab != null
      ? this.nodes.filter(x => x !== n).slice(0, 3).map(x => byName ? `/dns4/${lab.controllerName(x.index)}/tcp/${NETNS_P2P_PORT}` : `/ip4/${lab.controllerAddr(x.index)}/tcp/${NETNS_P2P_PORT}`)
      : this.nodes.filter(x => x !== n && x.child != null).slice(0, 3).map(x => x.child!.p2p[0])
    const place = lab != null
      ? ['--host', lab.controllerAddr(n.index), '--https-port', String(NETNS_HTTPS_PORT), '--p2p-port', String(NETNS_P2P_PORT), ...(byName ? ['--advertise', lab.controllerName(n.index)] : [])]
      : ['--https-port', '0', '--p2p-port', '0']
    const t = this.timing
    const log = this.logFor(n)
    n.child = await spawnController({
      id: n.id,
      ipc: true,
      // Loading a controller takes seconds of CPU; on a loaded 2-core machine a restart took 15 s.
      timeoutMs: 60_000,
      netns: lab?.controllerNs(n.index),
      onLog: log == null ? undefined : line => { log.write(`${JSON.stringify(typeof line === 'string' ? { sim_t: Math.round(this.now()), line } : { sim_t: Math.round(this.now()), ...line })}\n`) },
      args: [
        '--id', n.id, ...place, '--data-dir', n.dataDir, '--tls-dir', join(this.root, 'tls'),
        '--heartbeat-interval', `${t.heartbeatMs}ms`, '--unhealthy-after', `${t.unhealthyMs}ms`, '--stale-after', `${t.staleMs}ms`,
        '--digest-interval', `${Math.min(250, Math.floor(t.unhealthyMs / 4))}ms`, '--sync-interval', '1s', '--reconnect-interval', '250ms',
        '--log-level', 'info', '--token-key', this.tokens!.keyFile,
        ...peers.flatMap(p => ['--bootstrap', p])
      ]
    })
  }

  private logFor (n: SimNode): WriteStream | null {
    if (this.init.logDir == null) return null
    let log = this.logs.get(n.id)
    if (log == null) {
      mkdirSync(this.init.logDir, { recursive: true })
      this.logs.set(n.id, log = createWriteStream(join(this.init.logDir, `${n.id}.log`)))
    }
    return log
  }

  private async meshSizes (): Promise<number[]> {
    return await Promise.all(this.up().map(async n => {
      const r = await this.client!.json('GET', `${this.urlOf(n)}/mesh`)
      return Number(r.body.connected_peers ?? 0)
    }))
  }

  private up (): SimNode[] { return this.nodes.filter(n => n.child != null) }

  // --------------------------------------------------------------- workers

  /** Starts `n` new worker agents, spread over homes and capabilities. */
  async addWorkers (n: number): Promise<string[]> {
    const ids: string[] = []
    const specs = Array.from({ length: n }, () => {
      const k = this.nextWorker++
      return { id: `w${k}`, home: k % this.nodes.length, capability: this.capabilities[k % this.capabilities.length] }
    })
    let next = 0
    const run = async (): Promise<void> => {
      while (next < specs.length) {
        const s = specs[next++]
        if (await this.startWorker(s.id, s.home, s.capability)) ids.push(s.id)
      }
    }
    await Promise.all(Array.from({ length: Math.min(16, specs.length) }, run))
    return ids
  }

  private async startWorker (id: string, home: number, capability: string): Promise<boolean> {
    const urls = this.nodes.map(n => `https://127.0.0.1:${n.proxies[home].port}`)
    // Closeness is the topology: home first, then the others in order (no probing, so the run is repeatable).
    const ranking = this.nodes.map((n, i) => ({ url: urls[i], controllerId: n.id, rttMs: i === home ? 1 : 10 + ((i - home + this.nodes.length) % this.nodes.length) }))
    const cap: Capability = { name: capability, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 8 }
    const agent = new WorkerAgent({
      workerId: id,
      workerUrl: `https://127.0.0.1:${20000 + (Number(id.slice(1)) % 40000)}`,
      capabilities: [cap],
      controllers: urls,
      client: this.client!,
      token: await this.tokens!.sign('worker', id),
      ranking,
      heartbeatIntervalMs: this.timing.heartbeatMs,
      attemptTimeoutMs: Math.max(1000, this.timing.heartbeatMs * 2),
      retries: 2,
      quarantineMs: this.timing.staleMs,
      reprobeIntervalMs: 0
    })
    agent.on('error', () => {})
    agent.on('heartbeat_failed', ({ error }) => {
      const cause = (error as Error & { cause?: { code?: string, name?: string } }).cause
      const why = error instanceof ControllerTimeoutError ? 'late' : (cause?.code ?? cause?.name ?? error.name)
      this.heartbeatFailures.set(why, (this.heartbeatFailures.get(why) ?? 0) + 1)
    })
    const w: SimWorker = { id, home, capability, agent, fate: { id, home, capability, status: 'alive', since: this.now() } }
    this.workers.set(id, w)
    try {
      await agent.start()
      return true
    } catch {
      // Could not attach anywhere (e.g. started during a partition with its side down): it keeps trying.
      return false
    }
  }

  // ----------------------------------------------------------------- faults

  private fault (name: string, args: unknown): FaultRecord {
    const f: FaultRecord = { t: this.now(), name, args }
    this.faults.push(f)
    this.init.progress?.(`${(f.t / 1000).toFixed(1).padStart(6)}s  fault ${name} ${JSON.stringify(args)}`)
    return f
  }

  /**
   * No traffic between the groups. loopback: gossip links cut, new dials
   * refused, workers' paths across cut. netns: packets between the groups'
   * hosts (controllers and the places of their workers) dropped.
   */
  async partition (groups: number[][]): Promise<void> {
    const groupOf = new Map<number, number>()
    groups.forEach((g, gi) => { for (const i of g) groupOf.set(i, gi) })
    for (const n of this.nodes) if (!groupOf.has(n.index)) throw new Error(`partition: node ${n.index} is in no group`)
    this.groups = groups
    this.fault('partition', groups.map(g => g.map(i => this.nodes[i].id)))
    await this.applyPartition()
  }

  private async applyPartition (): Promise<void> {
    const groups = this.groups
    const groupOf = new Map<number, number>()
    groups?.forEach((g, gi) => { for (const i of g) groupOf.set(i, gi) })
    const same = (a: number, b: number): boolean => groups == null || groupOf.get(a) === groupOf.get(b)
    if (this.lab != null) {
      const pairs: Array<[number, number]> = []
      for (const a of this.nodes) for (const b of this.nodes) if (!same(a.index, b.index)) pairs.push([a.index, b.index])
      if (this.oneWayCut != null) for (const a of this.oneWayCut.from) for (const b of this.oneWayCut.to) pairs.push([a, b])
      await this.lab.cut(pairs)
      return
    }
    for (const n of this.nodes) for (let j = 0; j < this.nodes.length; j++) n.proxies[j].setCut(!same(j, n.index))
    await Promise.all(this.up().map(async n => {
      const others = this.up().filter(o => !same(o.index, n.index)).map(o => o.child!.peerId)
      await n.child!.control({ cmd: 'unblock' })
      if (others.length > 0) await n.child!.control({ cmd: 'block', peers: others })
    }))
  }

  /** Restores every link (netns: also one-way partitions and links taken down). */
  async heal (): Promise<void> {
    this.groups = null
    this.oneWayCut = null
    this.fault('heal', null)
    await this.applyPartition()
    if (this.lab != null) for (const n of this.nodes) if (this.lab.linkDown(n.index)) await this.lab.link(n.index, true)
  }

  private needsNetns (fault: string): NetnsLab {
    if (this.lab == null) throw new ConfigError(`${fault} drops packets at the network layer: it needs --net netns`)
    return this.lab
  }

  /** netns: packets from the hosts of `from` to those of `to` are dropped; the other direction still flows. Until `heal()`. */
  async oneWay (from: number[], to: number[]): Promise<void> {
    this.needsNetns('oneWay')
    this.oneWayCut = { from, to }
    this.fault('one-way', { from: from.map(i => this.nodes[i].id), to: to.map(i => this.nodes[i].id) })
    await this.applyPartition()
  }

  /** netns: controller `node`'s link goes down: it and everyone else's packets to it vanish (its workers' too). Until `linkUp` or `heal`. */
  async linkDown (node: number): Promise<void> {
    const lab = this.needsNetns('linkDown')
    this.fault('link-down', this.nodes[node].id)
    await lab.link(node, false)
  }

  /** netns: controller `node`'s link is back. */
  async linkUp (node: number): Promise<void> {
    const lab = this.needsNetns('linkUp')
    this.fault('link-up', this.nodes[node].id)
    await lab.link(node, true)
  }

  /** netns: controller `node`'s link goes down and up `times` times, `periodMs` each way; ends up. */
  async flap (node: number, opts: { times: number, periodMs: number }): Promise<void> {
    this.needsNetns('flap')
    for (let k = 0; k < opts.times; k++) {
      await this.linkDown(node)
      await new Promise(resolve => setTimeout(resolve, opts.periodMs))
      await this.linkUp(node)
      await new Promise(resolve => setTimeout(resolve, opts.periodMs))
    }
  }

  /** Cuts one controller (and the workers homed there) off from the rest. */
  async isolate (node: number): Promise<void> {
    await this.partition([[node], this.nodes.map(n => n.index).filter(i => i !== node)])
  }

  /** kill -9 of one controller: no goodbye, no final snapshot. */
  async crash (node: number): Promise<void> {
    const n = this.nodes[node]
    if (n.child == null) return
    this.fault('crash', n.id)
    await n.child.kill()
    n.child = null
  }

  /** Restarts a crashed (or running) controller, on its data dir or on an empty one. */
  async restart (node: number, opts: { keepData: boolean }): Promise<void> {
    const n = this.nodes[node]
    this.fault('restart', { node: n.id, keepData: opts.keepData })
    await n.child?.kill()
    n.child = null
    if (!opts.keepData) rmSync(n.dataDir, { recursive: true, force: true })
    await this.spawn(n)
    // netns: the same address and ports again; loopback: new ports, and its gater knows no partition.
    if (this.lab == null) {
      for (const p of n.proxies) p.target = this.target(n)
      if (this.groups != null) await this.applyPartition()
    }
  }

  /** Adds latency to one controller's links: its workers' HTTPS paths and its gossip/sync handling. */
  async slow (node: number, ms: number): Promise<void> {
    const n = this.nodes[node]
    this.fault('slow', { node: n.id, ms })
    for (const p of n.proxies) p.delayMs = ms
    await n.child?.control({ cmd: 'faults', delayMs: ms, lossRate: 0 })
  }

  /** Drops each incoming gossip message with probability `rate` on every controller (anti-entropy still runs). */
  async loss (rate: number): Promise<void> {
    this.fault('loss', rate)
    await Promise.all(this.up().map(async n => { await n.child!.control({ cmd: 'faults', delayMs: 0, lossRate: rate }) }))
  }

  /** Clears slow and loss everywhere. */
  async clearNetworkFaults (): Promise<void> {
    this.fault('clear', null)
    for (const n of this.nodes) for (const p of n.proxies) p.delayMs = 0
    await Promise.all(this.up().map(async n => { await n.child!.control({ cmd: 'faults', delayMs: 0, lossRate: 0 }) }))
  }

  /** A worker dies without deregistering. */
  killWorker (id: string): void {
    const w = this.workers.get(id)
    if (w == null || w.fate.status !== 'alive') return
    this.fault('killWorker', id)
    w.agent.abandon()
    w.fate = { ...w.fate, status: 'killed', since: this.now() }
  }

  /** A worker says it is shutting down (listed, not routed). */
  async drainWorker (id: string): Promise<void> {
    const w = this.workers.get(id)
    if (w == null || w.fate.status !== 'alive') return
    this.fault('drainWorker', id)
    w.fate = { ...w.fate, status: 'draining', since: this.now() }
    await w.agent.drain()
  }

  /** `n` workers deregister and stop, `n` new ones register. */
  async churn (n: number): Promise<void> {
    this.fault('churn', n)
    const alive = this.workerIds('alive')
    const leaving = this.pick(alive, n)
    await Promise.all(leaving.map(async id => {
      const w = this.workers.get(id)!
      w.fate = { ...w.fate, status: 'stopped', since: this.now() }
      await w.agent.stop()
    }))
    await this.addWorkers(n)
  }

  /** `k` distinct items of `xs`, chosen by the seeded generator. */
  pick<T> (xs: T[], k: number): T[] {
    const copy = [...xs]
    const out: T[] = []
    while (out.length < k && copy.length > 0) out.push(copy.splice(Math.floor(this.rng() * copy.length), 1)[0])
    return out
  }

  /** Sleeps until `ms` after the start. */
  async at (ms: number): Promise<void> {
    const wait = ms - this.now()
    if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
  }

  // -------------------------------------------------------------- checking

  /**
   * Waits until every running controller agrees (same registry hash, same
   * healthy count, equal to the workers alive) and records a checkpoint with
   * each controller's view of the workers and each agent's attachment, for
   * the checker.
   *
   * The views are read one controller after another while agents may still
   * be failing over, so they count as a snapshot only if no registry hash
   * and no attachment changed while they were read; otherwise they are read
   * again. (Without that, a re-attachment landing between two reads showed
   * as one worker with two owners.) Agreement also needs every live agent
   * attached to a running controller the mesh can reach: right after a
   * crash the others still list its workers as healthy, and that is not
   * agreement yet.
   *
   * The convergence time counts from the end of the last fault (a heal, a
   * restart, a clear, a link back up), or with `sinceLastFault` from the
   * last fault of any kind: for a checkpoint taken right after a crash or a
   * link going down, how long the workers took to fail over and the mesh to
   * agree.
   */
  async checkpoint (label: string, opts: { sinceLastFault?: boolean } = {}): Promise<Checkpoint> {
    const start = this.now()
    const ends = opts.sinceLastFault === true ? null : new Set(['heal', 'restart', 'clear', 'link-up'])
    const since = [...this.faults].reverse().find(f => ends == null || ends.has(f.name))?.t ?? start
    const expected = this.workerIds('alive').length
    let converged = false
    let lastSeen = ''
    let views: Checkpoint['views'] | null = null
    let attachments = this.attachments()
    /** When the controllers were last seen agreeing: the convergence time (the views that follow take a while). */
    let agreedAt = 0
    const deadline = performance.now() + (this.init.convergeTimeoutMs ?? 20_000)
    while (performance.now() < deadline) {
      let raced = false
      try {
        const before = await this.hashes()
        const healthy = before.map(h => h.healthy)
        lastSeen = `hashes ${new Set(before.map(h => h.hash)).size}, healthy ${healthy.join('/')} (expected ${expected})`
        const serving = new Set(this.reachable().map(n => n.id))
        const stranded = Object.values(this.attachments()).filter(a => a.controller == null || !serving.has(a.controller)).length
        if (stranded > 0) lastSeen += `, ${stranded} workers not attached to a reachable controller`
        if (new Set(before.map(h => h.hash)).size === 1 && healthy.every(x => x === expected) && stranded === 0) {
          agreedAt = this.now()
          attachments = this.attachments()
          views = await this.views()
          const after = await this.hashes()
          if (after.length === before.length && after.every((h, i) => h.hash === before[i].hash) && JSON.stringify(this.attachments()) === JSON.stringify(attachments)) {
            converged = true
            break
          }
          raced = true
          lastSeen = 'agreed, but a registry or an attachment changed while the views were read'
        }
      } catch (err) {
        lastSeen = (err as Error).message
      }
      // Reading every view is the costly part (1,000 workers: ~3 MB of JSON): not again at once.
      await new Promise(resolve => setTimeout(resolve, raced ? 500 : 100))
    }
    const at = converged ? agreedAt : this.now()
    if (!converged) {
      attachments = this.attachments()
      views = await this.views()
    }
    const cp: Checkpoint = { label, t: at, startedAt: start, faultEndedAt: since, converged, convergenceMs: converged ? at - since : null, detail: lastSeen, views: views ?? {}, attachments, fates: [...this.workers.values()].map(w => ({ ...w.fate })) }
    this.checkpoints.push(cp)
    this.init.progress?.(`${(at / 1000).toFixed(1).padStart(6)}s  checkpoint ${label}: ${converged ? `converged ${(cp.convergenceMs! / 1000).toFixed(2)} s after the last fault ended` : `NOT converged (${lastSeen})`}`)
    return cp
  }

  /** Running controllers the mesh can reach (netns: not those whose link is down): the ones a checkpoint compares. */
  private reachable (): SimNode[] { return this.up().filter(n => this.lab?.linkDown(n.index) !== true) }

  /** Each reachable controller's registry hash and healthy count, in `up()` order. */
  private async hashes (): Promise<Array<{ hash: unknown, healthy: number }>> {
    return await Promise.all(this.reachable().map(async n => {
      const h = (await this.client!.json('GET', `${this.urlOf(n)}/health`)).body
      return { hash: h.mesh?.registry_hash, healthy: Number(h.workers?.healthy ?? -1) }
    }))
  }

  /** Each running controller's list of workers (an empty list where it did not answer). */
  private async views (): Promise<Checkpoint['views']> {
    const views: Checkpoint['views'] = {}
    for (const n of this.reachable()) {
      const r = await this.client!.json('GET', `${this.urlOf(n)}/workers?limit=10000`).catch(() => null)
      views[n.id] = (r?.body?.workers ?? []).map((w: any) => ({ worker_id: w.worker_id, state: w.state, controller_id: w.controller_id, incarnation: w.incarnation }))
    }
    return views
  }

  /** Where each live (or draining) worker's agent says it is attached. */
  private attachments (): Checkpoint['attachments'] {
    const attachments: Checkpoint['attachments'] = {}
    for (const w of this.workers.values()) {
      if (w.fate.status === 'alive' || w.fate.status === 'draining') attachments[w.id] = { controller: w.agent.controller?.id ?? null, incarnation: w.agent.incarnation }
    }
    return attachments
  }

  /** Everything recorded, for the checker and the report. */
  record (): SimRecord {
    return {
      scenario: this.init.scenario,
      seed: this.init.seed,
      net: this.net,
      nodes: this.nodes.map(n => n.id),
      workers: this.init.workers,
      timing: this.timing,
      durationMs: this.now(),
      setupMs: this.setupMs,
      harnessLagMaxMs: Math.max(this.lagMaxMs, Math.round(this.lag.max / 1e6)),
      faults: this.faults,
      routes: this.routes,
      states: this.states,
      checkpoints: this.checkpoints,
      fates: [...this.workers.values()].map(w => ({ ...w.fate })),
      rss: this.rss
    }
  }

  // -------------------------------------------------------------- recorder

  private async probe (): Promise<void> {
    if (this.probing) return
    this.probing = true
    this.tick++
    try {
      await Promise.all(this.up().map(async n => {
        // A crash may clear n.child while this probe is in flight: keep our own reference.
        const child = n.child!
        const url = this.urlOf(n)
        const capability = this.capabilities[Math.floor(Math.random() * this.capabilities.length)]
        const t = this.now()
        try {
          const r = await this.client!.json('POST', `${url}/route`, { verb: 'invoke', capability }, { timeoutMs: 1000 })
          this.routes.push({ t, node: n.id, capability, status: r.status, worker: r.status === 200 ? r.body.worker_id : null, owner: r.status === 200 ? r.body.controller_id : null })
        } catch {
          this.routes.push({ t, node: n.id, capability, status: 0, worker: null, owner: null })
        }
        if (this.tick % 3 === 0) {
          try {
            const h = (await this.client!.json('GET', `${url}/health`, undefined, { timeoutMs: 1000 })).body
            this.states.push({ t: this.now(), node: n.id, hash: String(h.mesh?.registry_hash ?? ''), healthy: Number(h.workers?.healthy ?? 0), total: Number(h.workers?.total ?? 0), selfPreservation: h.status === 'self_preservation' })
          } catch {}
          const rss = readRss(child.pid)
          if (rss != null) this.rss.push({ t: this.now(), node: n.id, rssMb: rss })
        }
      }))
    } finally {
      this.probing = false
    }
  }

  private async progressLine (): Promise<void> {
    const recent = this.states.filter(s => s.t > this.now() - 1500)
    const latest = new Map<string, StateSample>()
    for (const s of recent) latest.set(s.node, s)
    const hashes = new Set([...latest.values()].map(s => s.hash))
    const routes = this.routes.filter(r => r.t > this.now() - 1000)
    const ok = routes.filter(r => r.status === 200).length
    const cut = this.oneWayCut != null ? `, one-way ${this.oneWayCut.from.map(i => this.nodes[i].id).join('+')} -> ${this.oneWayCut.to.map(i => this.nodes[i].id).join('+')}` : ''
    const links = this.nodes.filter(n => this.lab?.linkDown(n.index) === true).map(n => n.id)
    const faults = (this.groups != null ? `partition ${this.groups.map(g => g.map(i => this.nodes[i].id).join('+')).join(' | ')}` : 'whole') + cut + (links.length > 0 ? `, link down ${links.join(',')}` : '')
    const down = this.nodes.filter(n => n.child == null).map(n => n.id)
    const lagMs = Math.round(this.lag.max / 1e6)
    this.lagMaxMs = Math.max(this.lagMaxMs, lagMs)
    this.lag.reset()
    this.init.progress?.(`${(this.now() / 1000).toFixed(1).padStart(6)}s  ${faults}${down.length > 0 ? `, down ${down.join(',')}` : ''}; agreement: ${hashes.size <= 1 ? 'all agree' : `${hashes.size} views`}; routes ok ${ok}/${routes.length}; workers alive ${this.workerIds('alive').length}; ${this.agentActivity()}${lagMs > 250 ? `; harness event-loop lag ${lagMs} ms` : ''}`)
  }

  /** The agents' heartbeats, failovers and re-registrations since the last call: shows a struggling harness or mesh at once. */
  private agentActivity (): string {
    const now = { ok: 0, failed: 0, failovers: 0, reregistrations: 0, registrations: 0 }
    let detached = 0
    for (const w of this.workers.values()) {
      const c = w.agent.counters
      now.registrations += c.registrations.ok + c.registrations.failed
      now.ok += c.heartbeats.ok
      now.failed += c.heartbeats.failed
      now.failovers += c.failovers
      now.reregistrations += c.reregistrations
      if (w.agent.state === 'detached') detached++
    }
    const d = (k: keyof typeof now): number => now[k] - this.lastAgents[k]
    const why = [...this.heartbeatFailures].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')
    this.heartbeatFailures.clear()
    const line = `heartbeats ok ${d('ok')} failed ${d('failed')}${why.length > 0 ? ` (${why})` : ''}, failovers ${d('failovers')}, re-registrations ${d('reregistrations')}, registration attempts ${d('registrations')}, new connections ${this.connects}${detached > 0 ? `, detached ${detached}` : ''}`
    this.lastAgents = now
    this.connects = 0
    return line
  }

  private async waitFor (check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const end = performance.now() + timeoutMs
    while (performance.now() < end) {
      try { if (await check()) return } catch {}
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    throw new Error(`simulation: timed out waiting for ${what}`)
  }
}

function readRss (pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m != null ? Math.round(Number(m[1]) / 1024) : null
  } catch {
    return null
  }
}
