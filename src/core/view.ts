/**
 * The one typed view of a running controller that the API, the metrics, the
 * CLI and the simulation control channel see: what a controller does (the
 * wire contract's operations), what it holds, how it and its mesh are doing,
 * and its events. Nothing outside the core and the composition root reaches
 * past it. `controllerView()` builds it from the core and what the running
 * process knows (NodeFacts).
 */
import { EventEmitter } from 'node:events'
import type { HealthState } from '../liveness/index.ts'
import type { MemberStatus } from '../membership/index.ts'
import type { RegistryStats } from '../registry/index.ts'
import type {
  CapabilitySummary, DeregisterReply, DrainReply, HealthReply, HeartbeatReply, HeartbeatRequest, ImportReply, MemberStatus as MemberStatusBody,
  MeshReply, PeerStatus, PortableState, RegisterReply, RegisterRequest, RouteQuery, RouteResult, SyncHealth, WorkersReply
} from '../wire/index.ts'
import type { ControllerCore } from './core.ts'

/** What the running process knows that the core does not: its network and its disk. */
export interface NodeFacts {
  /** This controller's libp2p peer id, null while the mesh is down. */
  peerId: () => string | null
  /** Where the p2p listener is bound (a wildcard stays one). */
  listenAddrs: () => string[]
  /** What peers are told to dial (announced in identify and the digests), with the peer id. */
  advertisedAddrs: () => string[]
  connectedPeers: () => number
  peers: () => PeerStatus[]
  sync: () => SyncHealth
  store: () => { logBytes: number, snapshotBytes: number } | null
  caPath: () => string | null
  meshKeyId: () => string | null
  config: () => { heartbeat_interval_ms: number, unhealthy_after_ms: number, stale_after_ms: number }
}

/** Events of a controller, for metrics and logs. Listeners must not block. */
export interface ViewEvents {
  expired: [workerId: string, state: HealthState]
  member: [controllerId: string, from: MemberStatus, to: MemberStatus]
  dropped: [controllerId: string, segments: number]
  selfPreservation: [kind: 'workers' | 'peers', on: boolean]
  /** The registry changed (any origin): the workers it gained. */
  registry: [change: { added: string[] }]
  /** A gossip message was checked, by topic and verdict. */
  gossip: [topic: string, result: 'accepted' | 'ignored' | 'rejected']
  /** An anti-entropy exchange ended, either side: ok (with the bytes received) or failed (with why). */
  sync: [result: { ok: true, bytesReceived: number } | { ok: false, reason: string }]
}

export interface ControllerView {
  readonly controllerId: string
  register: (req: RegisterRequest) => RegisterReply
  heartbeat: (req: HeartbeatRequest) => HeartbeatReply
  drain: (workerId: string, incarnation?: number) => DrainReply
  deregister: (workerId: string) => DeregisterReply
  route: (q: RouteQuery) => RouteResult
  capabilities: () => CapabilitySummary[]
  workers: (filter: { state?: HealthState, capability?: string, limit: number, offset: number }) => WorkersReply
  exportState: () => PortableState
  importState: (doc: unknown) => ImportReply
  health: () => HealthReply
  mesh: () => MeshReply
  /** Workers per state as routed here, and those attached here. O(1). */
  stateCounts: () => Record<HealthState, number> & { total: number }
  ownCounts: () => Record<HealthState, number>
  registryStats: () => RegistryStats
  registryHash: () => string
  selfPreservation: () => { workers: boolean, peers: boolean }
  members: () => Record<string, MemberStatusBody>
  /** Connected libp2p peers. */
  connectedPeers: () => number
  /** Anti-entropy as a whole (behind: exchanges with some peer keep failing). */
  sync: () => SyncHealth
  store: () => { logBytes: number, snapshotBytes: number } | null
  /** Subscribes to the controller's events (see ViewEvents). */
  on: <K extends keyof ViewEvents>(event: K, listener: (...args: ViewEvents[K]) => void) => void
  off: <K extends keyof ViewEvents>(event: K, listener: (...args: ViewEvents[K]) => void) => void
}

/** Builds the view of `core` in a process that knows `facts`; `events` carries the core's events and the mesh's. */
export function controllerView (core: ControllerCore, facts: NodeFacts, events: EventEmitter<ViewEvents>): ControllerView {
  const started = Date.now()
  const health = (): HealthReply => {
    const sync = facts.sync()
    const sp = core.selfPreservation
    return {
      // Self-preservation says more (it is cut off from many); behind says it cannot catch up with some.
      status: sp.workers || sp.peers ? 'self_preservation' : sync.state === 'behind' ? 'behind' : 'ok',
      controller_id: core.controllerId,
      uptime_s: Math.round((Date.now() - started) / 1000),
      workers: core.stateCounts(),
      own_workers: core.ownCounts(),
      registry: core.registryStats(),
      sync,
      mesh: {
        peer_id: facts.peerId(),
        listen_addrs: facts.listenAddrs(),
        advertised_addrs: facts.advertisedAddrs(),
        connected_peers: facts.connectedPeers(),
        registry_hash: core.registryHash,
        self_preservation: sp,
        mesh_key_id: facts.meshKeyId()
      },
      store: facts.store(),
      tls: { ca_path: facts.caPath() },
      config: facts.config()
    }
  }
  const mesh = (): MeshReply => ({
    controller_id: core.controllerId,
    peer_id: facts.peerId(),
    listen_addrs: facts.listenAddrs(),
    advertised_addrs: facts.advertisedAddrs(),
    connected_peers: facts.connectedPeers(),
    peers: facts.peers(),
    owners: core.members(),
    registry_hash: core.registryHash,
    sync: facts.sync(),
    self_preservation: core.selfPreservation,
    mesh_key_id: facts.meshKeyId()
  })
  return {
    controllerId: core.controllerId,
    register: req => core.register(req),
    heartbeat: req => core.heartbeat(req),
    drain: (id, incarnation) => core.drain(id, incarnation),
    deregister: id => core.deregister(id),
    route: q => core.route(q),
    capabilities: () => core.capabilities(),
    workers: filter => core.workers(filter),
    exportState: () => core.exportState(),
    importState: doc => core.importState(doc),
    health,
    mesh,
    stateCounts: () => core.stateCounts(),
    ownCounts: () => core.ownCounts(),
    registryStats: () => core.registryStats(),
    registryHash: () => core.registryHash,
    selfPreservation: () => core.selfPreservation,
    members: () => core.members(),
    connectedPeers: () => facts.connectedPeers(),
    sync: () => facts.sync(),
    store: () => facts.store(),
    on: (event, listener) => { events.on(event, listener as never) },
    off: (event, listener) => { events.off(event, listener as never) }
  }
}
