/**
 * Rotating the mesh key of a running mesh, as docs/operations.md tells an
 * operator to: three real `capmesh controller` processes, each with its own
 * key file (three hosts), and registrations streaming into all three the
 * whole time. The key changes with `capmesh mesh-key`: install the new key
 * everywhere (picked up by polling), wait until every controller accepts it,
 * make it primary everywhere (picked up on SIGHUP), wait, remove the old
 * one everywhere (polling; connections keyed with it are re-dialled).
 *
 * What must hold: every registration acknowledged with 200 is routable on
 * every controller afterwards; no controller is without any peer for
 * longer than a reconnect interval (sampled from /mesh every 50 ms); no
 * connection is ever refused for its key; at the end every controller
 * accepts only the new key and every connection uses it.
 */
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureMeshKey, meshKeyId } from '../../src/gossip/index.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import { capmesh } from '../helpers/cli.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { scrape } from '../helpers/metrics.ts'

const RECONNECT_MS = 1000
/** The registration stream's bounds: it stops at whichever comes first (after the rotation ends). */
const MAX_REGISTRATIONS = 3000
const MAX_STREAM_MS = 90_000

let bed: TestBed
const children: ChildController[] = []
const logs = new Map<string, Array<Record<string, any>>>()

beforeAll(async () => { bed = await testBed('key-rotation') })
afterAll(async () => {
  await Promise.all(children.splice(0).map(async c => { await c.stop() }))
  await bed.cleanup()
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const get = async (base: string, path: string) => await bed.client.json('GET', base + path)

async function start (id: string, keyFile: string, bootstrap: string[]): Promise<ChildController> {
  const log: Array<Record<string, any>> = []
  logs.set(id, log)
  const c = await spawnController({
    id,
    args: [
      '--id', id, '--host', '127.0.0.1', '--https-port', '0', '--p2p-port', '0',
      '--data-dir', join(bed.root, id), '--tls-dir', bed.tlsDir, '--mesh-key', keyFile,
      ...bootstrap.flatMap(a => ['--bootstrap', a]),
      // Nothing expires while the test runs (the stream does not heartbeat): every loss would be the rotation's.
      '--heartbeat-interval', '1m', '--unhealthy-after', '5m', '--stale-after', '10m',
      '--sync-interval', '1s', '--reconnect-interval', `${RECONNECT_MS}ms`, '--log-level', 'info'
    ],
    onLog: line => { if (typeof line === 'object') log.push(line) }
  })
  children.push(c)
  return c
}

/** Samples every controller's connected peers every 50 ms; tells the longest time any of them had none. */
class LinkWatch {
  private readonly zeroSince = new Map<string, number>()
  readonly longestAlone = new Map<string, number>()
  private stopped = false
  private readonly loop: Promise<void>

  constructor (controllers: ChildController[]) {
    this.loop = (async () => {
      while (!this.stopped) {
        await Promise.all(controllers.map(async c => {
          const res = await get(c.url, '/mesh').catch(() => null)
          const now = performance.now()
          if (res?.status !== 200) return
          if (res.body.connected_peers === 0) {
            if (!this.zeroSince.has(c.id)) this.zeroSince.set(c.id, now)
          } else {
            const since = this.zeroSince.get(c.id)
            if (since != null) this.longestAlone.set(c.id, Math.max(this.longestAlone.get(c.id) ?? 0, now - since))
            this.zeroSince.delete(c.id)
          }
        }))
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    })()
  }

  async stop (): Promise<Map<string, number>> {
    this.stopped = true
    await this.loop
    // Still alone at the end counts up to now.
    for (const [id, since] of this.zeroSince) this.longestAlone.set(id, Math.max(this.longestAlone.get(id) ?? 0, performance.now() - since))
    return this.longestAlone
  }
}

/** Registers new workers at the controllers in turn until stopped (or its bounds); remembers the acknowledged ones. */
class RegistrationStream {
  readonly acked: string[] = []
  attempts = 0
  private stopped = false
  private readonly loops: Array<Promise<void>>

  constructor (controllers: ChildController[], lanes = 2) {
    const t0 = performance.now()
    this.loops = Array.from({ length: lanes }, async (_, lane) => {
      for (let i = 0; !this.stopped && this.attempts < MAX_REGISTRATIONS && performance.now() - t0 < MAX_STREAM_MS; i++) {
        const id = `w${lane}-${i}`
        const c = controllers[(lane + i) % controllers.length]
        this.attempts++
        const res = await post(c.url, '/register', { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }).catch(() => null)
        if (res?.status === 200) this.acked.push(id)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })
  }

  async stop (): Promise<void> {
    this.stopped = true
    await Promise.all(this.loops)
  }
}

const health = async (c: ChildController): Promise<{ primary: string, accepted: string[] }> => {
  const h = (await get(c.url, '/health')).body.mesh
  return { primary: h.mesh_key_id, accepted: h.mesh_key_ids }
}

async function cli (args: string[]): Promise<string> {
  const r = await capmesh(args)
  if (r.code !== 0) throw new Error(`capmesh ${args.join(' ')}: exit ${r.code}: ${r.stderr}`)
  return r.stdout
}

describe('mesh key rotation', () => {
  it('install → use → remove on a running mesh loses no acknowledged registration and cuts no controller off', async () => {
    const first = ensureMeshKey(join(bed.tlsDir, 'mesh.key'))
    const oldId = meshKeyId(first.key)
    const files = ['k0', 'k1', 'k2'].map(id => {
      const f = join(bed.root, `${id}.key`)
      copyFileSync(join(bed.tlsDir, 'mesh.key'), f)
      return f
    })
    const k0 = await start('k0', files[0], [])
    const k1 = await start('k1', files[1], [k0.p2p[0]])
    const k2 = await start('k2', files[2], [k0.p2p[0]])
    const all = [k0, k1, k2]
    await eventually(async () => (await Promise.all(all.map(async c => (await get(c.url, '/mesh')).body.connected_peers))).every(n => n === 2), 'a full mesh', 20_000, 100)

    const t0 = performance.now()
    const phase = (what: string): void => { console.log(`${Math.round(performance.now() - t0)} ms: ${what} (${stream.acked.length} acknowledged)`) }
    const watch = new LinkWatch(all)
    const stream = new RegistrationStream(all)
    await eventually(() => stream.acked.length >= 50, 'registrations under way', 20_000, 50)

    phase('stream started')
    // 1. Install the new key everywhere: generated on the first host, copied to the others.
    const newKeyFile = join(bed.root, 'new.key')
    const out = await cli(['mesh-key', 'install', '--mesh-key', files[0], '--out', newKeyFile])
    const newId = /installed key ([0-9a-f]{16})/.exec(out)![1]
    await Promise.all(files.slice(1).map(async f => await cli(['mesh-key', 'install', '--mesh-key', f, '--from', newKeyFile])))
    // Picked up by polling (no signal): wait until every controller accepts it, still keying with the old one.
    await eventually(async () => (await Promise.all(all.map(health))).every(h => h.primary === oldId && h.accepted.join() === `${oldId},${newId}`),
      'every controller to accept the new key', 15_000, 100)

    phase('new key accepted everywhere')
    // 2. Make it the primary everywhere, and tell each controller at once (SIGHUP).
    await Promise.all(files.map(async (f, i) => {
      await cli(['mesh-key', 'use', newId, '--mesh-key', f])
      process.kill(all[i].pid, 'SIGHUP')
    }))
    await eventually(async () => (await Promise.all(all.map(health))).every(h => h.primary === newId && h.accepted.join() === `${newId},${oldId}`),
      'every controller to key new connections with the new key', 15_000, 100)
    phase('new key primary everywhere')
    // Registrations go on for a moment with both keys in use.
    const mid = stream.acked.length
    await eventually(() => stream.acked.length >= mid + 50, 'more registrations', 20_000, 50)

    // 3. Remove the old key, one host at a time; each re-keys its connections that used it (polling, no signal).
    for (const [i, f] of files.entries()) {
      await cli(['mesh-key', 'remove', oldId, '--mesh-key', f])
      await eventually(async () => {
        const m = (await get(all[i].url, '/mesh')).body
        return m.mesh_keys.length === 1 && m.mesh_keys[0].id === newId && m.connected_peers === 2 && m.mesh_keys[0].connections >= 2
      }, `${all[i].id} to accept only the new key, connected to both peers with it`, 15_000, 100)
    }
    phase('old key removed everywhere')
    const late = stream.acked.length
    await eventually(() => stream.acked.length >= late + 50, 'registrations after the rotation', 20_000, 50)
    await stream.stop()
    const alone = await watch.stop()
    phase(`stream stopped; longest without any peer: ${all.map(c => `${c.id} ${Math.round(alone.get(c.id) ?? 0)} ms`).join(', ')}`)

    // Every connection now uses the new key, on both ends, and nobody refused a connection for its key.
    for (const c of all) {
      const m = (await get(c.url, '/mesh')).body
      // One key, accepted and primary, keying every connection (a removed key still in use would be listed too).
      expect(m.mesh_keys.map((k: { id: string, primary: boolean, accepted: boolean }) => `${k.id} primary=${k.primary} accepted=${k.accepted}`), c.id)
        .toEqual([`${newId} primary=true accepted=true`])
      expect(m.mesh_keys[0].connections, c.id).toBeGreaterThanOrEqual(2)
      expect(m.connected_peers).toBe(2)
      const metrics = await scrape(bed.client, c.url)
      expect(metrics.sum('capmesh_mesh_key_mismatch_total'), `${c.id}: connections refused for their key`).toBe(0)
      expect(metrics.sum('capmesh_mesh_keys')).toBe(1)
      expect(metrics.samples.find(s => s.name === 'capmesh_info')?.labels.mesh_key_id).toBe(newId)
      expect(logs.get(c.id)!.some(r => String(r.msg).startsWith('mesh keys reloaded: primary'))).toBe(true)
    }
    expect(all.some(c => logs.get(c.id)!.some(r => String(r.msg).startsWith('re-keying the connection'))), 'some connection was re-keyed').toBe(true)

    // No controller was ever without a peer for longer than a reconnect interval.
    for (const c of all) expect(alone.get(c.id) ?? 0, `${c.id}: longest time with no peer (ms)`).toBeLessThan(RECONNECT_MS)

    // Every acknowledged registration is routable on every controller.
    expect(stream.acked.length).toBeGreaterThanOrEqual(150)
    await eventually(async () => {
      const hashes = await Promise.all(all.map(async c => (await get(c.url, '/mesh')).body.registry_hash))
      return hashes.every(h => h === hashes[0])
    }, 'one registry everywhere', 20_000, 100)
    const missing: string[] = []
    for (const c of all) {
      const listed = (await get(c.url, '/workers?state=healthy&limit=10000')).body.workers as Array<{ worker_id: string }>
      const healthy = new Set(listed.map(w => w.worker_id))
      for (const id of stream.acked) if (!healthy.has(id)) missing.push(`${id}@${c.id}`)
      // And /route agrees, for a sample spread over the whole stream.
      for (const id of stream.acked.filter((_, j) => j % 10 === 0)) {
        const r = await post(c.url, '/route', { verb: 'invoke', capability: `cap-${id}` })
        if (r.status !== 200 || r.body.worker_id !== id) missing.push(`${id}@${c.id} (route ${r.status})`)
      }
    }
    phase('checked')
    expect(missing, `acknowledged registrations not routable (of ${stream.acked.length} acknowledged, ${stream.attempts} attempted)`).toEqual([])
  }, 180_000)
})
