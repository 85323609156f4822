/**
 * Admission by identity: controllers of a *deployed* TLS dir (ca.pem without
 * ca-key.pem, so nobody writes the allow list but the test, as an operator
 * would) connect only to the peers their allow list names. The insider is
 * a real extra libp2p node (TCP, the mesh key, noise, yamux, identify,
 * gossipsub: a controller's stack) that holds the mesh key but is not in the
 * list. It tries to connect, publish, sync, to be dialled through a
 * bootstrap address, and to be introduced by a controller whose own list
 * (wrongly) admits it.
 *
 * What must hold: it is refused everywhere (the refusal is counted in
 * /metrics, listed in /mesh `refused`, logged with its peer id and address),
 * nothing it sends reaches a registry, nobody but the misconfigured
 * controller ever connects to it, no controller crashes, and the mesh keeps
 * working. A controller added to the list while the mesh runs joins without
 * a signal (looked up again when it knocks); one removed from it and
 * reloaded (what SIGHUP runs) is hung up on and stays out.
 */
import { copyFileSync, mkdirSync, writeFileSync, appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { localPreset, resolveControllerConfig, type RawConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { encodeEnvelope, ensureMeshKey, Kind, readMeshKey, REGISTRY_TOPIC, SYNC_PROTOCOL } from '../../src/gossip/index.ts'
import { privateNetwork } from '../../src/gossip/private-network.ts'
import { LIVENESS_TOPIC } from '../../src/membership/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { scrape } from '../helpers/metrics.ts'

type Node = Libp2p<{ pubsub: GossipSub, identify: unknown }>

let bed: TestBed
/** The deployed TLS dir: the CA certificate, a server certificate and the mesh key; no CA key. */
let tlsDir: string
let allowFile: string
let controllers: Controller[] = []
let nodes: Node[] = []
/** Every JSON log record of every controller started here. */
let records: Array<Record<string, any>> = []
let a: Controller
let b: Controller
let c: Controller

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const get = async (base: string, path: string) => await bed.client.json('GET', base + path)

function workerBody (id: string): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
}

/** Long liveness windows (nothing legitimate changes the registry meanwhile); fast re-dials. */
const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100, syncIntervalMs: 500, reconnectIntervalMs: 250 }

async function startController (id: string, bootstrap: string[], extra: RawConfig = {}): Promise<Controller> {
  const config = resolveControllerConfig(localPreset({ id, dataDir: join(bed.root, id), tlsDir, bootstrap, ...calm, ...extra }))
  const sink = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (line.length === 0) continue
        try { records.push(JSON.parse(line)) } catch {}
      }
      done()
    }
  })
  const ctl = new Controller({ config, logger: pino({ level: 'info', base: { controller: id } }, sink) })
  await ctl.start()
  controllers.push(ctl)
  return ctl
}

const line = (ctl: Controller): string => `${ctl.config.id} ${ctl.p2p.peerId}\n`
const linked = (x: Controller, y: Controller): boolean => x.p2p.connectedPeers().includes(y.p2p.peerId)

/** A deployed TLS dir, three controllers started on it, then the allow list written: they find each other. */
beforeEach(async () => {
  bed = await testBed('admission')
  records = []
  tlsDir = join(bed.root, 'deployed')
  mkdirSync(tlsDir)
  for (const f of ['ca.pem', 'server.pem', 'server-key.pem']) copyFileSync(join(bed.tlsDir, f), join(tlsDir, f))
  ensureMeshKey(join(tlsDir, 'mesh.key'))
  allowFile = join(tlsDir, 'peers.allow')
  a = await startController('a', [])
  b = await startController('b', [a.p2p.multiaddrs[0]])
  c = await startController('c', [a.p2p.multiaddrs[0]])
  // No list yet: nobody is admitted, and each says so (with the line it needs).
  for (const ctl of [a, b, c]) {
    expect(records.some(r => r.controller === ctl.config.id && r.level === 50 && String(r.msg).includes(`"${line(ctl).trim()}"`)), `${ctl.config.id} says its allow list is missing`).toBe(true)
  }
  await new Promise(resolve => setTimeout(resolve, 500))
  expect(a.p2p.connectedPeers()).toEqual([])
  // The operator writes the list: b's and c's next dials are admitted (a looks its list up again when they knock).
  writeFileSync(allowFile, `# the mesh\n${line(a)}${line(b)}${line(c)}`)
  const all = [a, b, c]
  await eventually(() => all.every(x => all.every(y => x === y || linked(x, y))), 'a full mesh once the allow list is written', 15_000)
  for (const [i, ctl] of all.entries()) {
    for (let j = 0; j < 2; j++) expect((await post(ctl.url, '/register', workerBody(`w${i}-${j}`))).status).toBe(200)
  }
  await eventually(() => all.every(x => x.core.registry.size === 6 && x.core.registryHash === a.core.registryHash), 'six workers everywhere')
})

