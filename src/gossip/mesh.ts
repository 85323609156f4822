/**
 * A controller's libp2p node (this folder is the only code that touches
 * libp2p). A Mesh joins one controller's registry to the other controllers':
 *
 * - local registry updates are batched per tick and published on the
 *   registry topic (too large for one message: a sync hint instead);
 * - every incoming message is validated in the gossipsub topic validator
 *   before it can touch the document, and a peer sending garbage is rejected
 *   (gossipsub scores it down) and logged once;
 * - anti-entropy (the protocol in sync.ts, scheduled by exchanges.ts) runs
 *   when a connection opens, on a hint, and every `syncIntervalMs` with a
 *   peer that seems to differ (now and then with any);
 * - a reconnect loop (dialer.ts) re-dials bootstrap addresses and known
 *   controllers, so a healed partition or a restarted peer rejoins by itself;
 * - liveness digests from the core go out on their own topic.
 *
 * This file holds the node, its options and the gossip; what the parts know
 * of each peer is one PeerTable (peers.ts). Every connection is keyed by
 * the mesh key (mesh-key.ts) below noise: only controllers holding it connect.
 *
 * `block()` / `unblock()` cut and restore links to given peers through the
 * connection gater: what tests and the simulation harness use for partitions.
 */
import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub, TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Logger } from 'pino'
import * as Y from 'yjs'
import {
  DEFAULT_MAX_GOSSIP_BYTES, DEFAULT_MAX_SYNC_BYTES, DEFAULT_RECONNECT_INTERVAL_MS, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_SYNC_TIMEOUT_MS
} from '../constants.ts'
import { MissingDependencyError, Origin, validateUpdate, type Registry, type ValidUpdate } from '../registry/index.ts'
import { Dialer } from './dialer.ts'
import { decodeDigest, decodeEnvelope, encodeDigest, encodeEnvelope, Kind, type Digest, type Envelope } from './envelope.ts'
import { Exchanges, type BehindPeer } from './exchanges.ts'
import { loadOrCreatePeerKey } from './keys.ts'
import { PeerTable } from './peers.ts'
import { privateNetwork } from './private-network.ts'
import { SYNC_PROTOCOL, SYNC_PROTOCOL_V2, SYNC_PROTOCOLS, type SyncFailureReason, type SyncReplica, type SyncResult } from './sync.ts'
import { useHalfWindowUpdates } from './yamux-window.ts'

export const REGISTRY_TOPIC = 'capmesh/registry/2'
export const LIVENESS_TOPIC = 'capmesh/liveness/2'

const NO_BYTES = new Uint8Array(0)

function fastMessageId (msg: { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array }): string {
  return createHash('sha1').update(msg.from ?? NO_BYTES).update(msg.seqno ?? NO_BYTES).update(msg.topic).update(msg.data ?? NO_BYTES).digest('base64')
}

/** gossipsub mesh degree and gossip fan-out (see the comment where they are used). */
const MESH_DEGREE = { D: 1, Dlo: 1, Dhi: 2, Dout: 0, Dscore: 0, Dlazy: 2, gossipFactor: 0, idontwantMinDataSize: 16 * 1024 }
/** Inbound connections accepted per second from one host, and in the handshake at once (libp2p: 5 and 10). */
const INBOUND_CONNECTIONS_PER_SECOND = 256
/** How often libp2p pings each connection to find dead links (its default is 10 s). */
const CONNECTION_PING_INTERVAL_MS = 60_000
/** The mesh-key nonce exchange at the start of every connection must finish within this (@libp2p/pnet: 1 s). */
const MESH_KEY_HANDSHAKE_TIMEOUT_MS = 5_000

