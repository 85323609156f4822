/**
 * gossip — the only code that touches libp2p: the node (TCP, the mesh key's
 * private network, noise, yamux, identify, ping, gossipsub), the versioned
 * envelopes and their validators, the anti-entropy sync protocol and its
 * scheduler, the dialer, the persistent peer identity, the mesh key ring
 * and admission (the peer allow list). It keeps a
 * Replica (replica.ts) in step with the peers' and carries other topics'
 * payloads opaquely; it knows nothing of Yjs or of digests.
 *
 * @example
 * const { keys } = ensureMeshKey('.capmesh/tls/mesh.key')
 * const admission = new Admission({ file: '.capmesh/tls/peers.allow' })
 * admission.load()
 * const mesh = new Mesh({ controllerId: 'a', replica, dataDir, meshKeys: keys, admission, admitSelf: true, port: 9100, bootstrap: ['/ip4/127.0.0.1/tcp/9101'], log })
 * await mesh.start()
 * mesh.on('heard', (controllerId, peerId) => membership.heard(controllerId, peerId))
 */
export { Mesh, REGISTRY_TOPIC } from './mesh.ts'
export { isWildcard, systemResolve } from './addresses.ts'
export type { Resolve } from './addresses.ts'
export type { GossipVerdict, MeshEvents, MeshInit, MeshKeyView, Sender, TopicHandler } from './mesh.ts'
export { Admission, parseAllowList, REFUSAL_REASONS } from './admission.ts'
export type { AdmissionEvents, AdmissionInit, AllowEntry, Refusal, RefusalReason } from './admission.ts'
export type { CheckResult, Replica } from './replica.ts'
export { NetworkFaults, networkFaults } from './faults.ts'
export type { FaultTarget } from './faults.ts'
export { decodeEnvelope, encodeEnvelope, Kind, DecodeError } from './envelope.ts'
export type { Envelope } from './envelope.ts'
export { SYNC_FAILURE_REASONS, SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED, SYNC_PROTOCOLS, SyncError, syncInitiator, syncResponder } from './sync.ts'
export type { SyncFailureReason, SyncReplica, SyncResult } from './sync.ts'
export type { BehindPeer } from './exchanges.ts'
export type { PeerView, SyncFailure } from './peers.ts'
export { loadOrCreatePeerKey } from './keys.ts'
export {
  ensureMeshKey, formatMeshKeys, installMeshKey, meshKeyId, newMeshKey, parseMeshKeys, readMeshKey, readMeshKeys, removeMeshKey, useMeshKey
} from './mesh-key.ts'
export type { KeyRingChange } from './mesh-key.ts'
export { PeerSeals } from './seal-keys.ts'
export type { SealAuthority } from './seal-keys.ts'
