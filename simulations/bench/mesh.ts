/**
 * `npm run bench:mesh` — the mesh benchmark of issue 3, with N in-process
 * controllers on loopback (real TCP libp2p with noise and yamux, gossipsub,
 * the anti-entropy protocol, real HTTPS for the registrations):
 *
 * 1. registration → routable everywhere: workers are registered one at a
 *    time over HTTPS at one controller; for each, the time from sending the
 *    request until EVERY controller's router returns that worker, healthy,
 *    for its own capability (observed in-process on each registry's `change`
 *    event, re-checked every millisecond if the router is not there yet).
 *    p50 / p99 / max over the registrations.
 * 2. heal → converged: the controllers are split into two halves that block
 *    each other (the connection gater, both directions); the workers are
 *    registered in-process, half on each side, spread over that side's
 *    controllers; once each side agrees internally and `--settle` has
 *    passed, every block is lifted and the time until every controller
 *    holds the same registry hash is measured.
 *
 * Before the heal, one controller alone applying the other half's delta is
 * timed (median of 3 fresh replicas): the same run's baseline, since the
 * machine's speed varies. Controller RSS and CPU are those of this one process, which hosts all N
 * controllers (and the bench's own bookkeeping): RSS per controller is the
 * total divided by N, CPU is process.cpuUsage() over each phase.
 *
 * Config: the `local` preset's mesh timers (anti-entropy every 500 ms,
 * re-dial every 250 ms) with production-like liveness (digests every 1 s,
 * unhealthy after 60 s) so that nobody heartbeats and no worker expires.
 *
 *   npm run bench:mesh
 *   npm run bench:mesh -- --sizes 8,32 --registrations 200 --heal-workers 10000
 *   npm run bench:mesh -- --seals both    each size without seals, then with (what signing costs)
 *
 *   npm run bench:mesh -- --help    every flag, what it does, its default
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { localPreset, resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { ControllerCore } from '../../src/core/index.ts'
import { networkFaults, type NetworkFaults, type SyncResult } from '../../src/gossip/index.ts'
import { Origin, type Capability } from '../../src/registry/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'

const { values } = scriptArgs({
  script: 'bench:mesh',
  summary: `N controllers in this one process, on loopback (real TCP libp2p, gossipsub, anti-entropy, HTTPS):
1. registration → routable everywhere: p50 / p99 / max from POST /register at one controller until
   every controller's router returns the worker.
2. heal → converged: the controllers split in two halves, --heal-workers workers registered across
   the split, then the time from lifting every block until all hold the same registry hash.`,
  options: {
    sizes: { type: 'string', value: 'N,N', default: '8,32', description: 'mesh sizes to run' },
    registrations: { type: 'string', value: 'N', default: '200', description: 'measured registrations per size' },
    gap: { type: 'string', value: 'D', default: '20ms', description: 'pause between two registrations' },
    'heal-workers': { type: 'string', value: 'N', default: '10000', description: 'workers registered across the partition' },
    bootstrap: { type: 'string', value: 'N', default: '2', description: 'controllers each new one bootstraps from' },
    'mesh-timeout': { type: 'string', value: 'D', default: '60s', description: 'how long to wait for a full mesh; measured anyway' },
    'profile-heal': { type: 'string', value: 'FILE', description: 'write a CPU profile of the heal phase to FILE-n<size>.cpuprofile (Chrome DevTools; -sealed / -unsealed before .cpuprofile with --seals both)' },
    'profile-reg': { type: 'string', value: 'FILE', description: 'the same for the registration phase' },
    settle: { type: 'string', value: 'D', default: '6s', description: 'pause between the last partitioned registration and the heal' },
    seals: { type: 'string', value: 'on|off|both', default: 'on', description: 'owner-signed segments: on (as deployed), off (no seals written or checked), or both: each size off then on, in this run' },
    verbose: { type: 'boolean', default: false, description: 'print every sync exchange of the heal as it completes' }
  }
})
const SIZES = values.sizes.split(',').map(Number)
const REGISTRATIONS = Number(values.registrations)
const GAP_MS = parseDuration(values.gap, '--gap')
const HEAL_WORKERS = Number(values['heal-workers'])
const BOOTSTRAP = Number(values.bootstrap)
const MESH_TIMEOUT_MS = parseDuration(values['mesh-timeout'], '--mesh-timeout')
const SETTLE_MS = parseDuration(values.settle, '--settle')
if (!['on', 'off', 'both'].includes(values.seals)) throw new Error(`--seals: expected on, off or both, got ${values.seals}`)
const SEAL_MODES: boolean[] = values.seals === 'both' ? [false, true] : [values.seals === 'on']

// Nothing heartbeats here: platform timeouts longer than any run keep every worker healthy at its
// owner throughout, as heartbeating workers are. With 60 s, at N = 32 (where registering the heal's
// workers takes about a minute) the first of them went unhealthy at their owners during the heal:
// every controller published liveness changes every second (~400 messages a second through the
// process) and re-routed them, on top of the heal being measured.
const MESH_CONFIG = {
  heartbeatIntervalMs: 60_000,
  unhealthyAfterMs: 600_000,
  staleAfterMs: 1_200_000,
  digestIntervalMs: 1_000,
  syncIntervalMs: 500,
  reconnectIntervalMs: 250
}

const cap = (name: string): Capability => ({
  name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4
})

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

function pct (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

const ms = (x: number): string => `${x.toFixed(1)} ms`
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`

async function until (what: string, check: () => boolean, timeoutMs: number, everyMs = 5): Promise<number> {
  const t0 = performance.now()
  while (!check()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
  return performance.now() - t0
}

/** CPU (cores) and wall time of a phase. */
function meter (): () => { wallMs: number, cores: number } {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  return () => {
    const c = process.cpuUsage(c0)
    const wallMs = performance.now() - t0
    return { wallMs, cores: (c.user + c.system) / 1000 / wallMs }
  }
}

