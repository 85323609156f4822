/**
 * A hostile peer on the mesh: a real extra libp2p node (TCP, the mesh key,
 * noise, yamux, identify, gossipsub — the same stack as src/gossip/mesh.ts)
 * dials a controller, subscribes to both topics and publishes malformed envelopes,
 * malformed Yjs updates and oversized messages; it also speaks garbage on
 * `/capmesh/sync/2.0.0`, as the side that opens the stream and as the side
 * that answers one.
 *
 * What must hold: the attacked controller stays up (/health 200), its
 * registry is unchanged (registry_hash, /workers, and the encoded document
 * byte for byte), its peers are unaffected, every rejection is logged with
 * the sending peer, and valid traffic still flows afterwards.
 *
 * The attacker holds the mesh key and is in the peer allow list (an
 * admitted insider: a compromised controller host): what it sends is
 * stopped by validation. Without the key, or with another mesh's, a node
 * cannot even connect (last describe block); with the key but not in the
 * allow list, neither (test/integration/admission.test.ts).
 *
 * Timeouts are long here (unhealthy 60 s) so nothing legitimate changes the
 * registry while the attack runs: any change is the attacker's doing.
 */
import { randomBytes } from 'node:crypto'
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { byteStream, lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { localPreset, resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { encodeEnvelope, Kind, readMeshKey, REGISTRY_TOPIC, SYNC_PROTOCOL } from '../../src/gossip/index.ts'
import { LIVENESS_CHANGES_TOPIC, LIVENESS_TOPIC } from '../../src/membership/index.ts'
import { VERSION } from '../../src/gossip/envelope.ts'
import { scrape } from '../helpers/metrics.ts'
import { rogueNode } from '../helpers/rogue.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

type Node = Libp2p<{ pubsub: GossipSub, identify: unknown }>

let bed: TestBed
let controllers: Controller[] = []
let nodes: Node[] = []
/** Every JSON log record of the attacked controller. */
let records: Array<Record<string, any>> = []
let victim: Controller
let others: Controller[]

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const get = async (base: string, path: string) => await bed.client.json('GET', base + path)

function workerBody (id: string): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
}

/** Long timeouts: no worker goes unhealthy or stale while the test runs. */
// No periodic anti-entropy: a victim busy in one answers an attack's HELLO with BUSY and never reads the rest.
const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100, syncIntervalMs: 60_000 }

async function startController (id: string, bootstrap: string[], log = false, meshKey?: string): Promise<Controller> {
  const config = resolveControllerConfig(localPreset({ id, dataDir: join(bed.root, id), tlsDir: bed.tlsDir, bootstrap, meshKey, ...calm }))
  let logger
  if (log) {
    const sink = new Writable({
      write (chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) {
          if (line.length === 0) continue
          try { records.push(JSON.parse(line)) } catch {}
        }
        done()
      }
    })
    logger = pino({ level: 'debug', base: { controller: id } }, sink)
  }
  const c = new Controller({ config, logger })
  await c.start()
  controllers.push(c)
  return c
}

/** Three controllers (m0 is the one attacked), three workers at each, converged. */
beforeEach(async () => {
  bed = await testBed('malformed')
  records = []
  victim = await startController('m0', [], true)
  others = [
    await startController('m1', [victim.p2p.multiaddrs[0]]),
    await startController('m2', [victim.p2p.multiaddrs[0]])
  ]
  const all = [victim, ...others]
  await eventually(() => all.every(c => c.p2p.connectedPeers().filter(p => all.some(o => o.p2p.peerId === p)).length === 2), 'a full mesh', 15_000)
  for (const [i, c] of all.entries()) {
    for (let j = 0; j < 3; j++) expect((await post(c.url, '/register', workerBody(`w${i}-${j}`))).status).toBe(200)
  }
  await eventually(() => all.every(c => c.core.registry.size === 9 && c.core.registryHash === victim.core.registryHash), 'nine workers everywhere')
  // And each controller's word about its own workers (its digest) has reached the others: all healthy everywhere.
  await eventually(() => all.every(c => c.core.stateCounts().healthy === 9), 'nine healthy workers everywhere')
})

afterEach(async () => {
  for (const n of nodes.splice(0)) {
    try { await n.stop() } catch {}
  }
  for (const c of controllers.splice(0)) await c.stop().catch(() => {})
  await bed.cleanup()
})

interface Snapshot { hash: string, workers: unknown, state: Buffer }

