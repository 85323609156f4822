/**
 * A 100,000-worker import into a controller process: refused whole when one
 * entry is bad (the entry named, nothing changed), and all or nothing when
 * the controller is killed (kill -9) in the middle of it and restarted from
 * its data dir. The state is sealed by a controller `z` that exists only as
 * a key: its line is in the allow list, the test holds its peer key.
 */
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PeerSeals } from '../../src/gossip/index.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { ROOT, SEAL_KEY, SegmentDigest, encodeEntry, encodeSeal, entryLeaf, makeSeal, type WorkerRecord } from '../../src/registry/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { eventually } from '../helpers/controllers.ts'

const N = 100_000
const BAD = 'w77777'
let root: string
let tlsDir: string
let client: HttpsClient
let seals: PeerSeals
const running: ChildController[] = []

/** One segment of `z` holding N workers, sealed by z's key; `bad`: the entry of BAD breaks the schema (sealed all the same). */
function state (bad: boolean): Uint8Array {
  const doc = new Y.Doc()
  const segments = doc.getMap<Y.Map<string>>(ROOT)
  const key = `z/${Date.now().toString(36).padStart(9, '0')}.0badc0de`
  const digest = new SegmentDigest()
  doc.transact(() => {
    const seg = new Y.Map<string>()
    segments.set(key, seg)
    for (let i = 0; i < N; i++) {
      const id = `w${i}`
      const rec: WorkerRecord = { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [{ name: `cap-${i % 100}`, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: {}, requires_gpu: false, max_concurrency: 8 }], incarnation: 1, owner: 'z', registered_at: 1 }
      const text = bad && id === BAD ? encodeEntry({ ...rec, worker_url: 'not a url' }) : encodeEntry(rec)
      seg.set(id, text)
      digest.set(id, entryLeaf(id, text))
    }
    seg.set(SEAL_KEY, encodeSeal(makeSeal(seals, key, 1, digest.root())))
  })
  return Y.encodeStateAsUpdate(doc)
}

async function start (id: string): Promise<ChildController> {
  const c = await spawnController({
    id,
    args: ['--id', id, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, id), '--tls-dir', tlsDir, '--heartbeat-interval', '30s', '--unhealthy-after', '60s', '--stale-after', '120s'],
    timeoutMs: 120_000
  })
  running.push(c)
  return c
}

/** Workers the controller holds (its /health), or -1 when it does not answer that now (e.g. 503 overloaded). */
async function workers (c: ChildController): Promise<number> {
  const res = await client.json('GET', `${c.url}/health`)
  return res.status === 200 ? res.body.workers.total as number : -1
}

/** Workers the controller holds, once it says (a controller busy replaying its data dir may answer 503 for a while). */
async function settledWorkers (c: ChildController): Promise<number> {
  return await eventually(async () => { const n = await workers(c); return n >= 0 ? { n } : null }, `${c.id} to answer /health`, 120_000, 100).then(r => r!.n)
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'import-at-scale-'))
  tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir })
  const op = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'op' })
  client = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, timeoutMs: 120_000 })
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(key).toString()
  appendFileSync(join(tlsDir, 'peers.allow'), `z ${peer}\n`)
  seals = new PeerSeals(owner => owner === 'z' ? peer : undefined)
  seals.use(key)
}, 60_000)

afterAll(async () => {
  for (const c of running.splice(0)) await c.stop().catch(() => {})
  await client.close()
  rmSync(root, { recursive: true, force: true })
})

describe('importing 100,000 workers', () => {
  it('one bad entry among them: refused whole, the entry named, nothing changed; the good state then imports', async () => {
    const c = await start('x')
    const bad = await client.upload(`${c.url}/state/import`, state(true), 'application/octet-stream', { timeoutMs: 120_000 })
    expect(bad.status).toBe(400)
    expect(bad.body.code).toBe('CAPMESH_ERR_INVALID_STATE')
    expect(bad.body.message).toContain(BAD)
    expect(await settledWorkers(c)).toBe(0)
    const good = await client.upload(`${c.url}/state/import`, state(false), 'application/octet-stream', { timeoutMs: 120_000 })
    expect(good.status).toBe(200)
    expect(good.body).toMatchObject({ status: 'imported', added: N, workers: N })
  }, 300_000)

  it('killed in the middle of it: back from its data dir with all of it or none', async () => {
    const update = state(false)
    const seen: number[] = []
    // Killed at a few points of the import: while the body arrives, while it is checked, while slices are applied.
    for (const [i, delayMs] of [50, 600, 1500].entries()) {
      const id = `k${i}`
      const c = await start(id)
      const pending = client.upload(`${c.url}/state/import`, update, 'application/octet-stream', { timeoutMs: 120_000 }).catch(() => null)
      await new Promise(resolve => setTimeout(resolve, delayMs))
      await c.kill()
      await pending
      running.splice(running.indexOf(c), 1)
      const back = await start(id)
      const n = await settledWorkers(back)
      expect([0, N], `${id} killed ${delayMs} ms into the import came back with ${n} workers`).toContain(n)
      seen.push(n)
    }
    // Killed once part of it is routable (slices being applied): the whole state was logged before
    // the first slice, so it comes back with all of it.
    const c = await start('k-mid')
    const pending = client.upload(`${c.url}/state/import`, update, 'application/octet-stream', { timeoutMs: 120_000 }).catch(() => null)
    let partial = 0
    while (partial <= 0) {
      partial = await workers(c)
      if (partial <= 0) await new Promise(resolve => setTimeout(resolve, 25))
    }
    await c.kill()
    await pending
    running.splice(running.indexOf(c), 1)
    const back = await start('k-mid')
    expect(await settledWorkers(back), `killed with ${partial} of ${N} workers applied`).toBe(N)
    // Whatever it came back with, the import can be made (again) and completes.
    const again = await client.upload(`${running[0].url}/state/import`, update, 'application/octet-stream', { timeoutMs: 120_000 })
    expect(again.status).toBe(200)
    expect(again.body.workers).toBe(N)
    console.log(`workers after kill -9 at 50, 600, 1500 ms into the import: ${seen.join(', ')}; killed with ${partial} applied: all back`)
  }, 600_000)
})
