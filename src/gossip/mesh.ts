/**
 * A controller's libp2p node (this folder is the only code that touches
 * libp2p). A Mesh joins one replica to the other controllers' replicas:
 *
 * - local updates (Replica.onLocalUpdate) are batched per tick and
 *   published on the registry topic (too large for one message: a sync hint
 *   instead);
 * - every incoming message is checked in the gossipsub topic validator
 *   before it can touch the replica, and a peer sending garbage is rejected
 *   (gossipsub scores it down) and logged once;
 * - other topics (`topics`: the liveness digests of membership/) carry
 *   opaque payloads: their handler checks each once in the validator and
 *   receives it once delivered;
 * - anti-entropy (the protocol in sync.ts, scheduled by exchanges.ts) runs
 *   when a connection opens, on a hint, and every `syncIntervalMs` with a
 *   peer that seems to differ (now and then with any);
 * - a reconnect loop (dialer.ts) re-dials bootstrap addresses and known
 *   controllers, so a healed partition or a restarted peer rejoins by itself.
 *
 * Every connection is keyed by the mesh key (private-network.ts) below
 * noise: only controllers holding it connect. Tests and simulations inject
 * partitions, loss and delay through `faults` (faults.ts).
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
import {
  CONNECTION_PING_INTERVAL_MS, DEFAULT_MAX_GOSSIP_BYTES, DEFAULT_MAX_SYNC_BYTES, DEFAULT_P2P_PORT, DEFAULT_RECONNECT_INTERVAL_MS,
  DEFAULT_HOST, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_SYNC_TIMEOUT_MS, GOSSIP_MESH_DEGREE, INBOUND_CONNECTIONS_PER_SECOND,
  MESH_KEY_HANDSHAKE_TIMEOUT_MS, SYNC_MAX_INBOUND_STREAMS
} from '../constants.ts'
import { announceAddrs, bindIp, isWildcard, routable, systemResolve, tcpAddr, type Resolve } from './addresses.ts'
import { Dialer } from './dialer.ts'
import { decodeEnvelope, encodeEnvelope, Kind, type Envelope } from './envelope.ts'
import { Exchanges, type BehindPeer } from './exchanges.ts'
import type { NetworkFaults } from './faults.ts'
import { loadOrCreatePeerKey } from './keys.ts'
import { PeerTable, type PeerView } from './peers.ts'
import { privateNetwork } from './private-network.ts'
import type { Replica } from './replica.ts'
import { SYNC_PROTOCOL, type SyncFailureReason, type SyncResult } from './sync.ts'
import { useHalfWindowUpdates } from './yamux-window.ts'

export const REGISTRY_TOPIC = 'capmesh/registry/3'

const NO_BYTES = new Uint8Array(0)
/** Room for the envelope around an update in a gossip message. */
const ENVELOPE_BYTES = 80

function fastMessageId (msg: { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array }): string {
  return createHash('sha1').update(msg.from ?? NO_BYTES).update(msg.seqno ?? NO_BYTES).update(msg.topic).update(msg.data ?? NO_BYTES).digest('base64')
}

/** Who sent a message: the controller id in its envelope, and the libp2p peer that signed it. */
export interface Sender {
  controllerId: string
  peerId: string
}

/** A topic other than the registry's: opaque payloads in the envelope, checked once, then delivered. */
export interface TopicHandler<T = unknown> {
  /** Checks a payload in the topic validator; throws to reject it as malformed (the sender is scored down). */
  check: (payload: Uint8Array, sender: Sender) => T
  /** A message `check` accepted, once gossipsub delivers it. Must not block. */
  deliver: (value: T, sender: Sender) => void
}