async function snapshot (c: Controller): Promise<Snapshot> {
  const res = await get(c.url, '/workers?limit=10000')
  expect(res.status).toBe(200)
  // The listing without its change index: that also counts controller events, and the attacker's
  // admitted link is one (what must not change is the registry and its workers).
  const { index: _index, ...workers } = res.body
  return { hash: (await get(c.url, '/mesh')).body.registry_hash, workers, state: Buffer.from(c.core.registry.encodeState()) }
}

async function snapshots (): Promise<Snapshot[]> {
  return await Promise.all([victim, ...others].map(snapshot))
}

/** The attacked controller is up, and no controller's registry changed in any way. */
async function unchanged (before: Snapshot[]): Promise<void> {
  const health = await get(victim.url, '/health')
  expect(health.status).toBe(200)
  expect(health.body.controller_id).toBe('m0')
  const after = await snapshots()
  const changed: string[] = []
  for (const [i, s] of after.entries()) {
    const name = ['m0', 'm1', 'm2'][i]
    if (s.hash !== before[i].hash) changed.push(`${name}: registry_hash`)
    if (JSON.stringify(s.workers) !== JSON.stringify(before[i].workers)) changed.push(`${name}: /workers`)
    if (!s.state.equals(before[i].state)) changed.push(`${name}: encoded registry`)
  }
  expect(changed, 'what the attack changed').toEqual([])
}

/** The victim's encoded registry is no longer what it was (an update was applied). */
function changedState (before: Snapshot[]): boolean {
  return !Buffer.from(victim.core.registry.encodeState()).equals(before[0].state)
}

/** Valid traffic still flows: a registration at m1 reaches m0 and m2 and is routable there. */
async function stillFlows (id: string): Promise<void> {
  expect((await post(others[0].url, '/register', workerBody(id))).status).toBe(200)
  await eventually(async () => {
    for (const c of [victim, others[1]]) {
      const r = await post(c.url, '/route', { verb: 'invoke', capability: `cap-${id}` })
      if (r.status !== 200 || r.body.worker_id !== id) return false
    }
    return true
  }, `${id}, registered at m1, to be routable at m0 and m2`, 10_000, 50)
  await eventually(() => [victim, ...others].every(c => c.core.registryHash === victim.core.registryHash), 'one registry hash again')
}

// ------------------------------------------------------------------ the attacker

/** Attackers added to the allow list so far (each under its own controller id). */
let admitted = 0

/**
 * A libp2p node like a controller's (test/helpers/rogue.ts, which spaces
 * creations as libp2p's per-host inbound limit asks), dialled to the victim
 * and subscribed to both topics.
 */
async function attacker (): Promise<Node> {
  const node = await hostileNode(readMeshKey(join(bed.tlsDir, 'mesh.key')))
  // Admitted, as a compromised controller host would be: the controllers read the new line when it dials.
  appendFileSync(join(bed.tlsDir, 'peers.allow'), `evil-${++admitted} ${node.peerId.toString()}\n`)
  await node.dial(multiaddr(victim.p2p.multiaddrs[0]))
  node.services.pubsub.subscribe(REGISTRY_TOPIC)
  node.services.pubsub.subscribe(LIVENESS_TOPIC)
  node.services.pubsub.subscribe(LIVENESS_CHANGES_TOPIC)
  // gossipsub drops (silently) what is published before its outbound stream to a peer is open.
  const outbound = (node.services.pubsub as unknown as { streamsOutbound: Map<string, unknown> }).streamsOutbound
  await eventually(() => outbound.has(victim.p2p.peerId) &&
    [REGISTRY_TOPIC, LIVENESS_TOPIC, LIVENESS_CHANGES_TOPIC].every(t => node.services.pubsub.getSubscribers(t).some(p => p.toString() === victim.p2p.peerId)),
  'the attacker to see the victim subscribed to every topic, with a stream open to it', 5_000)
  return node
}

/** The node alone (not dialled), keyed with `meshKey`, or with none; stopped after the test. */
async function hostileNode (meshKey: Uint8Array | null): Promise<Node> {
  const node = await rogueNode(meshKey)
  nodes.push(node)
  return node
}

function logged (msg: string, peer: string, topic?: string): boolean {
  return records.some(r => typeof r.msg === 'string' && r.msg.startsWith(msg) && r.peer === peer && (topic == null || r.topic === topic))
}

