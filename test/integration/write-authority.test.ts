/**
 * Write authority on a real mesh: three controllers (real TCP libp2p,
 * gossipsub, anti-entropy, HTTPS) and a rogue — a real libp2p node admitted
 * to the mesh (an admitted controller that misbehaves) — that sends updates
 * it forged into another controller's segment, over gossip and over sync;
 * plus a tampered export and a tampered data dir.
 *
 * What must hold everywhere: nothing forged is routed to, nothing valid is
 * lost, every refusal is logged with its sender and counted in /metrics
 * (capmesh_registry_refused_total{kind="unsigned"}), and the controllers stay
 * up. Timeouts are long so that nothing legitimate changes the registries
 * while an attack runs.
 */
import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { crc32 } from 'node:zlib'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { localPreset, resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { encodeEnvelope, Kind, PeerSeals, readMeshKey, REGISTRY_TOPIC, SYNC_PROTOCOL } from '../../src/gossip/index.ts'
import { buildDigest, encodeDigest, LIVENESS_TOPIC } from '../../src/membership/index.ts'
import { ROOT, SEAL_KEY, SegmentDigest, decodeSeal, encodeSeal, entryLeaf, makeSeal } from '../../src/registry/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { scrape } from '../helpers/metrics.ts'
import { diffFrames, helloFrame, rogueNode, type RogueNode } from '../helpers/rogue.ts'

let bed: TestBed
let controllers: Controller[] = []
let rogues: RogueNode[] = []
/** Every JSON log record, by controller id. */
const records = new Map<string, Array<Record<string, any>>>()

const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100, syncIntervalMs: 60_000 }

async function startController (id: string, bootstrap: string[]): Promise<Controller> {
  const config = resolveControllerConfig(localPreset({ id, dataDir: join(bed.root, id), tlsDir: bed.tlsDir, bootstrap, ...calm }))
  const lines = records.get(id) ?? []
  records.set(id, lines)
  const sink = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.length === 0) continue
        try { lines.push(JSON.parse(line)) } catch {}
      }
      done()
    }
  })
  const c = new Controller({ config, logger: pino({ level: 'info', base: { controller: id } }, sink) })
  await c.start()
  controllers.push(c)
  return c
}

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const workerBody = (id: string, url = `https://127.0.0.1:7000/${id}`) => ({ worker_id: id, worker_url: url, capabilities: [capability(`cap-${id}`)] })
const routeTo = async (c: Controller, cap: string) => await post(c.url, '/route', { verb: 'invoke', capability: cap })

let a: Controller
let b: Controller
let c: Controller

beforeEach(async () => {
  bed = await testBed('write-authority')
  records.clear()
  a = await startController('a', [])
  b = await startController('b', [a.p2p.multiaddrs[0]])
  c = await startController('c', [a.p2p.multiaddrs[0]])
  await eventually(() => controllers.every(x => x.p2p.connectedPeers().filter(p => controllers.some(o => o.p2p.peerId === p)).length === 2), 'a full mesh', 15_000)
  for (let i = 0; i < 3; i++) expect((await post(a.url, '/register', workerBody(`a-${i}`))).status).toBe(200)
  expect((await post(b.url, '/register', workerBody('b-0'))).status).toBe(200)
  await eventually(() => controllers.every(x => x.core.registry.size === 4 && x.core.registryHash === a.core.registryHash), 'four workers everywhere')
})

afterEach(async () => {
  for (const n of rogues.splice(0)) await Promise.resolve(n.stop()).catch(() => {})
  for (const x of controllers.splice(0)) await x.stop().catch(() => {})
  await bed.cleanup()
})

// ------------------------------------------------------------------- the rogue

/** A rogue admitted to the mesh (its line in the allow list, as an operator would add it), connected to every controller. */
async function admittedRogue (): Promise<RogueNode> {
  const node = await rogueNode(readMeshKey(join(bed.tlsDir, 'mesh.key')))
  rogues.push(node)
  appendFileSync(join(bed.tlsDir, 'peers.allow'), `rogue ${node.peerId.toString()}\n`)
  for (const x of controllers) await node.dial(multiaddr(x.p2p.multiaddrs[0]))
  node.services.pubsub.subscribe(REGISTRY_TOPIC)
  node.services.pubsub.subscribe(LIVENESS_TOPIC)
  const outbound = (node.services.pubsub as unknown as { streamsOutbound: Map<string, unknown> }).streamsOutbound
  await eventually(() => controllers.every(x => outbound.has(x.p2p.peerId) && node.services.pubsub.getSubscribers(REGISTRY_TOPIC).some(p => p.toString() === x.p2p.peerId)),
    'the rogue to see every controller subscribed, with a stream open to each', 10_000)
  return node
}