export interface MeshInit {
  registry: Registry
  /** Folder for the persistent peer key (`peer.key`). */
  dataDir: string
  /** The 32-byte mesh key (mesh-key.ts reads it): only peers holding it can connect. */
  meshKey: Uint8Array
  /** p2p bind address. @default '127.0.0.1' */
  host?: string
  /** p2p TCP port; 0 picks one. @default 9100 */
  port?: number
  /** Multiaddrs of other controllers (`/ip4/127.0.0.1/tcp/9101`, peer id optional). @default [] */
  bootstrap?: string[]
  /** Anti-entropy with a random peer this often (ms). @default 5000 */
  syncIntervalMs?: number
  /** Re-dial missing peers this often (ms); back-off caps at 4x. @default 1000 */
  reconnectIntervalMs?: number
  /** Largest gossip message (bytes); larger updates travel by sync. @default 1 MiB */
  maxMessageBytes?: number
  /** Largest anti-entropy delta accepted from a peer (bytes): a whole registry must fit. @default 256 MiB */
  maxSyncBytes?: number
  /** Give up a sync after this long (ms). @default 15000 */
  syncTimeoutMs?: number
  /** This controller's registry hash, compared with the peers' to pick periodic exchanges. @default every peer always looks different */
  registryHash?: () => string
  log: Logger
}

export interface PeerStatus {
  peer_id: string
  controller_id: string | null
  connected: boolean
  /** ISO time of the last completed anti-entropy exchange. */
  last_sync_at: string | null
  last_sync_ms: number | null
  /** State vectors were equal at the last exchange. */
  in_sync: boolean | null
  /** `behind`: exchanges with it keep failing (see sync_failures and last_sync_error). */
  sync_state: 'ok' | 'failing' | 'behind'
  /** Failed exchanges in a row (0 after a success). */
  sync_failures: number
  /** The last failure of this run, null once an exchange succeeds. */
  last_sync_error: { reason: SyncFailureReason, message: string, at: string } | null
  last_message_at: string | null
}

export interface MeshEvents {
  /** A valid liveness digest from a controller. Listeners must not block. */
  digest: [controllerId: string, digest: Digest]
  /** Any valid message from a controller: proof that it is alive. */
  heard: [controllerId: string]
  /** A sync completed. */
  sync: [result: SyncResult & { peerId: string, ms: number }]
  /** A sync exchange failed, either side, and why. */
  'sync:failed': [peerId: string, reason: SyncFailureReason]
  /** A gossip message was checked: applied next (accepted), dropped as out of order (ignored), or malformed (rejected). */
  gossip: [topic: string, result: GossipVerdict]
  'peer:connect': [peerId: string]
  'peer:disconnect': [peerId: string]
}

export type GossipVerdict = 'accepted' | 'ignored' | 'rejected'

export class Mesh extends EventEmitter<MeshEvents> {
  private readonly init: MeshInit
  private readonly registry: Registry
  private readonly log: Logger
  private readonly maxMessageBytes: number
  private node: Libp2p<{ pubsub: GossipSub }> | null = null
  private readonly peers = new PeerTable()
  private readonly exchanges: Exchanges
  private readonly dialer: Dialer
  /** A peer never connected before has connected since the last digest: the next one introduces the mesh to it. */
  private introduceNext = true
  private readonly decoded = new WeakMap<Uint8Array, Envelope>()
  /** Payloads the topic validator already checked against this document (a check stays true as the document grows). */
  private readonly validated = new WeakMap<Uint8Array, ValidUpdate>()
  /**
   * Simulated faults, for tests and the simulation harness: every incoming
   * gossip message is dropped with probability `lossRate`, and incoming
   * messages and sync exchanges are delayed by `delayMs`. Zero in production.
   */
  readonly faults = { delayMs: 0, lossRate: 0 }
  private pending: Uint8Array[] = []
  private flushQueued = false
  private timers: NodeJS.Timeout[] = []
  private stopped = false
  private readonly onUpdate = (update: Uint8Array, origin: Origin): void => {
    if (origin !== Origin.local && origin !== Origin.import && origin !== Origin.restore) return
    this.pending.push(update)
    if (!this.flushQueued) {
      this.flushQueued = true
      setImmediate(() => { this.flush() })
    }
  }