/**
 * Stops an attacker. Done after each case: gossipsub's default peer scoring
 * penalises more than 10 peers on one IP address (IP colocation) and ignores
 * every message from them past 14, and all of these come from 127.0.0.1.
 */
async function retire (node: Node): Promise<void> {
  nodes = nodes.filter(n => n !== node)
  await node.stop()
}

/** Publishes `data` from a fresh attacker and waits until the victim's validator rejected it (logged with the sender). */
async function rejected (topic: string, data: Uint8Array, what: string): Promise<void> {
  const node = await attacker()
  const res = await node.services.pubsub.publish(topic, data)
  expect(res.recipients.map(String), `${what} was sent to the victim`).toContain(victim.p2p.peerId)
  await eventually(() => logged('rejected a malformed gossip message', node.peerId.toString(), topic), `the victim to reject ${what}`, 5_000)
  await retire(node)
}

const enc = new TextEncoder()

function envelope (kind: number, payload: Uint8Array, controllerId = 'evil'): Uint8Array {
  return encodeEnvelope({ kind: kind as Kind, controllerId, payload })
}

function rawEnvelope (head: number[], payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(head.length + payload.length)
  out.set(head)
  out.set(payload, head.length)
  return out
}

/** A Yjs update made by `build` on an empty document. */
function update (build: (doc: Y.Doc) => void): Uint8Array {
  const doc = new Y.Doc()
  doc.transact(() => { build(doc) })
  return Y.encodeStateAsUpdate(doc)
}

const SEGMENT = 'evil/000000001.deadbeef'

function entry (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)], incarnation: 1, owner: 'evil', registered_at: Date.now(), ...extra }
}

function segmentWith (fill: (seg: Y.Map<unknown>) => void): Uint8Array {
  return update(doc => {
    const seg = new Y.Map<unknown>()
    doc.getMap('segments').set(SEGMENT, seg)
    fill(seg)
  })
}

/** Random bytes that cannot pass for an envelope (first byte is not the magic). */
function junk (n: number): Uint8Array {
  const b = randomBytes(n)
  if (b[0] === 0xca) b[0] = 0x00
  return b
}

// ---------------------------------------------------------------- sync frames
// The sync protocol's frames, written by hand: HELLO(id, the largest delta taken (u32), state
// vector), and a DIFF as a header (its length, u32) followed by the delta in one frame (they are
// all below the 1 MiB chunk size).

function hello (controllerId: string, sv: Uint8Array): Uint8Array {
  const id = enc.encode(controllerId)
  return rawEnvelope([1, id.length, ...id, 0x10, 0, 0, 0], sv)
}

/** The frames of a DIFF carrying `u`. */
const diff = (u: Uint8Array): Uint8Array[] => [Uint8Array.of(2, u.length >>> 24, (u.length >>> 16) & 0xff, (u.length >>> 8) & 0xff, u.length & 0xff), u]

/** Opens a sync stream from `node` to the victim. */
async function openSync (node: Node): Promise<Stream> {
  return await node.dialProtocol(peerIdFromString(victim.p2p.peerId), SYNC_PROTOCOL, { signal: AbortSignal.timeout(5_000) })
}

/** Pulls the victim's whole document over a well-formed sync exchange (anyone on the mesh can). */
async function pullState (node: Node): Promise<Y.Doc> {
  const stream = await openSync(node)
  const lp = lpStream(stream, { maxDataLength: 64 * 1024 * 1024 })
  const signal = AbortSignal.timeout(5_000)
  await lp.write(hello('evil', Y.encodeStateVector(new Y.Doc())), { signal })
  await lp.read({ signal })
  const head = (await lp.read({ signal })).subarray()
  const total = new DataView(head.buffer, head.byteOffset).getUint32(1)
  const theirs = new Uint8Array(total)
  for (let got = 0; got < total;) {
    const chunk = (await lp.read({ signal })).subarray()
    theirs.set(chunk, got)
    got += chunk.length
  }
  await lp.writeV(diff(Y.encodeStateAsUpdate(new Y.Doc())), { signal })
  await stream.close({ signal })
  const doc = new Y.Doc()
  Y.applyUpdate(doc, theirs)
  return doc
}

/** The update produced by editing a replica of the victim's document. */
function editReplica (replica: Y.Doc, edit: (segments: Y.Map<unknown>, doc: Y.Doc) => void): Uint8Array {
  const copy = new Y.Doc()
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(replica))
  const updates: Uint8Array[] = []
  copy.on('update', (u: Uint8Array) => { updates.push(u) })
  copy.transact(() => { edit(copy.getMap('segments'), copy) })
  return Y.mergeUpdates(updates)
}

