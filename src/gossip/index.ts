/**
 * gossip — the only code that touches libp2p: the node (TCP, the mesh key's
 * private network, noise, yamux, identify, ping, gossipsub), the versioned
 * envelopes and their validators, the anti-entropy sync protocol and its
 * scheduler, the dialer, and the persistent peer identity. It keeps a
 * Replica (replica.ts) in step with the peers' and carries other topics'
 * payloads opaquely; it knows nothing of Yjs or of digests.
 *
 * @example
 * const { key } = ensureMeshKey('.capmesh/tls/mesh.key')
 * const mesh = new Mesh({ controllerId: 'a', replica, dataDir, meshKey: key, port: 9100, bootstrap: ['/ip4/127.0.0.1/tcp/9101'], log })
 * await mesh.start()
 * mesh.on('heard', (controllerId, peerId) => membership.heard(controllerId, peerId))
 */
export { Mesh, REGISTRY_TOPIC } from './mesh.ts'
export { isWildcard, systemResolve } from './addresses.ts'
export type { Resolve } from './addresses.ts'
export type { GossipVerdict, MeshEvents, MeshInit, Sender, TopicHandler } from './mesh.ts'
export type { CheckResult, Replica } from './replica.ts'
export { NetworkFaults, networkFaults } from './faults.ts'
export type { FaultTarget } from './faults.ts'
export { decodeEnvelope, encodeEnvelope, Kind, DecodeError } from './envelope.ts'
export type { Envelope } from './envelope.ts'
export { SYNC_FAILURE_REASONS, SYNC_PROTOCOL, SyncError, syncInitiator, syncResponder } from './sync.ts'
export type { SyncFailureReason, SyncReplica, SyncResult } from './sync.ts'
export type { BehindPeer } from './exchanges.ts'
export type { PeerView, SyncFailure } from './peers.ts'
export { loadOrCreatePeerKey } from './keys.ts'
export { ensureMeshKey, meshKeyId, readMeshKey } from './mesh-key.ts'
