/**
 * Restart recovery from the data dir: in-process restarts (restored workers
 * are `pending` until a heartbeat, removed if none comes within
 * stale-after), a real `capmesh controller` child process killed with
 * SIGKILL while registrations stream in, a torn log tail, a lost data
 * dir (worker_not_registered → re-register → routable), a clean stop and
 * start of a child process (its snapshot read ahead while its modules
 * load), and a snapshot read ahead that was replaced before the replay.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync, existsSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { readSnapshotAhead } from '../../src/registry/read-ahead.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

const REPO = resolve(import.meta.dirname, '../..')
const BIN = join(REPO, 'bin/capmesh.js')

let bed: TestBed
const children: ChildProcess[] = []
const timers: NodeJS.Timeout[] = []

beforeAll(async () => { bed = await testBed('restart') })
afterAll(async () => { await bed.cleanup() })
afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t)
  for (const child of children.splice(0)) await killChild(child)
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const get = async (base: string, path: string) => await bed.client.json('GET', base + path)

function workerBody (id: string, name = 'echo'): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(name)] }
}

async function states (base: string): Promise<Record<string, string>> {
  const res = await get(base, '/workers?limit=10000')
  expect(res.status).toBe(200)
  return Object.fromEntries(res.body.workers.map((w: any) => [w.worker_id, w.state]))
}

/** SIGKILLs a child (by its pid) unless it already exited, and waits until it is gone. */
async function killChild (child: ChildProcess): Promise<void> {
  if (child.exitCode != null || child.signalCode != null) return
  const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
  process.kill(child.pid!, 'SIGKILL')
  await exited
}

/** Starts `capmesh controller` as a child process on port 0 and reads its URL from the JSON log line. */
async function spawnController (id: string, dataDir: string): Promise<{ child: ChildProcess, url: string }> {
  const child = spawn(process.execPath, [
    BIN, 'controller', '--id', id, '--host', '127.0.0.1', '--https-port', '0', '--p2p-port', '0',
    '--data-dir', dataDir, '--tls-dir', bed.tlsDir,
    '--heartbeat-interval', '1s', '--unhealthy-after', '30s', '--stale-after', '60s', '--log-level', 'info',
    // As the local preset: no load shedding. A replay that blocks the loop on a loaded machine would
    // otherwise have the first requests after a restart answered 503 (retry later), which is not under test.
    '--max-event-loop-delay', '0'
  ], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`controller did not report its URL in time; stderr: ${stderr}`)) }, 15_000)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`controller exited early (${code ?? signal}); stderr: ${stderr}`))
    })
    createInterface({ input: child.stdout! }).on('line', line => {
      let entry: { url?: unknown }
      try { entry = JSON.parse(line) } catch { return }
      if (typeof entry.url === 'string' && entry.url.startsWith('https://')) {
        clearTimeout(timer)
        resolve(entry.url)
      }
    })
  })
  expect(new URL(url).hostname).toBe('127.0.0.1')
  return { child, url }
}