/** The victim's own segment (a Y.Map) in a replica. */
function victimSegment (segments: Y.Map<unknown>): Y.Map<unknown> {
  const key = [...segments.keys()].find(k => k.startsWith('m0/'))!
  return segments.get(key) as Y.Map<unknown>
}

/**
 * At most eight attackers per test (each attacked controller is fresh): with
 * its two peers that keeps the peers on 127.0.0.1 at ten, the most gossipsub's
 * default scoring takes from one address before it penalises all of them
 * (IP colocation; it remembers disconnected peers for an hour).
 */
const validEntryUpdate = (): Uint8Array => segmentWith(seg => { seg.set('x', entry('x')) })
const digestJson = (d: Record<string, unknown>): Uint8Array => enc.encode(JSON.stringify(d))
const goodDigest = { epoch: 'e', seq: 1, owned: 0, exceptions: [], loads: [], registry_hash: '0', self_preservation: false }
const goodChanges = { epoch: 'e', seq: 2, base: 1, owned: 1, states: [['w0-0', 'u']], loads: [], registry_hash: '0', self_preservation: false }
const id4 = [...enc.encode('evil')]

const gossipCases: Array<[string, Array<[string, string, () => Uint8Array]>]> = [
  ['malformed envelopes', [
    ['random bytes', REGISTRY_TOPIC, () => junk(300)],
    ['an empty message', REGISTRY_TOPIC, () => new Uint8Array(0)],
    ['a bad magic byte', REGISTRY_TOPIC, () => rawEnvelope([0xcb, VERSION, Kind.update, 4, ...id4], validEntryUpdate())],
    ['an envelope of capmesh 0.1 (version 1)', REGISTRY_TOPIC, () => rawEnvelope([0xca, 1, Kind.update, 4, ...id4], validEntryUpdate())],
    ['an unknown kind', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, 9, 4, ...id4], validEntryUpdate())],
    ['a truncated controller id', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, Kind.update, 200, ...id4])],
    ['a controller id that is not utf-8', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, Kind.update, 2, 0xff, 0xfe], validEntryUpdate())],
    ['an invalid controller id', REGISTRY_TOPIC, () => envelope(Kind.update, validEntryUpdate(), '../evil id')],
    ['an update without its trace-context count', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, Kind.update, 4, ...id4])],
    ['a trace context with an all-zero trace id', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, Kind.update, 4, ...id4, 1, ...new Array(16).fill(0), ...new Array(8).fill(1), 1], validEntryUpdate())],
    ['more trace contexts than an envelope carries', REGISTRY_TOPIC, () => rawEnvelope([0xca, VERSION, Kind.update, 4, ...id4, 255], validEntryUpdate())]
  ]],
  ['valid envelopes carrying malformed Yjs updates', [
    ['garbage instead of a Yjs update', REGISTRY_TOPIC, () => envelope(Kind.update, junk(200))],
    ['a foreign root type (text)', REGISTRY_TOPIC, () => envelope(Kind.update, update(doc => { doc.getText('evil').insert(0, 'hello') }))],
    ['a foreign root map', REGISTRY_TOPIC, () => envelope(Kind.update, update(doc => { doc.getMap('other').set('k', 1) }))],
    ['a segment with an invalid key', REGISTRY_TOPIC, () => envelope(Kind.update, update(doc => { doc.getMap('segments').set('../../etc/passwd', new Y.Map()) }))],
    ['a plain value where a segment belongs', REGISTRY_TOPIC, () => envelope(Kind.update, update(doc => { doc.getMap('segments').set(SEGMENT, entry('x')) }))],
    ['a malformed entry', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', { worker_id: 'x', nonsense: true }) }))],
    ['an entry stored under another worker\'s key', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('y', entry('x')) }))],
    ['a map nested below a segment', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', new Y.Map()) }))]
  ]],
  ['more malformed entries, misplaced kinds, an oversized message and malformed digests', [
    ['an entry without capabilities', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', entry('x', { capabilities: [] })) }))],
    ['text nested below a segment', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', new Y.Text('t')) }))],
    ['a digest on the registry topic', REGISTRY_TOPIC, () => envelope(Kind.message, digestJson(goodDigest))],
    // A valid update otherwise: were it applied, the registry would show worker "big".
    ['a message just over the 1 MiB gossip limit', REGISTRY_TOPIC, () => envelope(Kind.update,
      segmentWith(seg => { seg.set('big', entry('big', { capabilities: [capability('cap-big', { constraints: { pad: 'x'.repeat(1024 * 1024) } })] })) }))],
    ['a digest that is not JSON', LIVENESS_TOPIC, () => envelope(Kind.message, enc.encode('{"epoch": '))],
    ['a digest with the wrong schema', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson({ epoch: 'e', seq: -1, owned: 'many' }))],
    ['a digest with an extra field', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson({ ...goodDigest, admin: true }))],
    ['a digest with an unknown health code', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson({ ...goodDigest, owned: 1, exceptions: [['w0-0', 'z']] }))]
  ]],
  // Entries travel as their JSON text (capmesh 0.2); the text is checked like an object entry.
  ['malformed entry texts and peer introductions', [
    ['an entry text that is not JSON', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', '{"worker_id": "x", ') }))],
    ['an entry text of the wrong shape', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('x', JSON.stringify({ worker_id: 'x', nonsense: true })) }))],
    ['an entry text for another worker\'s key', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => { seg.set('y', JSON.stringify(entry('x'))) }))],
    ['an entry text nested 100 levels deep', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => {
      seg.set('x', JSON.stringify(entry('x', { capabilities: [capability('cap-x', { input_schema: deep(100) })] })))
    }))],
    // Valid otherwise: were it applied, the registry would show worker "x".
    ['an entry text over the 256 KiB entry limit', REGISTRY_TOPIC, () => envelope(Kind.update, segmentWith(seg => {
      seg.set('x', JSON.stringify(entry('x', { capabilities: [capability('cap-x', { constraints: { pad: 'x'.repeat(300 * 1024) } })] })))
    }))],
    ['a digest whose introduced peers are not addresses', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson({ ...goodDigest, peers: [1, 2, 3] }))],
    ['a digest introducing more than 256 peers', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson({ ...goodDigest, peers: Array.from({ length: 300 }, () => '/ip4/127.0.0.1/tcp/1') }))]
  ]],
  ['malformed word changes', [
    ['word changes that are not JSON', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.message, enc.encode('{"epoch": '))],
    ['a full digest on the changes topic', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.message, digestJson(goodDigest))],
    ['word changes with an unknown health code', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.message, digestJson({ ...goodChanges, states: [['w0-0', 'z']] }))],
    ['word changes with a negative load', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.message, digestJson({ ...goodChanges, loads: [['w0-0', -3]] }))],
    ['word changes that follow a later message', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.message, digestJson({ ...goodChanges, base: 9 }))],
    ['word changes on the liveness topic', LIVENESS_TOPIC, () => envelope(Kind.message, digestJson(goodChanges))],
    ['a registry update on the changes topic', LIVENESS_CHANGES_TOPIC, () => envelope(Kind.update, validEntryUpdate())]
  ]]
]