export interface MeshInit {
  /** This controller's id: the sender of what it publishes. */
  controllerId: string
  /** The replicated state this mesh keeps in step with the peers'. */
  replica: Replica
  /** Folder for the persistent peer key (`peer.key`). */
  dataDir: string
  /** The 32-byte mesh key (mesh-key.ts reads it): only peers holding it can connect. */
  meshKey: Uint8Array
  /** p2p bind address: an IP, a wildcard (`0.0.0.0`, `::`) or a host name (looked up once). @default '127.0.0.1' */
  host?: string
  /** p2p TCP port; 0 picks one. @default 9100 */
  port?: number
  /**
   * Host names or IPs peers reach this controller at (with `port`, which must then be fixed):
   * what it announces in identify and its digests.
   * @default the bound address; bound to a wildcard, the interface addresses other than loopback
   */
  advertise?: string[]
  /** Multiaddrs of other controllers (`/ip4/127.0.0.1/tcp/9101`, `/dns4/c2/tcp/9100`, peer id optional). @default [] */
  bootstrap?: string[]
  /** Looks up the DNS names in bootstrap and peer addresses, on every dial. @default the system's resolver */
  resolve?: Resolve
  /** Anti-entropy with a random peer this often (ms). @default 5000 */
  syncIntervalMs?: number
  /** Re-dial missing peers this often (ms); back-off caps at 4x. @default 1000 */
  reconnectIntervalMs?: number
  /** Largest gossip message (bytes); larger updates travel by sync. @default 1 MiB */
  maxMessageBytes?: number
  /** Largest anti-entropy delta accepted from a peer (bytes): a whole registry must fit. @default 256 MiB */
  maxSyncBytes?: number
  /** Give up a sync when a read or write makes no progress for this long (ms). @default 15000 */
  syncTimeoutMs?: number
  /** This controller's registry hash, compared with the peers' to pick periodic exchanges. @default every peer always looks different */
  registryHash?: () => string
  /** A peer's registry hash as last known, and when it was learnt (monotonic ms). @default none known */
  peerHash?: (peerId: string) => { hash: string, at: number } | null
  /** Other topics and their handlers (the liveness digests). @default none */
  topics?: Record<string, TopicHandler<any>>
  /** Simulated partitions, loss and delay (tests and simulations). @default none */
  faults?: NetworkFaults
  log: Logger
}

export interface MeshEvents {
  /** Any valid message from a controller, or a completed exchange with it: proof that it is alive. */
  heard: [controllerId: string, peerId: string]
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

/** What the validator found in a message, for the handler (each message is decoded and checked once). */
interface Checked {
  env: Envelope
  /** The replica's token (registry updates) or the topic handler's value. */
  value: unknown
}

export class Mesh extends EventEmitter<MeshEvents> {
  private readonly init: MeshInit
  private readonly replica: Replica
  private readonly log: Logger
  private readonly maxMessageBytes: number
  private readonly topics: Record<string, TopicHandler<any>>
  private readonly faults: NetworkFaults | null
  private node: Libp2p<{ pubsub: GossipSub }> | null = null
  private readonly peers = new PeerTable()
  private readonly exchanges: Exchanges
  private readonly dialer: Dialer
  /** The address the p2p listener is bound to (a wildcard stays one), set at start. */
  private bound: { ip: string, port: number } | null = null
  private readonly checked = new WeakMap<Uint8Array, Checked>()
  private pending: Uint8Array[] = []
  private flushQueued = false
  private timers: NodeJS.Timeout[] = []
  private unsubscribe: (() => void) | null = null
  private stopped = false

  constructor (init: MeshInit) {
    super()
    this.init = init
    this.replica = init.replica
    this.log = init.log
    this.maxMessageBytes = init.maxMessageBytes ?? DEFAULT_MAX_GOSSIP_BYTES
    this.topics = init.topics ?? {}
    this.faults = init.faults ?? null
    const blocked = (p: string): boolean => this.faults?.blocked(p) ?? false
    this.exchanges = new Exchanges({
      controllerId: init.controllerId,
      replica: init.replica,
      peers: this.peers,
      log: init.log,
      peerId: () => this.peerId,
      dial: async (peerId, signal) => await this.libp2p.dialProtocol(peerIdFromString(peerId), SYNC_PROTOCOL, { signal }),
      registryHash: init.registryHash,
      peerHash: init.peerHash,
      blocked,
      faults: this.faults,
      maxSyncBytes: init.maxSyncBytes ?? DEFAULT_MAX_SYNC_BYTES,
      syncTimeoutMs: init.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS,
      onSync: result => {
        this.emit('heard', result.peerController, result.peerId)
        this.emit('sync', result)
      },
      onSyncFailed: (peerId, reason) => { this.emit('sync:failed', peerId, reason) }
    })
    this.dialer = new Dialer({ peers: this.peers, node: () => this.node, peerId: () => this.peerId, blocked, resolve: init.resolve, log: this.log })
  }