describe('in-process restart on the same data dir', () => {
  it('restored workers are pending, routed only when no healthy worker offers the capability, healthy on heartbeat, removed without one', async () => {
    // A stale window long enough for the checks below to run before 'keep' would expire unconfirmed.
    const timeouts = { unhealthyAfterMs: 600, staleAfterMs: 2500 }
    const first = await bed.start({ id: 'r1', ...timeouts })
    for (const id of ['keep', 'drop']) expect((await post(first.url, '/register', workerBody(id))).status).toBe(200)
    expect((await post(first.url, '/register', workerBody('gone'))).status).toBe(200)
    expect((await post(first.url, '/deregister', { worker_id: 'gone' })).body.known).toBe(true)
    await first.stop()

    const c = await bed.start({ id: 'r1', ...timeouts })
    const u = c.url
    const restored = await get(u, '/workers')
    expect(restored.body.total).toBe(2)
    for (const w of restored.body.workers) {
      expect(w.state).toBe('pending')
      expect(w.last_heartbeat).toBeNull()
      expect(w.controller_id).toBe('r1')
    }
    expect((await get(u, '/health')).body.workers).toMatchObject({ total: 2, pending: 2, healthy: 0 })

    // Only pending workers offer echo: they are used rather than failing.
    const fallback = await post(u, '/route', { verb: 'invoke', capability: 'echo' })
    expect(fallback.status).toBe(200)
    expect(fallback.body.state).toBe('pending')
    expect(['keep', 'drop']).toContain(fallback.body.worker_id)

    // A fresh healthy worker is preferred over every pending one.
    expect((await post(u, '/register', workerBody('fresh'))).status).toBe(200)
    for (let i = 0; i < 6; i++) expect((await post(u, '/route', { verb: 'invoke', capability: 'echo' })).body.worker_id).toBe('fresh')

    // A heartbeat confirms a restored worker: healthy and routable again.
    const hb = await post(u, '/heartbeat', { worker_id: 'keep' })
    expect(hb.body).toMatchObject({ status: 'acknowledged', state: 'healthy' })
    const seen = new Set<string>()
    for (let i = 0; i < 6; i++) seen.add((await post(u, '/route', { verb: 'invoke', capability: 'echo' })).body.worker_id)
    expect(seen).toEqual(new Set(['keep', 'fresh']))

    // 'drop' never heartbeats: removed once stale-after passes; the others are kept alive.
    for (const id of ['keep', 'fresh']) timers.push(setInterval(() => { post(u, '/heartbeat', { worker_id: id }).catch(() => {}) }, 100))
    await eventually(async () => !('drop' in await states(u)), 'restored worker without heartbeat removed')
    expect(await states(u)).toEqual({ keep: 'healthy', fresh: 'healthy' })
  })

  it('a restored worker that never heartbeats is removed and the removal survives the next restart', async () => {
    const first = await bed.start({ id: 'r2' })
    expect((await post(first.url, '/register', workerBody('w1'))).status).toBe(200)
    await first.stop()
    const second = await bed.start({ id: 'r2' })
    expect(await states(second.url)).toEqual({ w1: 'pending' })
    await eventually(async () => (await get(second.url, '/workers')).body.total === 0, 'pending worker removed')
    const gone = await post(second.url, '/route', { verb: 'invoke', capability: 'echo' })
    expect(gone.status).toBe(404)
    await second.stop()
    const third = await bed.start({ id: 'r2' })
    expect((await get(third.url, '/workers')).body.total).toBe(0)
  })

  it('a snapshot read ahead that a later stop replaced before the replay is read again, not replayed stale', async () => {
    const dataDir = join(bed.root, 'r5')
    const first = await bed.start({ id: 'r5', dataDir })
    expect((await post(first.url, '/register', workerBody('w1'))).status).toBe(200)
    await first.stop()
    // Read as `capmesh controller` does before its modules load: here, before the run below stops.
    const stale = readSnapshotAhead(join(dataDir, 'registry'))
    expect((await stale)?.bytes.length).toBeGreaterThan(0)
    const second = await bed.start({ id: 'r5', dataDir })
    expect((await post(second.url, '/register', workerBody('w2'))).status).toBe(200)
    // Its stop writes a new snapshot holding w1 and w2, and empties the log.
    await second.stop()
    const third = await bed.start({ id: 'r5', dataDir }, { snapshotAhead: stale })
    expect(await states(third.url)).toEqual({ w1: 'pending', w2: 'pending' })
  })

  it('a lost data dir: heartbeat gets worker_not_registered, re-registration is routable at once', async () => {
    const first = await bed.start({ id: 'r3', dataDir: join(bed.root, 'r3-old') })
    expect((await post(first.url, '/register', workerBody('w1'))).status).toBe(200)
    await first.stop()

    const c = await bed.start({ id: 'r3', dataDir: join(bed.root, 'r3-new') })
    expect((await get(c.url, '/workers')).body.total).toBe(0)
    const hb = await post(c.url, '/heartbeat', { worker_id: 'w1' })
    expect(hb.status).toBe(200)
    expect(hb.body).toEqual({ error: 'worker_not_registered', worker_id: 'w1' })
    expect((await post(c.url, '/register', workerBody('w1'))).status).toBe(200)
    const res = await post(c.url, '/route', { verb: 'invoke', capability: 'echo' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ worker_id: 'w1', state: 'healthy' })
  })
})

