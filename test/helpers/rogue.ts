/**
 * A rogue peer: a real libp2p node with the same stack as a controller's
 * (TCP, the private network, noise, yamux, identify, gossipsub), holding the
 * mesh key, or none, or another's. Tests admit it (an admitted controller
 * that misbehaves) or not (an insider with a stolen key), and have it speak
 * raw gossip envelopes and sync frames.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { privateNetwork } from '../../src/gossip/private-network.ts'

export type RogueNode = Libp2p<{ pubsub: GossipSub, identify: unknown }> & { privateKey: PrivateKey }

let lastDial = 0

/**
 * A node listening on loopback, keyed with `meshKey` (or none). Creations
 * are spaced by 250 ms: a controller refuses more than 5 inbound connections
 * a second from one host, and every rogue comes from 127.0.0.1.
 */
export async function rogueNode (meshKey: Uint8Array | null): Promise<RogueNode> {
  const wait = lastDial + 250 - Date.now()
  if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
  lastDial = Date.now()
  const privateKey = await generateKeyPair('Ed25519')
  const node = await createLibp2p({
    privateKey,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    ...(meshKey != null ? { connectionProtector: privateNetwork({ key: meshKey }) } : {}),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, floodPublish: true, emitSelf: false, maxInboundDataLength: 8 * 1024 * 1024 })
    }
  })
  return Object.assign(node, { privateKey }) as RogueNode
}

const enc = new TextEncoder()

/** A sync HELLO frame: the sender's controller id, the largest delta it takes (16 MiB), its state vector. */
export function helloFrame (controllerId: string, sv: Uint8Array): Uint8Array {
  const id = enc.encode(controllerId)
  const out = new Uint8Array(2 + id.length + 4 + sv.length)
  out.set([1, id.length, ...id, 0x01, 0, 0, 0])
  out.set(sv, 2 + id.length + 4)
  return out
}

/** The frames of a sync DIFF carrying `u` in one chunk (below 1 MiB): its header (length, u32), then the bytes. */
export function diffFrames (u: Uint8Array): Uint8Array[] {
  return [Uint8Array.of(2, u.length >>> 24, (u.length >>> 16) & 0xff, (u.length >>> 8) & 0xff, u.length & 0xff), u]
}
