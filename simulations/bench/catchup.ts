/**
 * `npm run bench:catchup` — a late joiner catching up by anti-entropy.
 *
 * For each size: controller A (a child process, `capmesh controller`) gets
 * N workers by POST /register over HTTPS (32 connections, one capability each
 * over 100 names). Then controller B starts with an empty data dir and
 * `--bootstrap` to A. Figures:
 *
 * - catch-up: from spawning B to the moment B reports (over its control
 *   channel) the same registry hash as A; beside it, the same start-up of an
 *   empty controller with nobody to join, measured in the same run, so the
 *   difference is what the catch-up itself costs;
 * - the baseline: this process checking and applying A's exported state into
 *   an empty registry (the work B cannot avoid, without any networking);
 * - peak RSS (VmHWM) of A while it serves the catch-up (reset right before B
 *   starts) and of B over its whole life, from /proc, and B's RSS once it
 *   caught up (what it holds, against what the catch-up cost on top);
 * - the slowest `GET /health` B answered while it caught up (it applies a
 *   large delta in slices and keeps serving);
 * - B's peak RSS while it writes its first snapshot (the catch-up's delta
 *   outgrew its update log; reset once it caught up, read once
 *   `/health` shows the snapshot, at most a minute later).
 *
 *   npm run bench:catchup
 *   npm run bench:catchup -- --sizes 30000,100000   (--help lists every option)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { PeerSeals } from '../../src/gossip/index.ts'
import { importState, Registry } from '../../src/registry/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'

const { values } = scriptArgs({
  script: 'bench:catchup',
  summary: `A late joiner catching up by anti-entropy: controller a gets N workers over HTTPS, then b
starts empty with --bootstrap to a. Prints b's catch-up time beside an empty controller's start-up
and an in-process apply of the same state, and the peak RSS of both sides.`,
  options: {
    sizes: { type: 'string', value: 'N,N', default: '30000,100000', description: 'registry sizes' },
    connections: { type: 'string', value: 'N', default: '32', description: 'concurrent registrations' },
    timeout: { type: 'string', value: 'D', default: '300s', description: 'give up a catch-up after this long' }
  }
})
const SIZES = values.sizes.split(',').map(Number)
if (SIZES.some(n => !Number.isInteger(n) || n < 1)) throw new Error(`--sizes: "${values.sizes}" is not a list of positive integers`)
const CONNECTIONS = Number(values.connections)
const TIMEOUT_MS = parseDuration(values.timeout, '--timeout')

const wallNow = (): number => performance.timeOrigin + performance.now()

/** Peak resident set (MB) since the last reset, from /proc. */
function peakRssMb (pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? NaN : Number(m[1]) / 1024
}
function rssMb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? NaN : Number(m[1]) / 1024
}
/** Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs). */
function resetPeak (pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5')
}

function capability (i: number): Record<string, unknown> {
  return { name: `cap-${i % 100}`, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 8 }
}