describe('capmesh controller process stopped cleanly and started again', () => {
  it('replays the snapshot its stop wrote, and logs what comes after it', async () => {
    const dataDir = join(bed.root, 'clean')
    const first = await spawnController('s', dataDir)
    const workers = Array.from({ length: 300 }, (_, i) => workerBody(`s-${i}`, `cap${i % 5}`))
    const batch = await post(first.url, '/register/batch', { workers })
    expect(batch.status).toBe(200)
    expect(batch.body.results.filter((r: any) => r.status === 'registered')).toHaveLength(300)
    const exited = new Promise(resolve => first.child.once('exit', code => { resolve(code) }))
    first.child.kill('SIGTERM')
    expect(await exited).toBe(0)
    // The stop wrote the whole registry into the snapshot and emptied the log.
    expect(statSync(join(dataDir, 'registry', 'snapshot.bin')).size).toBeGreaterThan(0)
    expect(statSync(join(dataDir, 'registry', 'updates.log')).size).toBe(0)

    // Started again: the snapshot (read while the command loads its modules) is replayed whole before it serves.
    const second = await spawnController('s', dataDir)
    const health = await get(second.url, '/health')
    expect(health.body.workers).toMatchObject({ total: 300, pending: 300 })
    expect(Object.keys(await states(second.url)).sort()).toEqual(workers.map(w => w.worker_id as string).sort())
    // The log goes on after the replayed snapshot: a registration then survives a kill.
    expect((await post(second.url, '/register', workerBody('after-restart'))).status).toBe(200)
    await killChild(second.child)
    const third = await spawnController('s', dataDir)
    const again = await states(third.url)
    expect(Object.keys(again)).toHaveLength(301)
    expect(again['after-restart']).toBe('pending')
  })
})

describe('capmesh controller process killed with SIGKILL', () => {
  it('keeps every registration acknowledged before the kill, and loads past a torn log tail', async () => {
    const dataDir = join(bed.root, 'killed')
    const first = await spawnController('k', dataDir)

    // Registrations in a tight loop, 8 in flight; SIGKILL once enough are acknowledged.
    const acked: string[] = []
    let next = 0
    let killed = false
    const killAt = 150
    const pump = async (): Promise<void> => {
      while (!killed) {
        const id = `w-${next++}`
        try {
          const res = await post(first.url, '/register', workerBody(id, `cap${next % 5}`))
          if (res.status === 200 && res.body.status === 'registered') acked.push(id)
        } catch {
          return // the connection died with the process
        }
        if (acked.length >= killAt && !killed) {
          killed = true
          process.kill(first.child.pid!, 'SIGKILL')
        }
      }
    }
    const exited = new Promise(resolve => first.child.once('exit', (_code, signal) => { resolve(signal) }))
    await Promise.all(Array.from({ length: 8 }, pump))
    expect(await exited).toBe('SIGKILL')
    expect(acked.length).toBeGreaterThanOrEqual(killAt)

    // Simulate a write torn by the crash: a record header promising more bytes than follow.
    const log = join(dataDir, 'registry', 'updates.log')
    expect(existsSync(log)).toBe(true)
    const torn = Buffer.alloc(8 + 10)
    torn.writeUInt32LE(4096, 0)
    torn.writeUInt32LE(0xdeadbeef, 4)
    appendFileSync(log, torn)

    const second = await spawnController('k', dataDir)
    const restored = await states(second.url)
    const missing = acked.filter(id => !(id in restored))
    expect(missing).toEqual([])
    for (const id of acked) expect(restored[id]).toBe('pending')
    expect((await get(second.url, '/health')).body).toMatchObject({ status: 'ok', controller_id: 'k' })

    // The torn tail was cut: what is written after it survives the next crash too.
    expect((await post(second.url, '/register', workerBody('after-repair'))).status).toBe(200)
    await killChild(second.child)
    const third = await spawnController('k', dataDir)
    const again = await states(third.url)
    expect(again['after-repair']).toBe('pending')
    expect(acked.filter(id => !(id in again))).toEqual([])
    const routed = await post(third.url, '/route', { verb: 'invoke', capability: 'echo' })
    expect(routed.status).toBe(200)
    expect(routed.body.worker_id).toBe('after-repair')
  })
})
