/**
 * The two versions of the anti-entropy protocol over real libp2p: a
 * controller answers `/capmesh/sync/3.1.0` (deltas compressed) and
 * `/capmesh/sync/3.0.0` (as controllers from before compression speak it),
 * and dials a peer that speaks only 3.0.0 on 3.0.0. The peer here is an
 * admitted libp2p node running the protocol over a registry of its own.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { PeerSeals, readMeshKey, SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED, syncInitiator, syncResponder } from '../../src/gossip/index.ts'
import { PeerBusyError, type SyncOptions } from '../../src/gossip/sync.ts'
import { Registry, registryReplica } from '../../src/registry/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { rogueNode, type RogueNode } from '../helpers/rogue.ts'

let bed: TestBed
let c: Controller
const peers: RogueNode[] = []
const N = 2000

beforeAll(async () => {
  bed = await testBed('sync-versions')
  c = await bed.start({ id: 'c' })
  for (let i = 0; i < N; i += 1000) {
    const workers = Array.from({ length: 1000 }, (_, k) => ({ worker_id: `w${i + k}`, worker_url: `https://127.0.0.1:7000/w${i + k}`, capabilities: [capability(`cap-${(i + k) % 10}`)] }))
    expect((await bed.client.json('POST', `${c.url}/register/batch`, { workers })).status).toBe(200)
  }
}, 30_000)

afterAll(async () => {
  for (const p of peers) await p.stop()
  await bed.cleanup()
})

/** A libp2p node admitted to the mesh (as controller `old-<n>`, its id), not connected yet. */
async function admittedPeer (): Promise<{ peer: RogueNode, id: string }> {
  const peer = await rogueNode(readMeshKey(join(bed.tlsDir, 'mesh.key')))
  peers.push(peer)
  const id = `old-${peers.length}`
  appendFileSync(join(bed.tlsDir, 'peers.allow'), `${id} ${peer.peerId.toString()}\n`)
  return { peer, id }
}

/** An empty registry of controller `id` that checks c's seals, as a peer's would. */
function emptyRegistry (id: string): Registry {
  return new Registry({ controllerId: id, seals: new PeerSeals(owner => owner === 'c' ? c.p2p.peerId : undefined) })
}

const options = (id: string): SyncOptions => ({ controllerId: id, maxDeltaBytes: 64 * 1024 * 1024, chunkBytes: 1024 * 1024, timeoutMs: 10_000, applyMsPerMiB: 500 })

/** Bytes read from `stream` (frames as they arrive). */
function counted (stream: Stream): () => number {
  let read = 0
  stream.addEventListener('message', evt => { read += evt.data.byteLength })
  return () => read
}

describe('anti-entropy versions', () => {
  it('answers 3.1.0 with a compressed delta and 3.0.0 with the delta as it is', async () => {
    const { peer, id } = await admittedPeer()
    await peer.dial(multiaddr(c.p2p.multiaddrs[0]))
    for (const protocol of [SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED]) {
      const registry = emptyRegistry(id)
      // c may be in an exchange of its own with the new link (one this peer does not answer): BUSY, try again, as a controller does.
      const done = await eventually(async () => {
        const stream = await peer.dialProtocol(peerIdFromString(c.p2p.peerId), protocol, { signal: AbortSignal.timeout(10_000) })
        expect(stream.protocol).toBe(protocol)
        const read = counted(stream)
        try {
          return { res: await syncInitiator(stream, registryReplica(registry), options(id)), read }
        } catch (err) {
          if (err instanceof PeerBusyError) return null
          throw err
        }
      }, `an exchange with c on ${protocol}`)
      if (done == null) throw new Error('unreachable: eventually returns a truthy value')
      const { res, read } = done
      expect(res.peerController).toBe('c')
      expect(registry.stats().workers, protocol).toBe(N)
      if (protocol === SYNC_PROTOCOL) expect(read(), protocol).toBeLessThan(res.bytesReceived / 5)
      else expect(read(), protocol).toBeGreaterThan(res.bytesReceived)
    }
  })

  it('dials a peer that speaks only 3.0.0 on 3.0.0', async () => {
    const answered: string[] = []
    const { peer, id } = await admittedPeer()
    const registry = emptyRegistry(id)
    await peer.handle(SYNC_PROTOCOL_UNCOMPRESSED, (stream: Stream) => {
      answered.push(stream.protocol)
      syncResponder(stream, registryReplica(registry), options(id)).catch(() => {})
    })
    await peer.dial(multiaddr(c.p2p.multiaddrs[0]))
    // c syncs with the new link (if its peer id is the smaller), or in its periodic exchange with a peer
    // whose registry hash it does not know.
    await eventually(() => registry.stats().workers === N, 'c to sync with the 3.0.0 peer', 15_000)
    expect(answered[0]).toBe(SYNC_PROTOCOL_UNCOMPRESSED)
  })
})