afterEach(async () => {
  for (const n of nodes.splice(0)) {
    try { await n.stop() } catch {}
  }
  for (const ctl of controllers.splice(0)) await ctl.stop().catch(() => {})
  await bed.cleanup()
})

/** A libp2p node like a controller's, holding the mesh key, listening on loopback. Not in anyone's allow list. */
async function insiderNode (): Promise<Node> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector: privateNetwork({ key: readMeshKey(join(tlsDir, 'mesh.key')) }),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, floodPublish: true, emitSelf: false })
    }
  }) as Node
  node.services.pubsub.subscribe(REGISTRY_TOPIC)
  node.services.pubsub.subscribe(LIVENESS_TOPIC)
  nodes.push(node)
  return node
}

/** A registry update that would put worker "forged" (owned by "evil") in the registry, in a gossip envelope. */
function forgedUpdate (): Uint8Array {
  const doc = new Y.Doc()
  doc.transact(() => {
    const seg = new Y.Map<unknown>()
    doc.getMap('segments').set('evil/000000001.deadbeef', seg)
    seg.set('forged', JSON.stringify({ ...workerBody('forged'), incarnation: 1, owner: 'evil', registered_at: Date.now() }))
  })
  return encodeEnvelope({ kind: Kind.update, controllerId: 'evil', payload: Y.encodeStateAsUpdate(doc) })
}

const refusedBy = async (ctl: Controller, peer: string): Promise<Record<string, any> | undefined> =>
  ((await get(ctl.url, '/mesh')).body.refused as Array<Record<string, any>>).find(r => r.peer_id === peer)

const loggedRefusal = (ctl: Controller, peer: string): boolean =>
  records.some(r => r.controller === ctl.config.id && r.level === 40 && String(r.msg).startsWith(`refused peer ${peer}`) && r.peer === peer)

/** Nothing forged anywhere, and a registration at b is routable at a and c. */
async function stillFlows (id: string, at: Controller[] = [a, b, c]): Promise<void> {
  for (const ctl of at) {
    expect(ctl.core.registry.get('forged'), `${ctl.config.id} holds nothing forged`).toBeUndefined()
    const r = await post(ctl.url, '/route', { verb: 'invoke', capability: 'cap-forged' })
    expect(r.status, `${ctl.config.id} routes nothing to a forged worker`).toBe(404)
  }
  expect((await post(at[1].url, '/register', workerBody(id))).status).toBe(200)
  await eventually(async () => {
    for (const ctl of at) {
      const r = await post(ctl.url, '/route', { verb: 'invoke', capability: `cap-${id}` })
      if (r.status !== 200 || r.body.worker_id !== id) return false
    }
    return true
  }, `${id} to be routable everywhere`, 10_000, 50)
}