/** What the rogue knows: a copy of the registry document (anyone on the mesh can pull it by sync). */
function replicaOf (x: Controller): Y.Doc {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, x.core.registry.encodeState())
  return doc
}

/** The update an edit of `replica` makes. */
function forge (replica: Y.Doc, edit: (segments: Y.Map<unknown>) => void): Uint8Array {
  const sv = Y.encodeStateVector(replica)
  replica.transact(() => { edit(replica.getMap(ROOT)) })
  return Y.encodeStateAsUpdate(replica, sv)
}

const segmentOf = (segments: Y.Map<unknown>, owner: string): [string, Y.Map<unknown>] => {
  const key = [...segments.keys()].find(k => k.startsWith(`${owner}/`))
  if (key == null) throw new Error(`no segment of ${owner}`)
  return [key, segments.get(key) as Y.Map<unknown>]
}

const forged = (id: string, owner = 'a'): string => JSON.stringify({
  worker_id: id, worker_url: 'https://198.51.100.66:8443/', capabilities: [capability(`cap-${id}`)], incarnation: 50, owner, registered_at: Date.now()
})

/** Seals `seg` (stored under `key`) as `sealer` would: over exactly its entries, the next sequence number. */
function resealAs (sealer: PeerSeals, key: string, seg: Y.Map<unknown>): void {
  const digest = new SegmentDigest()
  for (const [k, v] of seg.entries()) if (k !== SEAL_KEY) digest.set(k, entryLeaf(k, v as string))
  const seq = (decodeSeal(seg.get(SEAL_KEY))?.seq ?? 0) + 1
  seg.set(SEAL_KEY, encodeSeal(makeSeal(sealer, key, seq, digest.root())))
}

function sealerOf (node: RogueNode): PeerSeals {
  const s = new PeerSeals(() => undefined)
  s.use(node.privateKey)
  return s
}

interface Snapshot { hash: string, state: Buffer, workers: string }

function snapshots (): Snapshot[] {
  return controllers.map(x => ({ hash: x.core.registryHash, state: Buffer.from(x.core.registry.encodeState()), workers: JSON.stringify([...x.core.registry.workers()]) }))
}

/** Nothing the attack sent changed any registry, and every controller still answers. */
async function unchanged (before: Snapshot[]): Promise<void> {
  const after = snapshots()
  const changed = after.flatMap((s, i) => s.state.equals(before[i].state) && s.workers === before[i].workers ? [] : [controllers[i].config.id])
  expect(changed, 'controllers whose registry the attack changed').toEqual([])
  for (const x of controllers) expect((await bed.client.json('GET', `${x.url}/health`)).status).toBe(200)
}

const refusedCount = async (x: Controller, origin: string): Promise<number> =>
  (await scrape(bed.client, x.url)).sum('capmesh_registry_refused_total', { origin, kind: 'unsigned' })

function loggedFrom (id: string, msg: string, peer: string): Record<string, any> | undefined {
  return records.get(id)?.find(r => typeof r.msg === 'string' && r.msg.startsWith(msg) && r.peer === peer)
}

/** Nothing forged is routable anywhere, and every valid worker still is. */
async function routesOnlyValid (forgedCaps: string[]): Promise<void> {
  for (const x of controllers) {
    for (const cap of forgedCaps) expect((await routeTo(x, cap)).status, `${cap} at ${x.config.id}`).toBe(404)
    for (const id of ['a-0', 'a-1', 'a-2', 'b-0']) {
      const r = await routeTo(x, `cap-${id}`)
      expect(r.status, `${id} at ${x.config.id}`).toBe(200)
      expect(r.body.worker_url).toBe(`https://127.0.0.1:7000/${id}`)
    }
  }
}

// ------------------------------------------------------------------- gossip

type Forgery = (segments: Y.Map<unknown>, rogue: RogueNode) => void

const gossipForgeries: Array<[string, Forgery]> = [
  ['an entry forged into another controller\'s segment', segments => { segmentOf(segments, 'a')[1].set('evil', forged('evil')) }],
  ['an existing entry moved to the attacker\'s URL', segments => { segmentOf(segments, 'a')[1].set('a-0', forged('a-0')) }],
  ['an existing entry deleted', segments => { segmentOf(segments, 'a')[1].delete('a-1') }],
  ['a forged entry resealed with the rogue\'s own key', (segments, rogue) => {
    const [key, seg] = segmentOf(segments, 'a')
    seg.set('evil', forged('evil'))
    resealAs(sealerOf(rogue), key, seg)
  }],
  ['a new segment whose key claims controller a, sealed by the rogue', (segments, rogue) => {
    const key = 'a/0zzzzzzzz.0badc0de'
    const seg = new Y.Map<unknown>()
    segments.set(key, seg)
    seg.set('evil', forged('evil'))
    resealAs(sealerOf(rogue), key, seg)
  }],
  ['a forged entry with a seal of a\'s key and a garbage signature', segments => {
    const [, seg] = segmentOf(segments, 'a')
    seg.set('evil', forged('evil'))
    const seal = decodeSeal(seg.get(SEAL_KEY))!
    seg.set(SEAL_KEY, encodeSeal({ ...seal, seq: seal.seq + 1, sig: Buffer.alloc(64, 0x5a).toString('base64') }))
  }]
]