/** A JSON object nested `n` levels deep. */
function deep (n: number): Record<string, unknown> {
  let v: Record<string, unknown> = {}
  for (let i = 0; i < n; i++) v = { v }
  return v
}

describe('a hostile peer on the gossip topics', () => {
  it.each(gossipCases)('%s are rejected, logged with the sender, counted, and change nothing', async (_group, cases) => {
    const before = await snapshots()
    const rejectedBefore = (await scrape(bed.client, victim.url)).sum('capmesh_gossip_messages_total', { result: 'rejected' })
    for (const [what, topic, data] of cases) await rejected(topic, data(), what)
    // The validator saw every one of them: one warning per attacker, each naming its sender.
    expect(records.filter(r => r.msg?.startsWith('rejected a malformed gossip message')).length).toBe(cases.length)
    // And /metrics counted each one, by topic.
    const m = await scrape(bed.client, victim.url)
    expect(m.sum('capmesh_gossip_messages_total', { result: 'rejected' }) - rejectedBefore).toBe(cases.length)
    for (const topic of new Set(cases.map(c => c[1]))) expect(m.sum('capmesh_gossip_messages_total', { topic, result: 'rejected' })).toBeGreaterThanOrEqual(cases.filter(c => c[1] === topic).length)
    await unchanged(before)
    expect(victim.core.registry.get('x')).toBeUndefined()
    expect(victim.core.registry.get('big')).toBeUndefined()
    await stillFlows('after-gossip-garbage')
  })

  it('a registry update on the liveness topic and random bytes there are rejected; a message larger than gossipsub accepts changes nothing', async () => {
    const before = await snapshots()
    await rejected(LIVENESS_TOPIC, envelope(Kind.update, validEntryUpdate()), 'a registry update on the liveness topic')
    await rejected(LIVENESS_TOPIC, junk(64), 'random bytes on the liveness topic')
    // Larger than gossipsub accepts at all (1 MiB + 64 KiB): its RPC is refused before validation
    // (and gossipsub drops that peer's stream). A valid update otherwise: had it been applied, the
    // registry would show worker "huge".
    const huge = await attacker()
    const res = await huge.services.pubsub.publish(REGISTRY_TOPIC, envelope(Kind.update,
      segmentWith(seg => { seg.set('huge', entry('huge', { capabilities: [capability('cap-huge', { constraints: { pad: 'x'.repeat(2 * 1024 * 1024) } })] })) })))
    expect(res.recipients.map(String)).toContain(victim.p2p.peerId)
    await new Promise(resolve => setTimeout(resolve, 500))
    await unchanged(before)
    expect(victim.core.registry.get('huge')).toBeUndefined()
    await stillFlows('after-oversized')
  })
})