  get peerId (): string { return this.libp2p.peerId.toString() }

  /** What this controller tells peers (identify, digests): its announced addresses with its peer id. */
  get multiaddrs (): string[] { return this.libp2p.getMultiaddrs().map(String) }

  /** Where the p2p listener is bound, with its port (a wildcard stays one: it is not announced). */
  get listenAddrs (): string[] {
    if (this.node == null || this.bound == null) return []
    let port = this.bound.port
    if (port === 0) {
      // Announced addresses come from the transport when the port was picked at start: it is theirs.
      const m = /\/tcp\/(\d+)/.exec(this.multiaddrs[0] ?? '')
      if (m == null) return []
      port = Number(m[1])
    }
    return [tcpAddr(this.bound.ip, port)]
  }

  private get libp2p (): Libp2p<{ pubsub: GossipSub }> {
    if (this.node == null) throw new Error('mesh is not started')
    return this.node
  }

  async start (): Promise<void> {
    useHalfWindowUpdates()
    const key = await loadOrCreatePeerKey(join(this.init.dataDir, 'peer.key'))
    const withPeerId = (this.init.bootstrap ?? []).filter(a => a.includes('/p2p/'))
    this.dialer.setBootstrap(this.init.bootstrap ?? [])
    const faults = this.faults
    const topics = [REGISTRY_TOPIC, ...Object.keys(this.topics)]
    const ip = await bindIp(this.init.host ?? DEFAULT_HOST, systemResolve)
    const port = this.init.port ?? DEFAULT_P2P_PORT
    const advertise = this.init.advertise ?? []
    if (advertise.length > 0 && port === 0) throw new Error('advertised addresses need a fixed p2p port')
    this.bound = { ip, port }
    this.node = await createLibp2p({
      privateKey: key,
      addresses: {
        listen: [tcpAddr(ip, port)],
        // Announced explicitly, so that libp2p tells peers an address it has not verified itself
        // (it holds back public ones until autonat confirms them) and never 0.0.0.0.
        announce: port === 0 ? [] : announceAddrs(ip, port, advertise),
        // A port picked at start is known only once bound: libp2p announces what the transport
        // reports, on a wildcard every interface address, of which loopback is useless to peers.
        announceFilter: port === 0 && isWildcard(ip) ? routable : undefined
      },
      transports: [tcp()],
      // Below noise: a node without the mesh key fails here, before it can handshake, publish or sync.
      connectionProtector: privateNetwork({ key: this.init.meshKey, timeoutMs: MESH_KEY_HANDSHAKE_TIMEOUT_MS }),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionGater: faults == null
        ? {}
        : {
            denyDialPeer: (peer: PeerId) => faults.blocked(peer.toString()),
            denyInboundEncryptedConnection: (peer: PeerId) => faults.blocked(peer.toString()),
            denyOutboundEncryptedConnection: (peer: PeerId) => faults.blocked(peer.toString())
          },
      peerDiscovery: withPeerId.length > 0 ? [bootstrap({ list: withPeerId })] : [],
      connectionMonitor: { pingInterval: CONNECTION_PING_INTERVAL_MS },
      connectionManager: { inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_SECOND, maxIncomingPendingConnections: INBOUND_CONNECTIONS_PER_SECOND },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          allowPublishToZeroTopicPeers: true,
          floodPublish: true,
          emitSelf: false,
          allowedTopics: topics,
          // Controllers often share a host (and always do on loopback): the default IP-colocation
          // penalty would stop gossip to every peer past the 10th on one address.
          scoreParams: { IPColocationFactorWeight: 0 },
          maxInboundDataLength: this.maxMessageBytes + 64 * 1024,
          // Every receiver gets a copy from each mesh neighbour; without a fast id each copy has its
          // signature checked before it is found to be a duplicate (most of an idle mesh's CPU at N=32).
          // The id covers the data, so a forged copy cannot shadow the real message.
          fastMsgIdFn: fastMessageId,
          ...GOSSIP_MESH_DEGREE
        })
      }
    })
    faults?.attach({
      hangUp: async p => { await this.node?.hangUp(peerIdFromString(p)) },
      redial: p => { this.dialer.clearBackoff(p) }
    })
    const pubsub = this.libp2p.services.pubsub
    for (const t of topics) {
      pubsub.topicValidators.set(t, (peer, msg) => this.validate(peer, msg))
      pubsub.subscribe(t)
    }
    pubsub.addEventListener('message', evt => { this.onMessage(evt.detail) })

    await this.libp2p.handle(SYNC_PROTOCOL, (stream: Stream, conn) => {
      this.exchanges.respond(stream, conn.remotePeer.toString())
    }, { maxInboundStreams: SYNC_MAX_INBOUND_STREAMS })

    this.libp2p.addEventListener('peer:connect', evt => {
      const id = evt.detail.toString()
      this.peers.connected.add(id)
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

    this.unsubscribe = this.replica.onLocalUpdate(update => { this.queue(update) })
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
    this.unsubscribe?.()
    this.unsubscribe = null
    this.faults?.attach(null)
    await this.node?.stop()
    this.node = null
    this.bound = null
    this.peers.connected.clear()
  }

  /** Publishes `payload` on one of `topics` (a message of kind 2 in the envelope). */
  publish (topic: string, payload: Uint8Array): void {
    if (!(topic in this.topics)) throw new Error(`not a topic of this mesh: ${topic}`)
    this.send(topic, { kind: Kind.message, controllerId: this.init.controllerId, payload })
  }

  /** Peers subscribed to `topic` (they would receive what is published on it now). */
  subscribers (topic: string): number {
    return this.node?.services.pubsub.getSubscribers(topic).length ?? 0
  }

  /** Remembers where a controller listens (from its digest) so the reconnect loop can dial it directly. */
  learnAddrs (peerId: string, addrs: string[]): void { this.dialer.learnAddrs(peerId, addrs) }

  /** Takes note of controllers another one says it is connected to (claims, checked by noise when dialled). */
  learnIntroduced (addrs: string[]): void { this.dialer.learnIntroduced(addrs) }

  /** An address of each controller this one is connected to and knows where to reach. */
  introductions (): string[] { return this.node == null ? [] : this.dialer.introductions() }

  /** Runs anti-entropy with one peer now; null if it could not (see Exchanges.syncWith). */
  async syncWith (peerId: string, opts: { background?: boolean } = {}): Promise<SyncResult | null> {
    return await this.exchanges.syncWith(peerId, opts)
  }

  /** True while this controller is in a sync exchange that moved bytes less than SYNC_BUSY_WINDOW_MS ago (see Exchanges.busy). */
  get busy (): boolean { return this.exchanges.busy }

  /** Exchanges queued or in progress (a mesh that just formed or healed works through one per new link). */
  get backlog (): number { return this.exchanges.backlog }

  /** Connected peers whose anti-entropy exchanges keep failing (see Exchanges.behind). */
  behind (): BehindPeer[] { return this.node == null ? [] : this.exchanges.behind() }

  /** Peers currently connected (any libp2p peer, controllers or not). */
  connectedPeers (): string[] {
    return this.node == null ? [] : [...this.peers.connected]
  }

  /** Peers as this mesh sees them: connection and anti-entropy state with each (controllers, and any other connected peer). */
  peerStatus (): PeerView[] {
    const connected = this.peers.connected
    const behind = new Set(this.behind().map(b => b.peerId))
    const out: PeerView[] = []
    for (const [id, s] of this.peers) {
      if (s.controllerId == null && !connected.has(id)) continue
      out.push({
        peerId: id,
        controllerId: s.controllerId,
        connected: connected.has(id),
        lastSyncAt: s.lastSyncAt,
        lastSyncMs: s.lastSyncMs,
        inSync: s.inSync,
        syncState: behind.has(id) ? 'behind' : s.syncFailure != null ? 'failing' : 'ok',
        syncFailure: s.syncFailure,
        lastMessageAt: s.lastMessageAt
      })
    }
    return out
  }

  // -------------------------------------------------------------- internals

  private queue (update: Uint8Array): void {
    this.pending.push(update)
    if (!this.flushQueued) {
      this.flushQueued = true
      setImmediate(() => { this.flush() })
    }
  }

  private flush (): void {
    this.flushQueued = false
    if (this.pending.length === 0 || this.node == null) return
    const pending = this.pending
    this.pending = []
    const controllerId = this.init.controllerId
    // Size first: merging is super-linear in the number of updates, and a batch this big travels by sync anyway.
    const bytes = pending.reduce((n, u) => n + u.length, 0)
    if (bytes + ENVELOPE_BYTES <= this.maxMessageBytes) {
      const update = pending.length === 1 ? pending[0] : this.replica.merge(pending)
      if (update.length + ENVELOPE_BYTES <= this.maxMessageBytes) {
        this.send(REGISTRY_TOPIC, { kind: Kind.update, controllerId, payload: update })
        return
      }
    }
    // Too big for one gossip message (a compaction of a large segment): peers pull it by sync.
    this.send(REGISTRY_TOPIC, { kind: Kind.hint, controllerId, payload: NO_BYTES })
  }

  private send (topic: string, e: Envelope): void {
    if (this.node == null) return
    const data = encodeEnvelope(e)
    if (data.length > this.maxMessageBytes) {
      // Never silently: peers would reject it as malformed and score this controller down.
      this.log.error({ topic, bytes: data.length, max: this.maxMessageBytes }, 'a gossip message exceeds the largest peers accept; not sent')
      return
    }
    this.node.services.pubsub.publish(topic, data).catch((err: Error) => {
      this.log.debug({ topic, err: err.message }, 'publish failed')
    })
  }

  private validate (peer: PeerId, msg: Message): TopicValidatorResult {
    const result = this.check(peer, msg)
    this.emit('gossip', msg.topic, result === TopicValidatorResult.Accept ? 'accepted' : result === TopicValidatorResult.Ignore ? 'ignored' : 'rejected')
    return result
  }

  private check (peer: PeerId, msg: Message): TopicValidatorResult {
    const from = msg.type === 'signed' ? msg.from.toString() : peer.toString()
    try {
      const env = decodeEnvelope(msg.data, this.maxMessageBytes)
      let value: unknown
      if (msg.topic === REGISTRY_TOPIC) {
        if (env.kind === Kind.update) {
          const c = this.replica.check(env.payload)
          // Out of order, not malformed: drop it without blaming the sender; anti-entropy will bring it.
          if (!c.ok && c.missing) return TopicValidatorResult.Ignore
          if (!c.ok) throw new Error(c.reason)
          value = c.token
        } else if (env.kind !== Kind.hint) {
          throw new Error(`kind ${env.kind} on the registry topic`)
        }
      } else {
        const handler = this.topics[msg.topic]
        if (handler == null) throw new Error(`unknown topic ${msg.topic}`)
        if (env.kind !== Kind.message) throw new Error(`kind ${env.kind} on ${msg.topic}`)
        value = handler.check(env.payload, { controllerId: env.controllerId, peerId: from })
      }
      this.checked.set(msg.data, { env, value })
      return TopicValidatorResult.Accept
    } catch (err) {
      if (!this.peers.loggedBadPeers.has(from)) {
        this.peers.loggedBadPeers.add(from)
        this.log.warn({ peer: from, via: peer.toString(), topic: msg.topic, err: (err as Error).message }, 'rejected a malformed gossip message (further ones from this peer are rejected silently)')
      }
      return TopicValidatorResult.Reject
    }
  }

  private onMessage (msg: Message): void {
    if (this.faults != null) this.faults.message(() => { this.handleMessage(msg) })
    else this.handleMessage(msg)
  }

  private handleMessage (msg: Message): void {
    if (this.stopped) return
    // Only messages the validator accepted are delivered, so each has its check result.
    const checked = this.checked.get(msg.data)
    if (checked == null || msg.type !== 'signed') return
    const { env, value } = checked
    const from = msg.from.toString()
    const s = this.peers.state(from)
    s.controllerId = env.controllerId
    s.lastMessageAt = Date.now()
    this.emit('heard', env.controllerId, from)
    try {
      if (msg.topic === REGISTRY_TOPIC) {
        if (env.kind === Kind.update) this.replica.apply(env.payload, value)
        else this.exchanges.want(from)
      } else {
        this.topics[msg.topic]?.deliver(value, { controllerId: env.controllerId, peerId: from })
      }
    } catch (err) {
      this.log.warn({ peer: from, err: (err as Error).message }, 'could not apply a gossip message')
    }
  }
}