async function registerAll (client: HttpsClient, url: string, n: number): Promise<number> {
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (next < n) {
      const i = next++
      const res = await client.json('POST', `${url}/register`, { worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [capability(i)] })
      if (res.status !== 200) throw new Error(`register w${i}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
    }
  }))
  return n / ((performance.now() - t0) / 1000)
}

/** Resolves with the wall-clock time `c` reports `hash` (its control channel's `hashes` events). */
async function hashReached (c: ChildController, events: Array<{ hash: string, at: number }>, hash: string, timeoutMs: number): Promise<number> {
  const end = performance.now() + timeoutMs
  while (performance.now() < end) {
    const hit = events.find(e => e.hash === hash)
    if (hit != null) return hit.at
    if (c.process.exitCode != null) throw new Error(`${c.id} exited`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  throw new Error(`${c.id} did not reach registry ${hash} within ${timeoutMs} ms`)
}

async function run (n: number): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'capmesh-catchup-'))
  const tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir })
  // Controllers ask who is calling: the bench registers and reads as an operator.
  const op = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'bench' })
  const client = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, timeoutMs: 120_000, connections: CONNECTIONS })
  const started: ChildController[] = []
  const spawn = async (id: string, extra: string[] = [], onHash?: (e: { hash: string, at: number }) => void): Promise<ChildController> => {
    const c = await spawnController({
      id,
      ipc: true,
      onEvent: e => { if (e.event === 'hash') onHash?.(e) },
      args: ['--id', id, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, id), '--tls-dir', tlsDir, ...extra],
      timeoutMs: 120_000
    })
    started.push(c)
    return c
  }
  try {
    const a = await spawn('a')
    const rate = await registerAll(client, a.url, n)
    const health = (await client.json('GET', `${a.url}/health`)).body
    const hash = (await client.json('GET', `${a.url}/mesh`)).body.registry_hash as string
    if (health.workers.total !== n) throw new Error(`a holds ${health.workers.total as number} workers, expected ${n}`)

    // Baseline: the same state checked and applied in this process, with no networking.
    const exported = (await client.json('GET', `${a.url}/state/export`)).body
    const stateBytes = Buffer.from(exported.update as string, 'base64').length
    const t0 = performance.now()
    // Checked like b checks it: a's seals, verified with a's peer id (all a verifier needs).
    importState(new Registry({ controllerId: 'bench', seals: new PeerSeals(owner => owner === 'a' ? a.peerId : undefined) }), exported)
    const applyMs = performance.now() - t0

    // Start-up of an empty controller that joins nobody: what B pays before any catch-up.
    const s0 = wallNow()
    const lone = await spawn('lone')
    const startupMs = wallNow() - s0
    await lone.stop()

    await new Promise(resolve => setTimeout(resolve, 2000))
    resetPeak(a.pid)
    const aRssBefore = rssMb(a.pid)
    const events: Array<{ hash: string, at: number }> = []
    const b0 = wallNow()
    const b = await spawn('b', ['--bootstrap', a.p2p[0]], e => { events.push(e) })
    await b.control({ cmd: 'hashes', on: true })
    // While b applies what a sends, it keeps answering: the slowest /health meanwhile (polled every 20 ms).
    let polling = true
    let slowest = 0
    const poller = (async () => {
      while (polling) {
        const p0 = performance.now()
        await client.json('GET', `${b.url}/health`).catch(() => {})
        slowest = Math.max(slowest, performance.now() - p0)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })()
    const at = await hashReached(b, events, hash, TIMEOUT_MS)
    polling = false
    await poller
    const catchUpMs = at - b0
    await new Promise(resolve => setTimeout(resolve, 500))
    const bSettled = rssMb(b.pid)
    const aPeak = peakRssMb(a.pid)
    const bPeak = peakRssMb(b.pid)
    // The delta went to b's update log; once writes pause (SNAPSHOT_DELAY_MS), b writes its first snapshot.
    resetPeak(b.pid)
    const snapshotUntil = performance.now() + 60_000
    let snapshotBytes = 0
    while (snapshotBytes === 0 && performance.now() < snapshotUntil) {
      snapshotBytes = ((await client.json('GET', `${b.url}/health`)).body.store?.snapshotBytes as number | undefined) ?? 0
      if (snapshotBytes === 0) await new Promise(resolve => setTimeout(resolve, 100))
    }
    const bSnapshotPeak = peakRssMb(b.pid)
    const bMesh = (await client.json('GET', `${b.url}/mesh`)).body
    const exchange = (bMesh.peers as Array<{ peer_id: string, last_sync_ms: number | null }>).find(p => p.peer_id === a.peerId)
    console.log(`${String(n).padStart(7)} workers  state ${(stateBytes / 1e6).toFixed(1)} MB  (registered at ${Math.round(rate)}/s)`)
    console.log(`        catch-up      ${(catchUpMs / 1000).toFixed(2)} s from spawning b (empty start-up alone: ${(startupMs / 1000).toFixed(2)} s; b's exchange with a: ${exchange?.last_sync_ms != null ? `${(exchange.last_sync_ms / 1000).toFixed(2)} s` : 'n/a'})`)
    console.log(`        baseline      ${(applyMs / 1000).toFixed(2)} s to check and apply the same state in one process`)
    console.log(`        /health       slowest answer from b while it caught up: ${(slowest / 1000).toFixed(2)} s (issue's baseline at 100,000: stalled 1.85 s)`)
    console.log(`        peak RSS      a ${aPeak.toFixed(0)} MB while serving it (${aRssBefore.toFixed(0)} MB before), b ${bPeak.toFixed(0)} MB (${bSettled.toFixed(0)} MB once caught up)`)
    console.log(`        snapshot      ${snapshotBytes > 0 ? `b's peak RSS while it wrote its first (${(snapshotBytes / 1e6).toFixed(1)} MB): ${bSnapshotPeak.toFixed(0)} MB` : 'b wrote none within a minute'}`)
  } finally {
    await Promise.all(started.map(async c => { await c.stop() }))
    await client.close()
    rmSync(root, { recursive: true, force: true })
  }
}

console.log(`bench:catchup  ${new Date().toISOString()}  load ${loadavg().map(l => l.toFixed(2)).join(' ')}  ${ed25519VerifiesPerSecond()} Ed25519 verifies/s`)
for (const n of SIZES) await run(n)