describe('an admitted controller that forges writes into another\'s segment', () => {
  it.each(gossipForgeries)('%s, sent as gossip, is refused everywhere, logged with the sender, counted, and changes nothing', async (_what, edit) => {
    const rogue = await admittedRogue()
    const before = snapshots()
    const counts = await Promise.all(controllers.map(async x => await refusedCount(x, 'remote')))
    const update = forge(replicaOf(a), segments => { edit(segments, rogue) })
    const res = await rogue.services.pubsub.publish(REGISTRY_TOPIC, encodeEnvelope({ kind: Kind.update, controllerId: 'rogue', payload: update }))
    expect(res.recipients.length).toBe(3)
    const peer = rogue.peerId.toString()
    await eventually(() => controllers.every(x => loggedFrom(x.config.id, 'rejected a malformed gossip message', peer) != null), 'every controller to log the refusal with the rogue\'s peer id', 5_000)
    for (const x of controllers) expect(loggedFrom(x.config.id, 'rejected a malformed gossip message', peer)?.err).toMatch(/segment a\//)
    for (const [i, x] of controllers.entries()) expect(await refusedCount(x, 'remote') - counts[i], `refusals counted at ${x.config.id}`).toBe(1)
    await unchanged(before)
    await routesOnlyValid(['cap-evil'])
  })

  it('a forged entry mixed into an update that is otherwise the owner\'s own is refused whole; the owner\'s own update still arrives', async () => {
    const rogue = await admittedRogue()
    const replica = replicaOf(a)
    // The owner's next update, as the rogue receives it by gossip.
    const genuine = new Promise<Uint8Array>(resolve => {
      a.core.registry.once('update', u => { resolve(u) })
    })
    expect((await post(a.url, '/register', workerBody('a-new'))).status).toBe(200)
    Y.applyUpdate(replica, await genuine)
    const mixed = Y.mergeUpdates([await genuine, forge(replica, segments => { segmentOf(segments, 'a')[1].set('evil', forged('evil')) })])
    await rogue.services.pubsub.publish(REGISTRY_TOPIC, encodeEnvelope({ kind: Kind.update, controllerId: 'rogue', payload: mixed }))
    await eventually(async () => (await Promise.all(controllers.map(async x => (await routeTo(x, 'cap-a-new')).status))).every(s => s === 200), 'a-new to be routable everywhere', 10_000)
    await eventually(() => controllers.every(x => loggedFrom(x.config.id, 'rejected a malformed gossip message', rogue.peerId.toString()) != null), 'the mixed update to be refused everywhere', 5_000)
    await routesOnlyValid(['cap-evil'])
  })

  it('a replay of an old signed registration after the worker failed over does not move it back', async () => {
    const rogue = await admittedRogue()
    const old = new Promise<Uint8Array>(resolve => { a.core.registry.once('update', u => { resolve(u) }) })
    expect((await post(a.url, '/register', workerBody('mover', 'https://127.0.0.1:7000/first'))).status).toBe(200)
    const oldUpdate = await old
    await eventually(() => controllers.every(x => x.core.registry.get('mover')?.owner === 'a'), 'mover at a everywhere')
    // It fails over to b: a newer incarnation there; a drops its own entry.
    expect((await post(b.url, '/register', workerBody('mover', 'https://127.0.0.1:7000/second'))).status).toBe(200)
    await eventually(() => controllers.every(x => x.core.registry.get('mover')?.owner === 'b'), 'mover at b everywhere')
    // The rogue replays a's old update, as gossip and as a sync DIFF.
    await rogue.services.pubsub.publish(REGISTRY_TOPIC, encodeEnvelope({ kind: Kind.update, controllerId: 'rogue', payload: oldUpdate }))
    const stream = await rogue.dialProtocol(peerIdFromString(c.p2p.peerId), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    await lpStream(stream).writeV([helloFrame('rogue', Y.encodeStateVector(replicaOf(c))), ...diffFrames(oldUpdate)])
    await new Promise(resolve => setTimeout(resolve, 500))
    for (const x of controllers) {
      const r = await routeTo(x, 'cap-mover')
      expect(r.status).toBe(200)
      expect(r.body.worker_url, `mover at ${x.config.id}`).toBe('https://127.0.0.1:7000/second')
    }
  })
})

describe('an admitted controller that speaks in another\'s name', () => {
  it('a liveness digest sent as controller a (marking a\'s workers unhealthy) is rejected everywhere and changes no route', async () => {
    const rogue = await admittedRogue()
    const peer = rogue.peerId.toString()
    const [digest] = buildDigest({ epoch: 'spoof', seq: 1_000_000, owned: 3, registry_hash: a.core.registryHash, self_preservation: false },
      ['a-0', 'a-1', 'a-2'].map(id => ({ id, state: 'unhealthy' as const, load: 0 })))
    const res = await rogue.services.pubsub.publish(LIVENESS_TOPIC, encodeEnvelope({ kind: Kind.message, controllerId: 'a', payload: encodeDigest(digest) }))
    expect(res.recipients.length).toBe(3)
    await eventually(() => controllers.every(x => loggedFrom(x.config.id, 'rejected a malformed gossip message', peer) != null), 'every controller to reject the digest', 5_000)
    for (const x of controllers) expect(loggedFrom(x.config.id, 'rejected a malformed gossip message', peer)?.err).toBe('speaks as controller a but is admitted as rogue')
    await routesOnlyValid([])
  })
})

// --------------------------------------------------------------------- sync

describe('forged writes over anti-entropy', () => {
  it('a DIFF carrying an entry forged into another controller\'s segment aborts the exchange, is logged and counted, and changes nothing', async () => {
    const rogue = await admittedRogue()
    const before = snapshots()
    const count = await refusedCount(c, 'remote')
    const replica = replicaOf(c)
    const sv = Y.encodeStateVector(replica)
    const update = forge(replica, segments => { segmentOf(segments, 'b')[1].set('evil', forged('evil', 'b')) })
    const stream = await rogue.dialProtocol(peerIdFromString(c.p2p.peerId), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
    await lpStream(stream).writeV([helloFrame('rogue', sv), ...diffFrames(update)])
    const peer = rogue.peerId.toString()
    // c may also have failed an exchange of its own with the rogue (which serves no sync protocol) before:
    // the line that counts is the refusal of this DIFF, naming the forged segment.
    await eventually(() => records.get('c')?.some(r => typeof r.msg === 'string' && r.msg.startsWith('sync exchange failed') && r.peer === peer && /segment b\//.test(String(r.err))),
      'c to abort the exchange with the rogue, naming segment b', 5_000)
    expect(await refusedCount(c, 'remote') - count).toBe(1)
    await unchanged(before)
    await routesOnlyValid(['cap-evil'])
  })
})

// --------------------------------------------------- an export and a data dir

describe('tampered state outside the mesh', () => {
  it('an import whose document carries a forged entry is refused whole with the segment named', async () => {
    const exported = (await bed.client.json('GET', `${a.url}/state/export`)).body
    const doc = new Y.Doc()
    Y.applyUpdate(doc, Buffer.from(exported.update, 'base64'))
    forge(doc, segments => { segmentOf(segments, 'a')[1].set('evil', forged('evil')) })
    const tampered = { ...exported, update: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64') }
    const before = snapshots()
    const count = await refusedCount(b, 'import')
    const res = await post(b.url, '/state/import', tampered)
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ error: 'unsigned_write', code: 'CAPMESH_ERR_UNSIGNED_WRITE' })
    expect(res.body.message).toMatch(/segment a\//)
    expect(await refusedCount(b, 'import') - count).toBe(1)
    await unchanged(before)
    // The untampered export imports (every seal in it checks out): nothing new, nothing lost.
    const ok = await post(b.url, '/state/import', exported)
    expect(ok.status).toBe(200)
    await routesOnlyValid(['cap-evil'])
  })

  it('a record forged into a controller\'s data dir is refused at replay, logged and counted; the rest is restored', async () => {
    const forgedUpdate = forge(replicaOf(c), segments => { segmentOf(segments, 'a')[1].set('evil', forged('evil')) })
    await c.stop()
    controllers = controllers.filter(x => x !== c)
    const log = join(bed.root, 'c', 'registry', 'updates.log')
    const head = Buffer.alloc(8)
    head.writeUInt32LE(forgedUpdate.length, 0)
    head.writeUInt32LE(crc32(forgedUpdate), 4)
    appendFileSync(log, Buffer.concat([head, forgedUpdate]))
    expect(readFileSync(log).length).toBeGreaterThan(0)
    c = await startController('c', [a.p2p.multiaddrs[0]])
    expect(c.core.registry.get('evil')).toBeUndefined()
    expect(c.core.registry.size).toBe(4)
    expect(records.get('c')?.some(r => r.msg === 'skipped an unreadable record in the data dir' && /segment a\//.test(r.err))).toBe(true)
    expect(await refusedCount(c, 'load')).toBe(1)
    await eventually(() => controllers.every(x => x.core.registryHash === a.core.registryHash), 'c to agree with the others again')
    await routesOnlyValid(['cap-evil'])
  })
})