  constructor (init: MeshInit) {
    super()
    this.init = init
    this.registry = init.registry
    this.log = init.log
    this.maxMessageBytes = init.maxMessageBytes ?? DEFAULT_MAX_GOSSIP_BYTES
    const registry = init.registry
    const replica: SyncReplica = {
      stateVector: () => registry.encodeStateVector(),
      checkStateVector: sv => { registry.checkStateVector(sv) },
      diff: sv => registry.encodeDiff(sv),
      apply: update => { registry.applyUpdate(update, Origin.remote) }
    }
    this.exchanges = new Exchanges({
      controllerId: registry.controllerId,
      replica,
      peers: this.peers,
      log: init.log,
      peerId: () => this.peerId,
      dial: async (peerId, signal) => await this.libp2p.dialProtocol(peerIdFromString(peerId), SYNC_PROTOCOLS, { signal }),
      registryHash: init.registryHash,
      faults: this.faults,
      maxSyncBytes: init.maxSyncBytes ?? DEFAULT_MAX_SYNC_BYTES,
      syncTimeoutMs: init.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS,
      onSync: result => {
        this.emit('heard', result.peerController)
        this.emit('sync', result)
      },
      onSyncFailed: (peerId, reason) => { this.emit('sync:failed', peerId, reason) }
    })
    this.dialer = new Dialer({ peers: this.peers, node: () => this.node, peerId: () => this.peerId, log: this.log })
  }

  get peerId (): string { return this.libp2p.peerId.toString() }

  get multiaddrs (): string[] { return this.libp2p.getMultiaddrs().map(String) }

  private get libp2p (): Libp2p<{ pubsub: GossipSub }> {
    if (this.node == null) throw new Error('mesh is not started')
    return this.node
  }