function routesHealthy (c: Controller, id: string): boolean {
  try {
    const r = c.core.router.route({ verb: 'invoke', capability: `cap-${id}` })
    return r.worker_id === id && r.state === 'healthy'
  } catch {
    return false
  }
}

/** A V8 CPU profiler on this process when `file` is given (for Chrome DevTools or `node --cpu-prof` tools). */
async function startProfiler (file: string | undefined): Promise<Session | null> {
  if (file == null) return null
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 1000 })
  await session.post('Profiler.start')
  return session
}

async function stopProfiler (session: Session | null, file: string | undefined, n: number, seals: boolean): Promise<void> {
  if (session == null || file == null) return
  const { profile } = await session.post('Profiler.stop')
  // With --seals both, one profile per mode.
  writeFileSync(`${file}-n${n}${SEAL_MODES.length > 1 ? (seals ? '-sealed' : '-unsealed') : ''}.cpuprofile`, JSON.stringify(profile))
  session.disconnect()
}

interface SizeResult {
  n: number
  seals: boolean
  meshMs: number
  /** CPU of the whole process while the mesh sits idle (cores). */
  idleCores: number
  reg: { p50: number, p99: number, max: number, ackP50: number, afterAckP99: number, count: number, timeouts: number, cores: number }
  heal: { workers: number, registerMs: number, firstLinkMs: number, convergedMs: number, cores: number, perControllerP50: number, applyBaselineMs: number }
  rss: { afterStart: number, afterReg: number, afterHeal: number }
}

/** Each controller's simulated network faults (the partition of the heal). */
const faults = new Map<Controller, NetworkFaults>()

