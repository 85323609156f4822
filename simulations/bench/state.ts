/**
 * `npm run bench:state` — moving a large registry, and what it costs in memory.
 *
 * Controller a (a child process, `capmesh controller`) gets N workers by POST
 * /register over HTTPS (32 connections, one capability each over 100 names).
 * Then, each figure printed beside the figure issue 21 measured before on
 * the same kind of machine (2 vCPUs; "issue's baseline"):
 *
 * - export from a, JSON (streamed) and binary: time, size, a's peak RSS while
 *   it serves each (VmHWM reset right before, once a has written the
 *   snapshot its registrations called for), and its RSS right before;
 * - import into a fresh controller b, binary and (into c) JSON: time of the
 *   POST, the importer's peak RSS, and the slowest `GET /health` answered by
 *   it while it imported (a poller asks every 20 ms);
 * - an idle controller's RSS (b before its import);
 * - restart of b from its own data dir (after a clean stop, which writes the
 *   snapshot): from spawning it to serving, and its RSS then.
 * - in this process: checking and applying the same state into an empty
 *   core, whole and in slices (the longest turn of the event loop).
 *
 *   npm run bench:state
 *   npm run bench:state -- --workers 30000   (--help lists every option)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { ControllerCore } from '../../src/core/index.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { PeerSeals } from '../../src/gossip/index.ts'
import { Origin } from '../../src/registry/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { scriptArgs } from '../args.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'

const { values } = scriptArgs({
  script: 'bench:state',
  summary: `Moving a large registry: export (JSON, binary), import into an empty controller (binary,
JSON) with /health polled meanwhile, an idle controller's RSS, restart from the data dir; beside
issue 21's figures from before.`,
  options: {
    workers: { type: 'string', value: 'N', default: '100000', description: 'workers registered at a' },
    connections: { type: 'string', value: 'N', default: '32', description: 'concurrent registrations' }
  }
})
const N = Number(values.workers)
if (!Number.isInteger(N) || N < 1) throw new Error(`--workers: "${values.workers}" is not a positive integer`)
const CONNECTIONS = Number(values.connections)

/** Issue 21's figures at 100,000 workers (2 vCPUs, quiet), before this work. */
const BASELINE = {
  exportS: '0.75–1.0 s (42 MB base64 JSON)',
  exportPeakMb: '773 MB',
  importS: '2.1–2.3 s (JSON)',
  importPeakMb: '657–661 MB right after',
  healthStallS: '1.85 s (catch-up)',
  idleMb: '143–188 MB',
  restartS: '2.6 s (31.5 MB snapshot)',
  restartMb: '437 MB'
}

function proc (pid: number, key: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? NaN : Number(m[1]) / 1024
}
const resetPeak = (pid: number): void => { writeFileSync(`/proc/${pid}/clear_refs`, '5') }
const mb = (x: number): string => `${x.toFixed(0)} MB`
const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
const row = (what: string, now: string, before: string): void => { console.log(`  ${what.padEnd(42)} ${now.padEnd(30)} issue's baseline: ${before}`) }

function capability (i: number): Record<string, unknown> {
  return { name: `cap-${i % 100}`, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 8 }
}

