/**
 * The one typed view of a running controller that the API, the metrics, the
 * CLI and the simulation control channel see: what a controller does (the
 * wire contract's operations), what it holds, how it and its mesh are doing,
 * and its events. Nothing outside the core and the composition root reaches
 * past it. `controllerView()` builds it from the core and what the running
 * process knows (NodeFacts).
 */
import { EventEmitter } from 'node:events'
import type { Identity } from '../identity/index.ts'
import type { HealthState } from '../liveness/index.ts'
import type { MemberStatus } from '../membership/index.ts'
import type { RegistryStats } from '../registry/index.ts'
import type {
  CapabilitySummary, DeregisterReply, DrainReply, HealthReply, HeartbeatReply, HeartbeatRequest, ImportReply, MemberStatus as MemberStatusBody,
  MeshKeyStatus, MeshReply, PeerStatus, PortableState, RegisterBatchReply, RegisterReply, RegisterRequest, RouteQuery, RouteResult, SyncHealth, WorkersReply
} from '../wire/index.ts'
import type { ChangeLogPosition, WatchCursor, Watcher, WatchFilter } from './changes.ts'
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
  /** The accepted mesh keys, the primary first (empty while the mesh is down). */
  meshKeys: () => MeshKeyStatus[]
  /** The peer allow list in force and the peers it refused. */
  admission: () => MeshReply['admission'] & { refused: MeshReply['refused'] }
  config: () => { heartbeat_interval_ms: number, unhealthy_after_ms: number, stale_after_ms: number }
  auth: () => HealthReply['auth']
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
  /** Registry data was refused whole: from a peer (gossip or sync), an import, or the data dir; unsigned (a segment without its owner's seal) or malformed. */
  dataRefused: [origin: 'remote' | 'import' | 'load', kind: 'unsigned' | 'malformed']
  /** An anti-entropy exchange ended, either side: ok (with the bytes received) or failed (with why). */
  sync: [result: { ok: true, bytesReceived: number } | { ok: false, reason: string }]
  /** A peer the allow list does not admit was turned away, and where (RefusalReason). */
  refused: [reason: string]
  /** A connection was keyed with none of the accepted mesh keys. */
  meshKeyMismatch: []
}

/**
 * The operations take who asks (`actor`): an authenticated identity, or null
 * when the controller runs with auth off.
 */
export interface ControllerView {
  readonly controllerId: string
  register: (req: RegisterRequest, actor: Identity | null) => RegisterReply
  registerBatch: (workers: RegisterRequest[], actor: Identity | null) => RegisterBatchReply
  heartbeat: (req: HeartbeatRequest, actor: Identity | null) => HeartbeatReply
  drain: (workerId: string, incarnation: number | undefined, actor: Identity | null) => DrainReply
  deregister: (workerId: string, actor: Identity | null) => DeregisterReply
  route: (q: RouteQuery, actor: Identity | null) => RouteResult
  /** `route`'s answer as JSON text: what `/route` sends (the common pick builds no object; see routing/tier.ts). */
  routeText: (q: RouteQuery, actor: Identity | null) => string
  capabilities: () => CapabilitySummary[]
  workers: (filter: { state?: HealthState, capability?: string, limit: number, offset: number }) => WorkersReply
  /** The export as JSON text in pieces (PortableState; never one string of the whole). */
  exportJson: () => Iterable<string>
  /** The export as the raw Yjs update, in pieces (their concatenation is the update; never joined into one buffer). */
  exportBinary: () => Uint8Array[]
  /** Merges a PortableState document or raw update bytes; a large one is applied in slices while the controller keeps serving. */
  importState: (doc: unknown) => Promise<ImportReply>
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
  /** Ids of the accepted mesh keys, the primary first. */
  meshKeyIds: () => string[]
  /** Anti-entropy as a whole (behind: exchanges with some peer keep failing). */
  sync: () => SyncHealth
  store: () => { logBytes: number, snapshotBytes: number } | null
  /** Where the change log stands (epoch, last index, oldest held, open watchers). O(1). */
  changes: () => ChangeLogPosition
  /**
   * A watcher of what changes from `from` on (null, or a cursor the log
   * cannot resume from: a snapshot first), through `filter`. It pulls
   * (`next()`), hears of new changes through `onReady`, and must be closed.
   */
  watch: (from: WatchCursor | null, filter: WatchFilter) => Watcher
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
        mesh_key_id: facts.meshKeys()[0]?.id ?? null,
        mesh_key_ids: facts.meshKeys().filter(k => k.accepted).map(k => k.id)
      },
      store: facts.store(),
      tls: { ca_path: facts.caPath() },
      auth: facts.auth(),
      config: facts.config()
    }
  }
  const mesh = (): MeshReply => {
    const keys = facts.meshKeys()
    const { refused, ...admission } = facts.admission()
    return {
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
      mesh_key_id: keys[0]?.id ?? null,
      mesh_keys: keys,
      admission,
      refused
    }
  }
  return {
    controllerId: core.controllerId,
    register: (req, actor) => core.register(req, actor),
    registerBatch: (workers, actor) => core.registerBatch(workers, actor),
    heartbeat: (req, actor) => core.heartbeat(req, actor),
    drain: (id, incarnation, actor) => core.drain(id, incarnation, actor),
    deregister: (id, actor) => core.deregister(id, actor),
    route: (q, actor) => core.route(q, actor),
    routeText: (q, actor) => core.routeText(q, actor),
    capabilities: () => core.capabilities(),
    workers: filter => core.workers(filter),
    exportJson: () => core.exportJson(),
    exportBinary: () => core.exportBinary(),
    importState: async doc => await core.importState(doc),
    health,
    mesh,
    stateCounts: () => core.stateCounts(),
    ownCounts: () => core.ownCounts(),
    registryStats: () => core.registryStats(),
    registryHash: () => core.registryHash,
    selfPreservation: () => core.selfPreservation,
    members: () => core.members(),
    connectedPeers: () => facts.connectedPeers(),
    meshKeyIds: () => facts.meshKeys().filter(k => k.accepted).map(k => k.id),
    sync: () => facts.sync(),
    store: () => facts.store(),
    changes: () => core.changes.position(),
    watch: (from, filter) => core.changes.watch(from, filter),
    on: (event, listener) => { events.on(event, listener as never) },
    off: (event, listener) => { events.off(event, listener as never) }
  }
}