async function runSize (n: number, seals: boolean, root: string, tlsDir: string, client: HttpsClient): Promise<SizeResult> {
  const cs: Controller[] = []
  const tMesh = performance.now()
  for (let i = 0; i < n; i++) {
    const boot = i === 0 ? [] : [...new Set([0, ...Array.from({ length: BOOTSTRAP - 1 }, (_v, k) => i - 1 - k)].filter(j => j >= 0 && j < i))].map(j => cs[j].p2p.multiaddrs[0])
    const config = resolveControllerConfig(localPreset({ id: `n${n}-c${i}`, dataDir: join(root, `n${n}-c${i}-${seals ? 'sealed' : 'unsealed'}`), tlsDir, bootstrap: boot, ...MESH_CONFIG }))
    const f = networkFaults()
    const c = new Controller({ config, faults: f, seals: seals ? undefined : false })
    faults.set(c, f)
    await c.start()
    cs.push(c)
  }
  const peerIds = cs.map(c => c.p2p.peerId)
  const fullMesh = (): boolean => cs.every(c => {
    const connected = new Set(c.p2p.connectedPeers())
    return peerIds.every(p => p === c.p2p.peerId || connected.has(p))
  })
  let meshMs = NaN
  try {
    await until(`a full mesh of ${n}`, fullMesh, MESH_TIMEOUT_MS, 50)
    meshMs = performance.now() - tMesh
    console.log(`  full mesh of ${n} controllers (${n * (n - 1) / 2} links) after ${(meshMs / 1000).toFixed(1)} s`)
  } catch {
    // Measure what the mesh does anyway, and say how far it got.
    const links = cs.map(c => c.p2p.connectedPeers().filter(p => peerIds.includes(p)).length)
    const heard = cs.map(c => [...c.core.membership.members()].filter(([id, o]) => id !== c.config.id && o.status === 'alive').length)
    console.log(`  NO full mesh after ${MESH_TIMEOUT_MS / 1000} s: links per controller min ${Math.min(...links)} / avg ${(links.reduce((a, b) => a + b, 0) / n).toFixed(1)} of ${n - 1}; other controllers heard from: min ${Math.min(...heard)} / avg ${(heard.reduce((a, b) => a + b, 0) / n).toFixed(1)}`)
  }
  // Every new link starts an exchange (496 at N = 32, on one thread here): wait until they are done.
  const tBacklog = performance.now()
  await until('the exchanges of the new links to be done', () => cs.every(c => c.p2p.backlog === 0), 120_000, 100).catch(() => {})
  console.log(`  exchanges of the new links done after ${((performance.now() - tBacklog) / 1000).toFixed(1)} s more`)
  const rssAfterStart = process.memoryUsage().rss
  // The mesh at rest (digests, anti-entropy, sweeps): what every later figure runs on top of.
  const idle = meter()
  await sleep(3_000)
  const idleCores = idle().cores
  console.log(`  idle: ${idleCores.toFixed(2)} cores for the ${n} controllers at rest`)

  // ---- 1. registration → routable at every controller
  interface Pending { t0: number, left: Set<number>, resolve: (t: number) => void }
  const waiting = new Map<string, Pending>()
  const retry = new Set<string>()
  const check = (i: number, id: string): void => {
    const w = waiting.get(id)
    if (w == null || !w.left.has(i)) return
    if (!routesHealthy(cs[i], id)) {
      retry.add(`${i}\u0000${id}`)
      return
    }
    w.left.delete(i)
    if (w.left.size === 0) {
      waiting.delete(id)
      w.resolve(performance.now())
    }
  }
  const listeners = cs.map((c, i) => {
    const fn = (changes: Array<{ workerId: string, after?: unknown }>): void => {
      for (const ch of changes) if (ch.after != null && waiting.has(ch.workerId)) check(i, ch.workerId)
    }
    c.core.registry.on('change', fn)
    return fn
  })
  const retryTimer = setInterval(() => {
    for (const key of [...retry]) {
      retry.delete(key)
      const [i, id] = key.split('\u0000')
      check(Number(i), id)
    }
  }, 1)

  const register = async (id: string): Promise<{ total: number, ack: number } | null> => {
    const t0 = performance.now()
    const done = new Promise<number>(resolve => { waiting.set(id, { t0, left: new Set(cs.map((_c, i) => i)), resolve }) })
    const res = await client.json('POST', `${cs[0].url}/register`, { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap(`cap-${id}`)] })
    const tAck = performance.now()
    if (res.status !== 200) throw new Error(`register ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
    const timeout = sleep(10_000).then(() => -1)
    const t = await Promise.race([done, timeout])
    if (t < 0) {
      waiting.delete(id)
      return null
    }
    return { total: t - t0, ack: tAck - t0 }
  }
  for (let k = 0; k < 5; k++) await register(`warm-${n}-${k}`)
  const regProfiler = await startProfiler(values['profile-reg'])
  const regMeter = meter()
  const totals: number[] = []
  const acks: number[] = []
  const afterAck: number[] = []
  let timeouts = 0
  for (let k = 0; k < REGISTRATIONS; k++) {
    const r = await register(`bench-${n}-${k}`)
    if (r == null) timeouts++
    else {
      totals.push(r.total)
      acks.push(r.ack)
      afterAck.push(r.total - r.ack)
    }
    await sleep(GAP_MS)
  }
  const regCpu = regMeter()
  await stopProfiler(regProfiler, values['profile-reg'], n, seals)
  clearInterval(retryTimer)
  cs.forEach((c, i) => { c.core.registry.off('change', listeners[i]) })
  totals.sort((a, b) => a - b)
  acks.sort((a, b) => a - b)
  afterAck.sort((a, b) => a - b)
  const reg = {
    p50: pct(totals, 50), p99: pct(totals, 99), max: totals.at(-1) ?? NaN,
    ackP50: pct(acks, 50), afterAckP99: pct(afterAck, 99), count: totals.length, timeouts, cores: regCpu.cores
  }
  console.log(`  registration → routable at all ${n}: p50 ${ms(reg.p50)}, p99 ${ms(reg.p99)}, max ${ms(reg.max)} over ${reg.count} (HTTPS ack p50 ${ms(reg.ackP50)}; ack → all p99 ${ms(reg.afterAckP99)}; ${timeouts} timed out) — CPU ${reg.cores.toFixed(2)} cores`)
  const rssAfterReg = process.memoryUsage().rss

  // ---- 2. heal → converged
  const half = Math.floor(n / 2)
  const A = cs.slice(0, half)
  const B = cs.slice(half)
  await Promise.all([
    ...A.map(async c => { await faults.get(c)!.block(B.map(x => x.p2p.peerId)) }),
    ...B.map(async c => { await faults.get(c)!.block(A.map(x => x.p2p.peerId)) })
  ])
  const crossLinks = (): number => A.reduce((sum, a) => sum + B.filter(b => a.p2p.connectedPeers().includes(b.p2p.peerId)).length, 0)
  await until('no link between the halves', () => crossLinks() === 0, 30_000, 20)
  const base = cs[0].core.registry.size
  const tReg = performance.now()
  const perSide = [Math.floor(HEAL_WORKERS / 2), HEAL_WORKERS - Math.floor(HEAL_WORKERS / 2)]
  await Promise.all([A, B].map(async (side, s) => {
    for (let k = 0; k < perSide[s]; k++) {
      const c = side[k % side.length]
      const id = `heal-${n}-${s}-${k}`
      c.core.register({ worker_id: id, worker_url: `https://10.${s}.${(k >> 8) & 255}.${k & 255}:8443/`, capabilities: [cap(`cap-heal-${k % 100}`)] })
      // Let the mesh flush (and other events run) between batches, as a stream of real registrations would.
      if (k % 200 === 199) await sleep(0)
    }
  }))
  const sideAgrees = (side: Controller[], size: number): boolean => side.every(c => c.core.registry.size === size && c.core.registryHash === side[0].core.registryHash)
  await until('each side to agree internally', () => sideAgrees(A, base + perSide[0]) && sideAgrees(B, base + perSide[1]), 300_000, 20)
  const registerMs = performance.now() - tReg
  console.log(`  ${HEAL_WORKERS} workers registered across the partition, each side converged internally after ${(registerMs / 1000).toFixed(1)} s`)
  // A partition usually outlasts gossipsub's message cache (5 heartbeats): healed sooner, the new
  // links would also replay the last seconds of registrations through IHAVE/IWANT on top of the sync.
  await sleep(SETTLE_MS)
  // Baseline of the same run (the machine's speed varies): one controller alone applying the other
  // half's delta, as each controller must during the heal. Median of three fresh replicas.
  const applyMs: number[] = []
  for (let k = 0; k < 3; k++) {
    // It trusts the seals the controllers trust (it writes nothing).
    const probe = new ControllerCore({ controllerId: `probe-${k}`, seals: seals ? A[0].seals : false, ...MESH_CONFIG, digestKeepaliveMs: 15_000 })
    probe.registry.applyUpdate(B[0].core.registry.encodeState(), Origin.remote)
    const delta = A[0].core.registry.encodeDiff(probe.registry.encodeStateVector())
    const t = performance.now()
    probe.registry.applyUpdate(delta, Origin.remote)
    applyMs.push(performance.now() - t)
  }
  const applyBaselineMs = pct(applyMs.sort((a, b) => a - b), 50)
  console.log(`  baseline: one controller alone applies the other half's delta in ${ms(applyBaselineMs)} (median of 3)`)

  let t0 = performance.now()
  // What the heal costs each controller: exchanges it took part in, and bytes it received by sync.
  const healSyncs = cs.map(() => ({ count: 0, bytes: 0 }))
  const syncListeners = cs.map((c, i) => {
    const fn = (r: SyncResult & { peerId: string, ms: number }): void => {
      healSyncs[i].count++
      healSyncs[i].bytes += r.bytesReceived
      if (values.verbose !== true) return
      const p = r.phases
      const rest = r.ms - p.receiveMs - p.applyMs - p.encodeMs - p.sendMs
      console.log(`    ${(performance.now() - t0).toFixed(0)} ms: c${i} ← c${cs.findIndex(x => x.p2p.peerId === r.peerId)} ${(r.bytesReceived / 1e6).toFixed(2)} MB in ${r.ms.toFixed(0)} ms (receive ${p.receiveMs.toFixed(0)}, apply ${p.applyMs.toFixed(0)}, encode ${p.encodeMs.toFixed(0)}, send ${p.sendMs.toFixed(0)}, the rest ${rest.toFixed(0)})`)
    }
    c.p2p.on('sync', fn)
    return fn
  })
  const profiler = await startProfiler(values['profile-heal'])
  const healMeter = meter()
  t0 = performance.now()
  let firstLinkMs = NaN
  const reached = new Map<number, number>()
  const target = (): string | null => {
    const h = cs[0].core.registryHash
    return cs.every(c => c.core.registryHash === h) ? h : null
  }
  for (const c of cs) faults.get(c)!.unblock()
  const convergedMs = await until('every controller to hold the same registry after the heal', () => {
    if (Number.isNaN(firstLinkMs) && crossLinks() > 0) firstLinkMs = performance.now() - t0
    for (const [i, c] of cs.entries()) if (!reached.has(i) && c.core.registry.size === base + HEAL_WORKERS) reached.set(i, performance.now() - t0)
    return target() != null
  }, 300_000, 1)
  const healCpu = healMeter()
  await stopProfiler(profiler, values['profile-heal'], n, seals)
  cs.forEach((c, i) => { c.p2p.off('sync', syncListeners[i]) })
  const syncBytes = healSyncs.map(s => s.bytes)
  console.log(`  sync during the heal, per controller: ${healSyncs.map(s => s.count).join('/')} exchanges, ${syncBytes.map(b => (b / 1024 / 1024).toFixed(2)).join('/')} MB received`)
  if (cs[0].core.registry.size !== base + HEAL_WORKERS) throw new Error(`converged on ${cs[0].core.registry.size} workers, expected ${base + HEAL_WORKERS}`)
  const perController = [...reached.values()].sort((a, b) => a - b)
  const heal = { workers: HEAL_WORKERS, registerMs, firstLinkMs, convergedMs, cores: healCpu.cores, perControllerP50: pct(perController, 50), applyBaselineMs }
  console.log(`  heal → converged: ${ms(convergedMs)} (first link across after ${ms(firstLinkMs)}; controllers complete after ${perController.map(t => t.toFixed(0)).join(', ')} ms) — CPU ${heal.cores.toFixed(2)} cores`)
  const rssAfterHeal = process.memoryUsage().rss
  console.log(`  RSS of the process (all ${n} controllers): after start ${mb(rssAfterStart)}, after registrations ${mb(rssAfterReg)}, after heal ${mb(rssAfterHeal)} (${mb(rssAfterHeal / n)} per controller)`)

  for (const c of cs) await c.stop()
  return { n, seals, meshMs, idleCores, reg, heal, rss: { afterStart: rssAfterStart, afterReg: rssAfterReg, afterHeal: rssAfterHeal } }
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-mesh-'))
const tls = await ensureTls({ dir: join(root, 'tls') })
// Controllers ask who is calling: the bench registers and reads as an operator.
const op = await issueIdentity({ dir: join(root, 'tls'), role: 'operator', name: 'bench' })
const client = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, timeoutMs: 30_000 })
const results: SizeResult[] = []
try {
  console.log(`capmesh mesh benchmark: sizes ${SIZES.join(', ')}, ${REGISTRATIONS} registrations, ${HEAL_WORKERS} workers across the partition; load average ${loadavg().map(x => x.toFixed(1)).join(' ')}; machine: ${ed25519VerifiesPerSecond()} Ed25519 verifies/s`)
  for (const n of SIZES) {
    for (const seals of SEAL_MODES) {
      console.log(`N = ${n}, seals ${seals ? 'on' : 'off'}`)
      results.push(await runSize(n, seals, root, join(root, 'tls'), client))
    }
  }
  console.log(`\n| N | seals | full mesh | idle CPU | reg → routable everywhere p50 / p99 / max | HTTPS ack p50 | heal → converged (${HEAL_WORKERS} workers) | heal ÷ one apply alone | CPU reg / heal | RSS after heal (per controller) |`)
  console.log('|---|---|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    console.log(`| ${r.n} | ${r.seals ? 'on' : 'off'} | ${Number.isNaN(r.meshMs) ? 'not formed' : `${(r.meshMs / 1000).toFixed(1)} s`} | ${r.idleCores.toFixed(2)} cores | ${r.reg.p50.toFixed(1)} / ${r.reg.p99.toFixed(1)} / ${r.reg.max.toFixed(1)} ms${r.reg.timeouts > 0 ? ` (${r.reg.timeouts} timed out)` : ''} | ${r.reg.ackP50.toFixed(1)} ms | ${r.heal.convergedMs.toFixed(0)} ms | ${(r.heal.convergedMs / r.heal.applyBaselineMs).toFixed(1)} × ${r.heal.applyBaselineMs.toFixed(0)} ms | ${r.reg.cores.toFixed(2)} / ${r.heal.cores.toFixed(2)} cores | ${mb(r.rss.afterHeal)} (${mb(r.rss.afterHeal / r.n)}) |`)
  }
  console.log(`load average at the end ${loadavg().map(x => x.toFixed(1)).join(' ')}`)
} finally {
  await client.close()
  rmSync(root, { recursive: true, force: true })
}