const sv0 = Y.encodeStateVector(new Y.Doc())
type Attack = (stream: Stream) => Promise<void>
const frames = (...fs: Array<() => Uint8Array | Uint8Array[]>): Attack => async stream => {
  const lp = lpStream(stream)
  for (const f of fs) for (const frame of [f()].flat()) await lp.write(frame)
}
const helloOk = (): Uint8Array => hello('evil', sv0)

const syncCases: Array<[string, Array<[string, Attack]>]> = [
  ['garbage frames', [
    ['a length prefix longer than any frame needs', async stream => { await byteStream(stream).write(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00])) }],
    ['a frame longer than the 1 MiB chunk limit', async stream => { await byteStream(stream).write(new Uint8Array([0x80, 0x80, 0x80, 0xa0, 0x01])) }],
    ['an empty frame', frames(() => new Uint8Array(0))],
    ['random bytes as a frame', frames(() => junk(100))],
    ['a frame of an unknown kind', frames(() => rawEnvelope([9, 4, ...id4], sv0))],
    ['a DIFF instead of a HELLO', frames(() => diff(validEntryUpdate()))],
    ['a HELLO with a truncated controller id', frames(() => rawEnvelope([1, 200, ...id4]))],
    ['a HELLO with an invalid controller id', frames(() => hello('no spaces allowed', sv0))]
  ]],
  ['malformed HELLOs and DIFFs with junk', [
    ['a HELLO with a controller id that is not utf-8', frames(() => rawEnvelope([1, 2, 0xff, 0xfe], sv0))],
    ['a HELLO with a malformed state vector', frames(() => rawEnvelope([1, 4, ...id4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))],
    ['a valid HELLO then a DIFF of random bytes', frames(helloOk, () => diff(junk(300)))],
    ['a valid HELLO then a DIFF with a foreign root type', frames(helloOk, () => diff(update(doc => { doc.getArray('evil').push([1, 2, 3]) })))],
    ['a valid HELLO then a DIFF with a malformed entry', frames(helloOk, () => diff(segmentWith(seg => { seg.set('x', { worker_id: 'x' }) })))],
    ['a valid HELLO then a second HELLO instead of the DIFF', frames(helloOk, helloOk)],
    ['a valid HELLO then the end of the stream', async stream => {
      await lpStream(stream).write(helloOk())
      await stream.close()
    }]
  ]]
]

