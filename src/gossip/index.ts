/**
 * gossip — the only code that touches libp2p: the node (TCP, noise, yamux,
 * identify, ping, gossipsub, behind the shared mesh key), the versioned envelopes and their validators,
 * the anti-entropy sync protocol, and the persistent peer identity.
 *
 * @example
 * const { key } = ensureMeshKey('.capmesh/tls/mesh.key')
 * const mesh = new Mesh({ registry, dataDir, meshKey: key, port: 9100, bootstrap: ['/ip4/127.0.0.1/tcp/9101'], log })
 * await mesh.start()
 * mesh.on('digest', (controllerId, digest) => core.onDigest(controllerId, digest))
 */
export { Mesh, LIVENESS_TOPIC, REGISTRY_TOPIC } from './mesh.ts'
export type { GossipVerdict, MeshEvents, MeshInit, PeerStatus } from './mesh.ts'
export { decodeDigest, decodeEnvelope, encodeDigest, encodeEnvelope, Digest, Kind, DecodeError } from './envelope.ts'
export type { Envelope } from './envelope.ts'
export { SYNC_FAILURE_REASONS, SYNC_PROTOCOL, SYNC_PROTOCOL_V2, SyncError, syncInitiator, syncResponder } from './sync.ts'
export type { SyncFailureReason, SyncReplica, SyncResult } from './sync.ts'
export type { BehindPeer } from './exchanges.ts'
export { loadOrCreatePeerKey } from './keys.ts'
export { ensureMeshKey, meshKeyId, readMeshKey } from './mesh-key.ts'