  async start (): Promise<void> {
    useHalfWindowUpdates()
    const key = await loadOrCreatePeerKey(join(this.init.dataDir, 'peer.key'))
    const withPeerId = (this.init.bootstrap ?? []).filter(a => a.includes('/p2p/'))
    this.dialer.setBootstrap(this.init.bootstrap ?? [])
    const blocked = this.peers.blocked
    this.node = await createLibp2p({
      privateKey: key,
      addresses: { listen: [`/ip4/${this.init.host ?? '127.0.0.1'}/tcp/${this.init.port ?? 9100}`] },
      transports: [tcp()],
      // Below noise: a node without the mesh key fails here, before it can handshake, publish or sync.
      // The nonce exchange gets the dial's patience, not @libp2p/pnet's 1 s (a loaded machine mid-heal is slow).
      connectionProtector: privateNetwork({ key: this.init.meshKey, timeoutMs: MESH_KEY_HANDSHAKE_TIMEOUT_MS }),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionGater: {
        denyDialPeer: (peer: PeerId) => blocked.has(peer.toString()),
        denyInboundEncryptedConnection: (peer: PeerId) => blocked.has(peer.toString()),
        denyOutboundEncryptedConnection: (peer: PeerId) => blocked.has(peer.toString())
      },
      peerDiscovery: withPeerId.length > 0 ? [bootstrap({ list: withPeerId })] : [],
      // libp2p pings every connection every 10 s by default: at 32 controllers that alone was ~100 pings
      // a second. Controllers already hear from each other (digests, keepalives); the ping is only
      // for noticing a dead link, for which a minute is soon enough.
      connectionMonitor: { pingInterval: CONNECTION_PING_INTERVAL_MS },
      // libp2p accepts 5 inbound connections a second per host and 10 in the handshake at once: after a
      // heal every controller of the other side dials at once (16 at N = 32), and controllers often
      // share a host, so most were refused, dialled again, refused again (1,600 dials for 256 links).
      connectionManager: { inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_SECOND, maxIncomingPendingConnections: INBOUND_CONNECTIONS_PER_SECOND },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          allowPublishToZeroTopicPeers: true,
          floodPublish: true,
          emitSelf: false,
          allowedTopics: [REGISTRY_TOPIC, LIVENESS_TOPIC],
          // Controllers often share a host (and always do on loopback): the default IP-colocation
          // penalty would stop gossip to every peer past the 10th on one address.
          scoreParams: { IPColocationFactorWeight: 0 },
          maxInboundDataLength: this.maxMessageBytes + 64 * 1024,
          // Every receiver gets a copy from each mesh neighbour; without a fast id each copy has its
          // signature checked before it is found to be a duplicate (most of an idle mesh's CPU at N=32).
          // The id covers the data, so a forged copy cannot shadow the real message.
          fastMsgIdFn: fastMessageId,
          // Controllers keep a full mesh (each dials every other it hears of) and flood-publish, so a
          // message's first copy reaches every peer in one hop. Mesh forwarding and IHAVE gossip only
          // cover a link that is missing for a moment (a controller joining, a link being re-dialled),
          // which anti-entropy covers too: kept to a minimum. With gossipsub's defaults (D = 6) every
          // message reached each controller ~7 times, at ~0.2-0.5 ms of CPU per copy.
          ...MESH_DEGREE
        })
      }
    })
    const pubsub = this.libp2p.services.pubsub
    pubsub.topicValidators.set(REGISTRY_TOPIC, (peer, msg) => this.validate(peer, msg))
    pubsub.topicValidators.set(LIVENESS_TOPIC, (peer, msg) => this.validate(peer, msg))
    pubsub.addEventListener('message', evt => { this.onMessage(evt.detail) })
    pubsub.subscribe(REGISTRY_TOPIC)
    pubsub.subscribe(LIVENESS_TOPIC)

    await this.libp2p.handle([SYNC_PROTOCOL, SYNC_PROTOCOL_V2], (stream: Stream, conn) => {
      this.exchanges.respond(stream, conn.remotePeer.toString())
    }, { maxInboundStreams: 16 })

    this.libp2p.addEventListener('peer:connect', evt => {
      const id = evt.detail.toString()
      this.peers.connected.add(id)
      const s = this.peers.get(id)
      if (s == null || s.connectedAt === 0) this.introduceNext = true
      this.peers.state(id).connectedAt = performance.now()
      this.dialer.clearBackoff(id)
      this.exchanges.connected(id)
      this.emit('peer:connect', id)
      // One side starts the exchange (the smaller peer id); the periodic sync covers a failure.
      if (id > this.peerId) this.exchanges.want(id)
    })
    this.libp2p.addEventListener('peer:disconnect', evt => {
      const id = evt.detail.toString()
      this.peers.connected.delete(id)
      this.emit('peer:disconnect', id)
    })

    this.registry.on('update', this.onUpdate)
    const syncEvery = this.init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
    const reconnectEvery = this.init.reconnectIntervalMs ?? DEFAULT_RECONNECT_INTERVAL_MS
    this.timers.push(setInterval(() => { void this.exchanges.syncRandomPeer() }, syncEvery))
    this.timers.push(setInterval(() => { this.dialer.reconnect(reconnectEvery) }, reconnectEvery))
    for (const t of this.timers) t.unref()
    this.dialer.reconnect(reconnectEvery)
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    this.exchanges.stop()
    this.dialer.stop()
    this.registry.off('update', this.onUpdate)
    await this.node?.stop()
    this.node = null
    this.peers.connected.clear()
  }

  /**
   * Publishes a liveness digest, with this controller's addresses and, after
   * a controller it never met connected, an address of every controller it
   * is connected to (the newcomer's way to the whole mesh: ~100 bytes per
   * controller, so only then; a heal reconnects controllers that know each
   * other already).
   */
  publishDigest (digest: Digest): void {
    if (this.node == null) return
    const withAddrs: Digest = { ...digest, addrs: this.multiaddrs.slice(0, 16) }
    if (this.introduceNext) withAddrs.peers = this.introductions()
    this.introduceNext = false
    this.publish(LIVENESS_TOPIC, { kind: Kind.digest, controllerId: this.registry.controllerId, payload: encodeDigest(withAddrs) })
  }

  /** An address of each controller this one is connected to and knows where to reach (for its digests). */
  introductions (): string[] {
    return this.dialer.introductions()
  }

  /** Runs anti-entropy with one peer now; null if it could not (see Exchanges.syncWith). */
  async syncWith (peerId: string, opts: { background?: boolean } = {}): Promise<SyncResult | null> {
    return await this.exchanges.syncWith(peerId, opts)
  }

  /** True while this controller is in a sync exchange that started less than BUSY_WINDOW_MS ago (see Exchanges.busy). */
  get busy (): boolean { return this.exchanges.busy }

  /** Exchanges queued or in progress (a mesh that just formed or healed works through one per new link). */
  get backlog (): number { return this.exchanges.backlog }

  /** Connected peers whose anti-entropy exchanges keep failing (see Exchanges.behind). */
  behind (): BehindPeer[] { return this.node == null ? [] : this.exchanges.behind() }

  /** Peers currently connected (any libp2p peer, controllers or not). */
  connectedPeers (): string[] {
    return this.node == null ? [] : [...this.peers.connected]
  }

  /**
   * Cuts every link to `peerIds` and refuses new ones until unblocked.
   * Used for partitions in tests and simulations.
   */
  async block (peerIds: string[]): Promise<void> {
    for (const p of peerIds) this.peers.blocked.add(p)
    await Promise.all(peerIds.map(async p => {
      await this.node?.hangUp(peerIdFromString(p)).catch(() => {})
    }))
  }

  unblock (peerIds?: string[]): void {
    for (const p of peerIds ?? [...this.peers.blocked]) {
      this.peers.blocked.delete(p)
      this.dialer.clearBackoff(p)
    }
  }

  status (): { peer_id: string, listen_addrs: string[], connected: number, peers: PeerStatus[] } {
    const connected = new Set(this.connectedPeers())
    const behind = new Set(this.behind().map(b => b.peerId))
    const peers: PeerStatus[] = []
    for (const [id, s] of this.peers) {
      if (s.controllerId == null && !connected.has(id)) continue
      const f = s.syncFailure
      peers.push({
        peer_id: id,
        controller_id: s.controllerId,
        connected: connected.has(id),
        last_sync_at: s.lastSyncAt != null ? new Date(s.lastSyncAt).toISOString() : null,
        last_sync_ms: s.lastSyncMs != null ? Math.round(s.lastSyncMs * 10) / 10 : null,
        in_sync: s.inSync,
        sync_state: behind.has(id) ? 'behind' : f != null ? 'failing' : 'ok',
        sync_failures: f?.count ?? 0,
        last_sync_error: f == null ? null : { reason: f.reason, message: f.error, at: new Date(f.at).toISOString() },
        last_message_at: s.lastMessageAt != null ? new Date(s.lastMessageAt).toISOString() : null
      })
    }
    return { peer_id: this.peerId, listen_addrs: this.multiaddrs, connected: connected.size, peers }
  }

  // -------------------------------------------------------------- internals

  private flush (): void {
    this.flushQueued = false
    if (this.pending.length === 0 || this.node == null) return
    const pending = this.pending
    this.pending = []
    const controllerId = this.registry.controllerId
    // Size first: merging is super-linear in the number of updates, and a batch this big travels by sync anyway.
    const bytes = pending.reduce((n, u) => n + u.length, 0)
    if (bytes + 80 <= this.maxMessageBytes) {
      const update = pending.length === 1 ? pending[0] : Y.mergeUpdates(pending)
      if (update.length + 80 <= this.maxMessageBytes) {
        this.publish(REGISTRY_TOPIC, { kind: Kind.update, controllerId, payload: update })
        return
      }
    }
    {
      // Too big for one gossip message (a compaction of a large segment): peers pull it by sync.
      this.publish(REGISTRY_TOPIC, { kind: Kind.hint, controllerId, payload: new Uint8Array(0) })
    }
  }

  private publish (topic: string, e: Envelope): void {
    if (this.node == null) return
    this.node.services.pubsub.publish(topic, encodeEnvelope(e)).catch((err: Error) => {
      this.log.debug({ topic, err: err.message }, 'publish failed')
    })
  }

  private validate (peer: PeerId, msg: Message): TopicValidatorResult {
    const result = this.check(peer, msg)
    this.emit('gossip', msg.topic, result === TopicValidatorResult.Accept ? 'accepted' : result === TopicValidatorResult.Ignore ? 'ignored' : 'rejected')
    return result
  }

  private check (peer: PeerId, msg: Message): TopicValidatorResult {
    try {
      const env = decodeEnvelope(msg.data, this.maxMessageBytes)
      if (msg.topic === REGISTRY_TOPIC) {
        if (env.kind === Kind.update) this.validated.set(env.payload, validateUpdate(env.payload, this.registry.doc))
        else if (env.kind !== Kind.hint) throw new Error(`kind ${env.kind} on the registry topic`)
      } else if (msg.topic === LIVENESS_TOPIC) {
        if (env.kind !== Kind.digest) throw new Error(`kind ${env.kind} on the liveness topic`)
        decodeDigest(env.payload)
      }
      this.decoded.set(msg.data, env)
      return TopicValidatorResult.Accept
    } catch (err) {
      // Out of order, not malformed: drop it without blaming the sender; anti-entropy will bring it.
      if (err instanceof MissingDependencyError) return TopicValidatorResult.Ignore
      const from = msg.type === 'signed' ? msg.from.toString() : peer.toString()
      if (!this.peers.loggedBadPeers.has(from)) {
        this.peers.loggedBadPeers.add(from)
        this.log.warn({ peer: from, via: peer.toString(), topic: msg.topic, err: (err as Error).message }, 'rejected a malformed gossip message (further ones from this peer are rejected silently)')
      }
      return TopicValidatorResult.Reject
    }
  }

  private onMessage (msg: Message): void {
    if (this.faults.lossRate > 0 && Math.random() < this.faults.lossRate) return
    if (this.faults.delayMs > 0) {
      setTimeout(() => { this.handleMessage(msg) }, this.faults.delayMs)
      return
    }
    this.handleMessage(msg)
  }

  private handleMessage (msg: Message): void {
    if (this.stopped) return
    const env = this.decoded.get(msg.data) ?? safeDecode(msg.data, this.maxMessageBytes)
    if (env == null) return
    const from = msg.type === 'signed' ? msg.from.toString() : null
    if (from != null) {
      const s = this.peers.state(from)
      s.controllerId = env.controllerId
      s.lastMessageAt = Date.now()
    }
    this.emit('heard', env.controllerId)
    try {
      if (env.kind === Kind.update) this.registry.applyUpdate(env.payload, Origin.remote, { validated: this.validated.get(env.payload) })
      else if (env.kind === Kind.digest) {
        const d = decodeDigest(env.payload)
        if (from != null) {
          if (d.addrs != null) this.dialer.learnAddrs(from, d.addrs)
          if (d.peers != null) this.dialer.learnIntroduced(d.peers)
          const s = this.peers.state(from)
          s.hash = d.registry_hash
          s.hashAt = performance.now()
        }
        this.emit('digest', env.controllerId, d)
      }
      else if (env.kind === Kind.hint && from != null) this.exchanges.want(from)
    } catch (err) {
      this.log.warn({ peer: from, err: (err as Error).message }, 'could not apply a gossip message')
    }
  }
}

function safeDecode (data: Uint8Array, max: number): Envelope | null {
  try {
    return decodeEnvelope(data, max)
  } catch {
    return null
  }
}