describe('a hostile peer on the sync protocol', () => {
  it.each(syncCases)('%s abort the exchange, are logged with the peer, counted, and change nothing', async (_group, cases) => {
    const before = await snapshots()
    const failedBefore = (await scrape(bed.client, victim.url)).sum('capmesh_sync_exchanges_total', { result: 'failed' })
    for (const [what, attack] of cases) {
      const node = await attacker()
      const stream = await openSync(node)
      await attack(stream)
      await eventually(() => logged('sync exchange failed', node.peerId.toString()), `the victim to abort the exchange on ${what}`, 5_000)
      await retire(node)
    }
    // At least one per attack (the victim may also have tried its own exchange with an attacker, which does not speak sync).
    expect((await scrape(bed.client, victim.url)).sum('capmesh_sync_exchanges_total', { result: 'failed' }) - failedBefore).toBeGreaterThanOrEqual(cases.length)
    await unchanged(before)
    await stillFlows('after-sync-garbage')
  })

  it('a peer that opens an exchange and stalls holds off the controller\'s other exchanges for a few seconds at most', async () => {
    const node = await attacker()
    const stream = await openSync(node)
    // A valid HELLO, then silence: the victim has sent its half and waits for a DIFF that never comes.
    await lpStream(stream).write(hello('evil', Y.encodeStateVector(new Y.Doc())))
    await eventually(() => victim.p2p.busy, 'the victim to be in the stalled exchange', 5_000, 5)
    expect(await others[0].p2p.syncWith(victim.p2p.peerId), 'refused while the stalled exchange is young').toBeNull()
    // Well before the 15 s sync timeout, the stalled exchange stops counting: a real peer gets its exchange.
    const t0 = Date.now()
    await eventually(async () => await others[0].p2p.syncWith(victim.p2p.peerId) != null, 'an exchange with a real peer despite the stall', 8_000, 250)
    expect(Date.now() - t0).toBeLessThan(8_000)
    stream.abort(new Error('done'))
    await retire(node)
    await stillFlows('after-stall')
  })

  it('a peer answering the controller\'s own sync with garbage cannot change its registry, and the stream is not left open', async () => {
    const before = await snapshots()
    const answers: Array<[string, (stream: Stream) => Promise<void>]> = [
      ['a garbage HELLO', async stream => { await lpStream(stream).write(junk(64)) }],
      ['a valid HELLO then a junk DIFF', async stream => { await lpStream(stream).writeV([helloOk(), ...diff(junk(200))]) }],
      ['a valid HELLO then a DIFF with a foreign root type', async stream => {
        await lpStream(stream).writeV([helloOk(), ...diff(update(doc => { doc.getText('evil').insert(0, 'x') }))])
      }]
    ]
    const leftOpen: string[] = []
    for (const [what, answer] of answers) {
      const node = await attacker()
      let served: Stream | null = null
      await node.handle(SYNC_PROTOCOL, async (stream: Stream) => {
        served = stream
        await lpStream(stream).read() // the controller's HELLO
        await answer(stream)
      })
      const res = await victim.p2p.syncWith(node.peerId.toString())
      expect(res, `a sync answered with ${what} fails`).toBeNull()
      expect(served, `the controller dialled the attacker for ${what}`).not.toBeNull()
      // The controller gave up on the exchange: its side of the stream should be closed or reset.
      try {
        await eventually(() => served!.status !== 'open' || served!.remoteWriteStatus !== 'writable', 'the stream to close', 2_000)
      } catch {
        leftOpen.push(what)
      }
      await retire(node)
    }
    await unchanged(before)
    await stillFlows('after-sync-answers')
    expect(leftOpen, 'sync streams the controller left open after a failed exchange').toEqual([])
  })
})