async function registerAll (client: HttpsClient, url: string): Promise<number> {
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (next < N) {
      const i = next++
      const body = { worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [capability(i)] }
      let res = await client.json('POST', `${url}/register`, body)
      // Overloaded for a moment (a snapshot being written): as a worker would, retry after the hint.
      for (let tries = 0; res.status === 503 && tries < 30; tries++) {
        await new Promise(resolve => setTimeout(resolve, Number(res.headers['retry-after'] ?? 1) * 1000))
        res = await client.json('POST', `${url}/register`, body)
      }
      if (res.status !== 200) throw new Error(`register w${i}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
    }
  }))
  return N / ((performance.now() - t0) / 1000)
}

/** Downloads an export, counting bytes; resolves with [ms, bytes, body]. */
async function download (client: HttpsClient, url: string, binary: boolean): Promise<[number, number, Buffer]> {
  const t0 = performance.now()
  const res = await client.stream(url, { headers: { accept: binary ? 'application/octet-stream' : 'application/json' }, timeoutMs: 120_000 })
  const chunks: Uint8Array[] = []
  try {
    for await (const c of res.body) chunks.push(c)
  } finally {
    res.close()
  }
  if (res.status !== 200) throw new Error(`export: HTTP ${res.status}`)
  const body = Buffer.concat(chunks)
  return [performance.now() - t0, body.length, body]
}

/** Polls `url`/health every 20 ms until stopped; resolves with the slowest answer (ms). */
function healthPoller (client: HttpsClient, url: string): { stop: () => Promise<number> } {
  let running = true
  let worst = 0
  const loop = (async () => {
    while (running) {
      const t0 = performance.now()
      await client.json('GET', `${url}/health`, undefined, { timeoutMs: 60_000 }).catch(() => {})
      worst = Math.max(worst, performance.now() - t0)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })()
  return { stop: async () => { running = false; await loop; return worst } }
}

/**
 * In this process: check and apply `update` (sealed by controller a, peer `aPeer`) into an empty
 * core: whole with the seal checks, whole without them (what seals add), then in slices (the
 * longest turn of the event loop).
 */
async function inProcess (update: Uint8Array, aPeer: string): Promise<{ wholeMs: number, unsealedMs: number, slicedMs: number, longestTurnMs: number }> {
  const mk = (sealed: boolean): ControllerCore => new ControllerCore({
    controllerId: 'bench',
    heartbeatIntervalMs: 30_000,
    unhealthyAfterMs: 60_000,
    staleAfterMs: 120_000,
    digestIntervalMs: 1000,
    digestKeepaliveMs: 15_000,
    // Verifying needs only a's peer id (its public key); this core never signs.
    seals: sealed ? new PeerSeals(owner => owner === 'a' ? aPeer : undefined) : false
  })
  const timed = (core: ControllerCore): number => {
    const t0 = performance.now()
    core.registry.applyUpdate(update, Origin.import)
    if (core.registry.size !== N) throw new Error(`in-process apply: ${core.registry.size} workers, expected ${N}`)
    return performance.now() - t0
  }
  const wholeMs = timed(mk(true))
  const unsealedMs = timed(mk(false))
  const core = mk(true)
  let last = performance.now()
  let longest = 0
  const timer = setInterval(() => { const now = performance.now(); longest = Math.max(longest, now - last); last = now }, 5)
  const t0 = performance.now()
  last = t0
  await core.registry.applyInSlices(update, Origin.import)
  const slicedMs = performance.now() - t0
  clearInterval(timer)
  longest = Math.max(longest, performance.now() - last)
  return { wholeMs, unsealedMs, slicedMs, longestTurnMs: longest }
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-state-'))
const tlsDir = join(root, 'tls')
const tls = await ensureTls({ dir: tlsDir })
const op = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'bench' })
const client = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, timeoutMs: 300_000, connections: CONNECTIONS })
const started: ChildController[] = []
const spawn = async (id: string): Promise<ChildController> => {
  const c = await spawnController({
    id,
    // Platform timeouts: nothing heartbeats here, and nothing may expire while it is measured.
    args: ['--id', id, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, id), '--tls-dir', tlsDir, '--heartbeat-interval', '30s', '--unhealthy-after', '60s', '--stale-after', '120s'],
    timeoutMs: 300_000
  })
  started.push(c)
  return c
}
try {
  console.log(`bench:state  ${new Date().toISOString()}  load ${loadavg().map(l => l.toFixed(2)).join(' ')}  ${ed25519VerifiesPerSecond()} Ed25519 verifies/s  ${N} workers`)
  const a = await spawn('a')
  const rate = await registerAll(client, a.url)
  console.log(`  registered at ${Math.round(rate)}/s; a holds RSS ${mb(proc(a.pid, 'VmRSS'))}`)
  // a writes its snapshot once registrations have paused (SNAPSHOT_DELAY_MS): not while an export is measured.
  const snapshotUntil = performance.now() + 60_000
  while (((await client.json('GET', `${a.url}/health`)).body.store?.logBytes as number | undefined ?? 0) > 0 && performance.now() < snapshotUntil) {
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  await new Promise(resolve => setTimeout(resolve, 1000))

  resetPeak(a.pid)
  const jsonBefore = proc(a.pid, 'VmRSS')
  const [jsonMs, jsonBytes, jsonBody] = await download(client, `${a.url}/state/export`, false)
  const jsonPeak = proc(a.pid, 'VmHWM')
  resetPeak(a.pid)
  const binBefore = proc(a.pid, 'VmRSS')
  const [binMs, binBytes, binBody] = await download(client, `${a.url}/state/export?format=binary`, true)
  const binPeak = proc(a.pid, 'VmHWM')
  row('export, JSON (streamed)', `${s(jsonMs)} (${(jsonBytes / 1e6).toFixed(1)} MB)`, BASELINE.exportS)
  row('export, binary', `${s(binMs)} (${(binBytes / 1e6).toFixed(1)} MB)`, '(none)')
  row('a\'s peak RSS during export', `${mb(jsonPeak)} JSON, ${mb(binPeak)} binary`, BASELINE.exportPeakMb)
  row('  its RSS right before each', `${mb(jsonBefore)} JSON, ${mb(binBefore)} binary`, '(none)')

  const b = await spawn('b')
  await new Promise(resolve => setTimeout(resolve, 3000))
  row('idle controller (b, empty)', mb(proc(b.pid, 'VmRSS')), BASELINE.idleMb)
  resetPeak(b.pid)
  let poll = healthPoller(client, b.url)
  let t0 = performance.now()
  let res = await client.upload(`${b.url}/state/import`, binBody, 'application/octet-stream', { timeoutMs: 300_000 })
  const binImportMs = performance.now() - t0
  let stall = await poll.stop()
  if (res.status !== 200) throw new Error(`binary import: HTTP ${res.status} ${JSON.stringify(res.body)}`)
  row('import into an empty controller, binary', s(binImportMs), BASELINE.importS)
  row('  its peak RSS', mb(proc(b.pid, 'VmHWM')), BASELINE.importPeakMb)
  row('  slowest /health meanwhile', s(stall), BASELINE.healthStallS)

  const c = await spawn('c')
  resetPeak(c.pid)
  poll = healthPoller(client, c.url)
  t0 = performance.now()
  res = await client.upload(`${c.url}/state/import`, jsonBody, 'application/json', { timeoutMs: 300_000 })
  const jsonImportMs = performance.now() - t0
  stall = await poll.stop()
  if (res.status !== 200) throw new Error(`JSON import: HTTP ${res.status} ${JSON.stringify(res.body)}`)
  row('import into an empty controller, JSON', s(jsonImportMs), BASELINE.importS)
  row('  its peak RSS', mb(proc(c.pid, 'VmHWM')), BASELINE.importPeakMb)
  row('  slowest /health meanwhile', s(stall), BASELINE.healthStallS)
  await new Promise(resolve => setTimeout(resolve, 2000))
  row('  RSS settled (c)', mb(proc(c.pid, 'VmRSS')), '541–576 MB settled')

  await b.stop()
  started.splice(started.indexOf(b), 1)
  t0 = performance.now()
  const b2 = await spawn('b')
  const restartMs = performance.now() - t0
  const health = await client.json('GET', `${b2.url}/health`)
  const restored = health.status === 200 ? String(health.body.workers.total) : `/health: HTTP ${health.status}`
  row('restart from its data dir to serving', `${s(restartMs)} (${restored} workers)`, BASELINE.restartS)
  row('  its RSS then', mb(proc(b2.pid, 'VmRSS')), BASELINE.restartMb)

  const ip = await inProcess(new Uint8Array(binBody), a.peerId)
  row('in this process: check + apply, whole', s(ip.wholeMs), '0.68 s check + 0.18 s Yjs + 0.8 s view, no seals')
  row('  the same without seal checks', s(ip.unsealedMs), '(none)')
  row('  in slices (longest turn)', `${s(ip.slicedMs)} (${s(ip.longestTurnMs)})`, '(none)')
} finally {
  await Promise.all(started.map(async c => { await c.stop() }))
  await client.close()
  rmSync(root, { recursive: true, force: true })
}