describe('a node that holds the mesh key but is not admitted', () => {
  it('cannot connect to, publish to or sync with any controller; each refusal is counted, listed and logged', async () => {
    const insider = await insiderNode()
    const peer = insider.peerId.toString()
    const hash = a.core.registryHash
    for (const ctl of [a, b, c]) {
      const to = multiaddr(ctl.p2p.multiaddrs[0])
      // The noise handshake succeeds (it holds the key), so on its side a connection may open for a moment
      // (noise negotiates the muxer in its handshake); the controller's gater refuses the peer and closes it.
      await insider.dial(to, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
      await eventually(() => insider.getConnections().length === 0, `${ctl.config.id} to close the insider's connection`, 5_000)
      // (Outcomes as text: a libp2p connection object cannot be pretty-printed by a failing assertion.)
      const outcome = async (p: Promise<unknown>): Promise<string> => await p.then(() => 'opened', (err: Error) => `refused: ${err.name}`)
      expect(await outcome(insider.dialProtocol(to, SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })), `a sync stream to ${ctl.config.id}`).toMatch(/^refused/)
      await new Promise(resolve => setTimeout(resolve, 250)) // libp2p's inbound rate per host
    }
    // With no connection, what it publishes reaches nobody.
    const sent = await insider.services.pubsub.publish(REGISTRY_TOPIC, forgedUpdate())
    expect(sent.recipients).toEqual([])
    expect(insider.getConnections().map(conn => conn.remotePeer.toString())).toEqual([])
    for (const ctl of [a, b, c]) {
      expect(ctl.p2p.connectedPeers()).not.toContain(peer)
      const r = await refusedBy(ctl, peer)
      expect(r, `${ctl.config.id} lists the insider as refused`).toMatchObject({ reason: 'inbound', address: expect.stringMatching(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+/) })
      expect(r!.count).toBeGreaterThanOrEqual(2)
      expect(Date.parse(r!.last_at)).toBeGreaterThan(Date.now() - 60_000)
      expect((await scrape(bed.client, ctl.url)).sum('capmesh_peers_refused_total', { reason: 'inbound' })).toBeGreaterThanOrEqual(2)
      // Logged once (a minute), with the peer id and the address.
      expect(loggedRefusal(ctl, peer), `${ctl.config.id} logged the refusal`).toBe(true)
      expect(records.filter(x => x.controller === ctl.config.id && x.peer === peer && String(x.msg).startsWith('refused peer')).length).toBe(1)
      expect((await get(ctl.url, '/health')).status).toBe(200)
      expect(ctl.core.registryHash).toBe(hash)
    }
    // `capmesh status` shows the refused peer too.
    const { formatStatus, meshStatus } = await import('../../src/cli/status.ts')
    const status = await meshStatus(bed.client, [a.url, b.url, c.url])
    expect(status.ok, status.summary).toBe(true)
    expect(status.controllers[0].refused?.[0]).toMatchObject({ peer, reason: 'inbound' })
    expect(formatStatus(status)).toContain(`a refused ${peer} at /ip4/127.0.0.1/tcp/`)
    await stillFlows('after-insider')
  })

  it('is not dialled through a bootstrap address, nor through a controller that wrongly admits it and introduces it', async () => {
    const insider = await insiderNode()
    const peer = insider.peerId.toString()
    const insiderAddr = insider.getMultiaddrs()[0].toString()
    // x's own list wrongly admits the insider (as "evil"). x bootstraps from the insider and from a, which
    // does not admit x yet: x meets the insider first.
    const xAllow = join(bed.root, 'x.allow')
    writeFileSync(xAllow, `${line(a)}${line(b)}${line(c)}evil ${peer}\n`)
    const x = await startController('x', [insiderAddr, a.p2p.multiaddrs[0]], { peerAllow: xAllow })
    // d bootstraps from the insider's address alone, without its peer id: d dials it, noise names it, d's gater refuses it.
    const d = await startController('d', [insiderAddr.replace(/\/p2p\/.*$/, '')])
    appendFileSync(allowFile, line(d))
    await eventually(async () => (await refusedBy(d, peer))?.reason === 'outbound', 'd to refuse the insider it reached through its bootstrap address', 10_000)
    expect(d.p2p.connectedPeers()).not.toContain(peer)
    expect((await scrape(bed.client, d.url)).sum('capmesh_peers_refused_total', { reason: 'outbound' })).toBeGreaterThanOrEqual(1)
    expect(loggedRefusal(d, peer)).toBe(true)

    // x connects to the insider, which tells x where it listens (a digest, as a controller would).
    await eventually(() => x.p2p.connectedPeers().includes(peer), 'x connected to the insider', 15_000)
    const digest = { epoch: 'evil', seq: 1, owned: 0, exceptions: [], loads: [], registry_hash: '0', self_preservation: false, addrs: [`${insiderAddr}`] }
    const outbound = (insider.services.pubsub as unknown as { streamsOutbound: Map<string, unknown> }).streamsOutbound
    await eventually(() => outbound.has(x.p2p.peerId) && insider.services.pubsub.getSubscribers(LIVENESS_TOPIC).some(p => p.toString() === x.p2p.peerId), 'the insider to see x subscribed', 10_000)
    const say = async (): Promise<void> => {
      digest.seq++
      await insider.services.pubsub.publish(LIVENESS_TOPIC, encodeEnvelope({ kind: Kind.message, controllerId: 'evil', payload: new TextEncoder().encode(JSON.stringify(digest)) }))
    }
    await say()
    await eventually(() => x.p2p.introductions().some(i => i.includes(peer)), 'x to take the insider for a controller it can introduce', 10_000)
    // Now a, b and c admit x: x joins them, and its digests introduce the insider to each (and x may forward
    // what the insider signs).
    appendFileSync(allowFile, line(x))
    await eventually(() => [a, b, c].every(y => linked(x, y)), 'x connected to a, b and c', 15_000)
    // Every other controller hears the introduction and does not take it.
    for (const ctl of [a, b, c]) {
      await eventually(async () => (await scrape(bed.client, ctl.url)).sum('capmesh_peers_refused_total', { reason: 'introduced' }) >= 1,
        `${ctl.config.id} to turn the introduction of the insider down`, 10_000, 100)
      expect(await refusedBy(ctl, peer)).toBeDefined()
    }
    // Keep talking for a while: nobody but x ever connects to it, and no other controller takes "evil" for a controller.
    for (let i = 0; i < 6; i++) {
      await say()
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    const with_ = insider.getConnections().map(conn => conn.remotePeer.toString())
    expect([...new Set(with_)]).toEqual([x.p2p.peerId])
    for (const ctl of [a, b, c, d]) {
      expect(ctl.p2p.connectedPeers()).not.toContain(peer)
      expect(Object.keys((await get(ctl.url, '/mesh')).body.owners)).not.toContain('evil')
    }
    await stillFlows('after-introductions')
  })
})

describe('changing the allow list while the mesh runs', () => {
  it('a controller added to the list joins without a signal; until then it is refused', async () => {
    const d = await startController('d', [a.p2p.multiaddrs[0]])
    await eventually(async () => (await refusedBy(a, d.p2p.peerId))?.reason === 'inbound', 'a to refuse d while it is not listed', 10_000)
    expect(linked(a, d)).toBe(false)
    appendFileSync(allowFile, line(d))
    await eventually(() => [a, b, c].every(x => linked(x, d) && linked(d, x)), 'd connected to every controller', 15_000)
    // Admitted now: no longer listed as refused.
    expect(await refusedBy(a, d.p2p.peerId)).toBeUndefined()
    await eventually(() => d.core.registry.size >= 6, 'd to catch up', 10_000)
    await stillFlows('after-join', [d, b, c])
  })

  it('a controller removed from the list is hung up on at the reload (SIGHUP) and stays out; a bad file changes nothing', async () => {
    // A typo first: the reload says where, and nothing changes.
    writeFileSync(allowFile, `${line(a)}${line(b)}c not-a-peer-id\n`)
    const bad = a.reload()
    expect(bad.errors.join()).toContain(`${allowFile}:3:`)
    expect(records.some(r => r.controller === 'a' && r.level === 50 && String(r.msg).startsWith('peer allow list not reloaded'))).toBe(true)
    expect(linked(a, c)).toBe(true)
    // Then c's line goes.
    writeFileSync(allowFile, `${line(a)}${line(b)}`)
    expect(a.reload().errors).toEqual([])
    expect(b.reload().errors).toEqual([])
    await eventually(() => !linked(a, c) && !linked(b, c) && !linked(c, a) && !linked(c, b), 'a and b to hang up on c', 5_000)
    for (const ctl of [a, b]) {
      expect((await scrape(bed.client, ctl.url)).sum('capmesh_peers_refused_total', { reason: 'revoked' })).toBe(1)
      expect((await get(ctl.url, '/mesh')).body.admission.controllers.map((e: { controller_id: string }) => e.controller_id)).toEqual(['a', 'b'])
    }
    // c keeps knocking (its reconnect loop) and is refused each time.
    await new Promise(resolve => setTimeout(resolve, 2000))
    expect(linked(a, c) || linked(b, c)).toBe(false)
    const r = await refusedBy(a, c.p2p.peerId)
    expect(r?.count).toBeGreaterThanOrEqual(2)
    await stillFlows('after-removal', [a, b])
    // Its line back: it rejoins.
    appendFileSync(allowFile, line(c))
    await eventually(() => linked(a, c) && linked(b, c), 'c back in the mesh', 15_000)
  })
})