describe('well-formed Yjs updates that overwrite existing registry items with malformed content', () => {
  // Items that overwrite an existing key carry no parent in the encoded update (Yjs infers it from
  // the item they replace), so they must be checked against the document they would land in.
  const overwrites: Array<[string, (segments: Y.Map<unknown>, doc: Y.Doc) => void]> = [
    ['a map written over a worker\'s entry', segments => { victimSegment(segments).set('w0-0', new Y.Map()) }],
    ['another worker\'s entry written over a worker\'s entry', segments => {
      const seg = victimSegment(segments)
      seg.set('w0-1', { ...(seg.get('w0-0') as Record<string, unknown>) })
    }],
    ['a plain value written over a whole segment', segments => {
      const key = [...segments.keys()].find(k => k.startsWith('m0/'))!
      segments.set(key, { worker_id: 'x', incarnation: 99, owner: 'm0', deleted_at: 1, tombstone: true })
    }]
  ]

  it.each(overwrites)('%s, sent as gossip, is rejected and changes nothing', async (_what, edit) => {
    const before = await snapshots()
    const node = await attacker()
    const replica = await pullState(node)
    const res = await node.services.pubsub.publish(REGISTRY_TOPIC, envelope(Kind.update, editReplica(replica, edit)))
    expect(res.recipients.map(String)).toContain(victim.p2p.peerId)
    await eventually(() => logged('rejected a malformed gossip message', node.peerId.toString(), REGISTRY_TOPIC) || changedState(before),
      'the victim to reject the update (or, wrongly, apply it)', 5_000)
    // Give an accepted message time to be forwarded to the other controllers before comparing.
    await new Promise(resolve => setTimeout(resolve, 300))
    await unchanged(before)
  })

  it.each(overwrites)('%s, sent as a sync DIFF, is rejected and changes nothing', async (_what, edit) => {
    const before = await snapshots()
    const node = await attacker()
    const replica = await pullState(node)
    const stream = await openSync(node)
    await lpStream(stream).writeV([hello('evil', Y.encodeStateVector(replica)), ...diff(editReplica(replica, edit))])
    await eventually(() => logged('sync exchange failed', node.peerId.toString()) || changedState(before),
      'the victim to abort the exchange (or, wrongly, apply the DIFF)', 5_000)
    await new Promise(resolve => setTimeout(resolve, 300))
    await unchanged(before)
  })

  it('an update whose items depend on content nobody has is not kept', async () => {
    const before = await snapshots()
    // Two updates of one document: the second overwrites a key the first created. Only the second is sent.
    const doc = new Y.Doc()
    doc.getMap('segments').set(SEGMENT, new Y.Map())
    const sv = Y.encodeStateVector(doc)
    doc.getMap('segments').set(SEGMENT, new Y.Map())
    const orphan = Y.encodeStateAsUpdate(doc, sv)
    const node = await attacker()
    const res = await node.services.pubsub.publish(REGISTRY_TOPIC, envelope(Kind.update, orphan))
    expect(res.recipients.map(String)).toContain(victim.p2p.peerId)
    // Out of order is not malformed: the validator ignores it (no penalty, no log) and nothing is kept,
    // not even as pending structs waiting for the missing content.
    await new Promise(resolve => setTimeout(resolve, 1000))
    await unchanged(before)
    expect(victim.core.registry.doc.store.pendingStructs).toBeNull()
  })
})

describe('a node without the mesh key', () => {
  it('cannot connect, with no key or with another mesh\'s key: nothing it could send ever arrives', async () => {
    const before = await snapshots()
    const otherKey = randomBytes(32)
    // Both at once: a refused handshake can take the protector's or noise's timeout (seconds) to fail.
    await Promise.all(([['no mesh key', null], ['another mesh\'s key', otherKey]] as const).map(async ([what, key]) => {
      const node = await hostileNode(key)
      const to = multiaddr(victim.p2p.multiaddrs[0])
      // The signal is a backstop: these fail by themselves, at once (the garbled handshake is refused) or after a handshake timeout.
      await expect(node.dial(to, { signal: AbortSignal.timeout(20_000) }), `a node with ${what} to be refused`).rejects.toThrow()
      // Nor can it reach the sync protocol (it needs a connection first).
      await expect(node.dialProtocol(to, SYNC_PROTOCOL, { signal: AbortSignal.timeout(20_000) }), what).rejects.toThrow()
      expect(victim.p2p.connectedPeers(), what).not.toContain(node.peerId.toString())
      expect(node.getConnections(), what).toEqual([])
      await retire(node)
    }))
    // The controllers still hold one another, and nothing changed.
    for (const c of [victim, ...others]) expect(c.p2p.connectedPeers().filter(p => [victim, ...others].some(o => o.p2p.peerId === p))).toHaveLength(2)
    await unchanged(before)
    await stillFlows('after-outsiders')
  })

  it('a controller given another mesh\'s key never joins, and says why', async () => {
    records = []
    const stranger = await startController('stranger', [victim.p2p.multiaddrs[0]], true, join(bed.root, 'other-mesh.key'))
    await eventually(() => records.some(r => r.controller === 'stranger' && r.msg?.includes('Does it hold the same mesh key') === true && r.target === victim.p2p.multiaddrs[0]),
      'the stranger to say its dials fail in the handshake', 15_000)
    expect(stranger.p2p.connectedPeers()).toEqual([])
    expect(victim.p2p.connectedPeers()).not.toContain(stranger.p2p.peerId)
    expect(stranger.core.registry.size).toBe(0)
    // What an operator compares: the mesh's controllers show one key id, the stranger another.
    const ids = await Promise.all([victim, ...others, stranger].map(async c => (await get(c.url, '/mesh')).body.mesh_key_id as string))
    expect(ids.slice(0, 3).every(id => /^[0-9a-f]{16}$/.test(id) && id === ids[0])).toBe(true)
    expect(ids[3]).not.toBe(ids[0])
    expect((await get(victim.url, '/health')).body.mesh.mesh_key_id).toBe(ids[0])
  })
})
