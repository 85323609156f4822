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
 * - given a `tracer`, local writes carry their trace context in the
 *   envelope and applying them here is a span of the same trace (tracing.ts);
 * - a reconnect loop (dialer.ts) re-dials bootstrap addresses and known
 *   controllers, so a healed partition or a restarted peer rejoins by itself.
 *
 * Every connection is keyed by the mesh key (private-network.ts) below
 * noise: only controllers holding it connect; the key ring may hold several
 * keys during a rotation (`setMeshKeys`). And only the peers the allow list
 * admits (admission.ts): the connection gater refuses every other peer's
 * connections, the dialer never dials them nor passes them on, gossip they
 * signed is dropped wherever it arrives, and a peer a reload removes is hung
 * up on. Tests and simulations inject partitions, loss and delay through
 * `faults` (faults.ts).
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
import type { Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { Tracer } from '@opentelemetry/api'
import { createLibp2p } from 'libp2p'
import type { Logger } from 'pino'
import {
  CONNECTION_PING_INTERVAL_MS, DEFAULT_MAX_GOSSIP_BYTES, DEFAULT_MAX_SYNC_BYTES, DEFAULT_P2P_PORT, DEFAULT_RECONNECT_INTERVAL_MS,
  DEFAULT_HOST, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_SYNC_TIMEOUT_MS, GOSSIP_MESH_DEGREE, INBOUND_CONNECTIONS_PER_SECOND,
  MAX_GOSSIP_TRACE_CONTEXTS, MESH_KEY_HANDSHAKE_TIMEOUT_MS, PEER_KEY_FILE, SYNC_MAX_INBOUND_STREAMS
} from '../constants.ts'
import { announceAddrs, bindIp, isWildcard, routable, systemResolve, tcpAddr, type Resolve } from './addresses.ts'
import type { Admission, RefusalReason } from './admission.ts'
import { Dialer } from './dialer.ts'
import { decodeEnvelope, encodeEnvelope, Kind, TRACE_CONTEXT_BYTES, type Envelope } from './envelope.ts'
import { Exchanges, type BehindPeer } from './exchanges.ts'
import type { NetworkFaults } from './faults.ts'
import { loadOrCreatePeerKey } from './keys.ts'
import { PeerTable, type PeerView } from './peers.ts'
import { meshKeyId } from './mesh-key.ts'
import { MeshKeyMismatchError, PrivateNetwork } from './private-network.ts'
import type { Replica } from './replica.ts'
import { SYNC_PROTOCOLS, type SyncFailureReason, type SyncReplica, type SyncResult } from './sync.ts'
import { PendingLinks, tracedApply, tracedSyncApply, WriteTraces } from './tracing.ts'
import { useHalfWindowUpdates } from './yamux-window.ts'

export const REGISTRY_TOPIC = 'capmesh/registry/3'

const NO_BYTES = new Uint8Array(0)
/** Room for the envelope around an update in a gossip message (header, controller id, trace contexts). */
const ENVELOPE_BYTES = 80 + 1 + MAX_GOSSIP_TRACE_CONTEXTS * TRACE_CONTEXT_BYTES

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
  /** The mesh keys (32 bytes each, mesh-key.ts reads them), the primary first: only peers holding one can connect. */
  meshKeys: Uint8Array[]
  /** Which peers may connect (the allow list). @default every peer holding the mesh key */
  admission?: Admission
  /** Add this controller's own line to the allow list when it starts (a development TLS dir). @default false */
  admitSelf?: boolean
  /** The libp2p identity. @default the key in `<dataDir>/peer.key`, created if missing */
  privateKey?: PrivateKey
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
  /**
   * Trace registry writes across the mesh with this tracer: local writes carry their trace context
   * in the envelope, applies are spans (tracing.ts). @default none: no context is read or sent
   */
  tracer?: Tracer
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
  /** A peer the allow list does not admit was turned away (see RefusalReason). */
  refused: [peerId: string, address: string | null, reason: RefusalReason]
  /** A connection was keyed with none of the accepted mesh keys (aborted). */
  'meshkey:mismatch': [address: string]
}

/** A mesh key as /mesh shows it: its id, whether it is the primary and accepted, and the open connections using it (either way). */
export interface MeshKeyView {
  id: string
  primary: boolean
  /** False for a key that was removed but still keys open connections (they are being closed). */
  accepted: boolean
  connections: number
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
  private node: Libp2p<{ pubsub: GossipSub, ping: Ping }> | null = null
  private readonly peers = new PeerTable()
  private readonly exchanges: Exchanges
  private readonly dialer: Dialer
  /** The address the p2p listener is bound to (a wildcard stays one), set at start. */
  private bound: { ip: string, port: number } | null = null
  private readonly pnet: PrivateNetwork
  private readonly admission: Admission | null
  /** Key ids by key (hex), computed once. */
  private readonly keyIds = new Map<string, string>()
  /** When a mesh-key mismatch from a host was last logged (wall-clock ms). */
  private readonly mismatchLogged = new Map<string, number>()
  /** The re-keying of connections after a key was removed, while it runs. */
  private rekeying: Promise<void> | null = null
  private rekeyAgain = false
  /** Silent peers being pinged (checkSilent). */
  private readonly pinging = new Set<string>()
  private readonly checked = new WeakMap<Uint8Array, Checked>()
  private pending: Uint8Array[] = []
  private flushQueued = false
  private readonly tracer: Tracer | null
  /** Trace contexts of the pending writes (with a tracer). */
  private readonly writeTraces = new WriteTraces()
  /** Writes heard of but not applied, for the next anti-entropy apply to link to (with a tracer). */
  private readonly pendingLinks = new PendingLinks()
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
    this.admission = init.admission ?? null
    this.pnet = new PrivateNetwork({ keys: init.meshKeys, timeoutMs: MESH_KEY_HANDSHAKE_TIMEOUT_MS, onMismatch: addr => { this.onMismatch(addr) } })
    this.tracer = init.tracer ?? null
    const blocked = (p: string): boolean => this.faults?.blocked(p) ?? false
    this.exchanges = new Exchanges({
      controllerId: init.controllerId,
      replica: this.syncReplica(),
      peers: this.peers,
      log: init.log,
      peerId: () => this.peerId,
      dial: async (peerId, signal) => await this.libp2p.dialProtocol(peerIdFromString(peerId), SYNC_PROTOCOLS, { signal }),
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
    this.dialer = new Dialer({
      peers: this.peers,
      node: () => this.node,
      peerId: () => this.peerId,
      blocked,
      resolve: init.resolve,
      admitted: p => this.admission?.recheck(p) ?? true,
      refused: (p, addr, reason) => { this.refuse(p, addr, reason) },
      log: this.log
    })
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

  private get libp2p (): Libp2p<{ pubsub: GossipSub, ping: Ping }> {
    if (this.node == null) throw new Error('mesh is not started')
    return this.node
  }

  async start (): Promise<void> {
    useHalfWindowUpdates()
    const key = this.init.privateKey ?? await loadOrCreatePeerKey(join(this.init.dataDir, PEER_KEY_FILE))
    const self = peerIdFromPrivateKey(key).toString()
    const admission = this.admission
    if (admission != null && this.init.admitSelf === true) {
      const { written } = await admission.admitSelf(this.init.controllerId, self)
      if (written) this.log.info({ file: admission.file, peer: self }, `added this controller to the peer allow list ${admission.file} (a development TLS dir: it holds the CA key)`)
    } else if (admission != null) {
      const listed = admission.peerOf(this.init.controllerId)
      if (admission.missing) {
        this.log.error({ file: admission.file, peer: self }, `the peer allow list ${admission.file} does not exist: this controller admits no peer. Create it with one line per controller, "<controller-id> <peer-id>"; this controller's is "${this.init.controllerId} ${self}" (docs/operations.md, "Admission")`)
      } else if (listed !== self) {
        this.log.warn({ file: admission.file, peer: self, listed: listed ?? null }, `this controller (${this.init.controllerId}, peer ${self}) is not in its peer allow list ${admission.file}${listed != null ? ` (which gives ${this.init.controllerId} peer ${listed})` : ''}: controllers with the same list refuse it. Add "${this.init.controllerId} ${self}" to the list of every controller`)
      }
    }
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
      connectionProtector: this.pnet.protector(),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      // After noise (the peer id is proven): simulated partitions, and peers the allow list does not admit.
      connectionGater: {
        denyDialPeer: (peer: PeerId) => this.deny(peer.toString(), null, 'dial'),
        denyInboundEncryptedConnection: (peer: PeerId, conn: { remoteAddr: { toString: () => string } }) => {
          this.pnet.identify(conn, peer.toString())
          return this.deny(peer.toString(), conn.remoteAddr.toString(), 'inbound')
        },
        denyOutboundEncryptedConnection: (peer: PeerId, conn: { remoteAddr: { toString: () => string } }) => {
          this.pnet.identify(conn, peer.toString())
          return this.deny(peer.toString(), conn.remoteAddr.toString(), 'outbound')
        }
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

    await this.libp2p.handle(SYNC_PROTOCOLS, (stream: Stream, conn) => {
      const peer = conn.remotePeer.toString()
      // The gater let it in; a reload may have removed it since (its hang-up is under way).
      if (admission != null && !admission.admitted(peer)) {
        stream.abort(new Error('not admitted'))
        return
      }
      this.exchanges.respond(stream, peer)
    }, { maxInboundStreams: SYNC_MAX_INBOUND_STREAMS })
    admission?.on('change', this.onAdmissionChange)

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
    this.admission?.off('change', this.onAdmissionChange)
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

  /** Whether every peer subscribed to `topic` is subscribed to `also` too (true when none is). */
  subscribedToBoth (topic: string, also: string): boolean {
    const pubsub = this.node?.services.pubsub
    if (pubsub == null) return false
    const both = new Set(pubsub.getSubscribers(also).map(p => p.toString()))
    return pubsub.getSubscribers(topic).every(p => both.has(p.toString()))
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

  /**
   * Accepts `keys` (the primary first) from now on: new connections are
   * keyed with the new primary, and accepted if keyed with any of them.
   * Connections keyed (either way) with a key no longer accepted are closed
   * and re-dialled at once (by the smaller peer id of the two, as for any
   * missing link), one peer at a time, so a controller never loses
   * every link at once.
   */
  setMeshKeys (keys: Uint8Array[]): void {
    this.pnet.setKeys(keys)
    if (this.node != null) this.rekey()
  }

  /**
   * The accepted mesh keys, the primary first, with the open connections
   * using each; then any removed key that open connections still use.
   */
  meshKeys (): MeshKeyView[] {
    const hex = (k: Uint8Array): string => Buffer.from(k).toString('hex')
    const keys = new Map<string, Uint8Array>(this.pnet.keys.map(k => [hex(k), k]))
    const accepted = new Set(keys.keys())
    const count = new Map<string, number>()
    for (const l of this.pnet.links()) {
      for (const k of new Set([l.out, ...(l.in != null ? [l.in] : [])].map(hex))) count.set(k, (count.get(k) ?? 0) + 1)
      for (const k of [l.out, l.in]) if (k != null && !keys.has(hex(k))) keys.set(hex(k), k)
    }
    return [...keys].map(([h, k], i) => ({ id: this.keyId(k), primary: i === 0, accepted: accepted.has(h), connections: count.get(h) ?? 0 }))
  }

  /** Resolves once connections keyed with removed keys have been closed and re-dialled. */
  async rekeyed (): Promise<void> {
    while (this.rekeying != null) await this.rekeying
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

  private keyId (k: Uint8Array): string {
    const hex = Buffer.from(k).toString('hex')
    let id = this.keyIds.get(hex)
    if (id == null) this.keyIds.set(hex, id = meshKeyId(k))
    return id
  }

  /** The connection gater's answer for `peerId`: true to refuse (a simulated partition, or a peer not admitted). */
  private deny (peerId: string, address: string | null, reason: RefusalReason): boolean {
    if (this.faults?.blocked(peerId) === true) return true
    if (this.admission == null || this.admission.recheck(peerId)) return false
    this.refuse(peerId, address, reason)
    return true
  }

  /** Records a refusal (for /mesh, the metrics and the log: once per peer a minute). */
  private refuse (peerId: string, address: string | null, reason: RefusalReason): void {
    if (this.admission == null) return
    if (this.admission.refuse(peerId, address, reason)) {
      this.log.warn({ peer: peerId, address, reason, file: this.admission.file },
        `refused peer ${peerId}${address != null ? ` at ${address}` : ''} (${reason}): it is not in the peer allow list ${this.admission.file} (further refusals of it are counted, and logged at most once a minute)`)
    }
    this.emit('refused', peerId, address, reason)
  }

  private onMismatch (address: string): void {
    const host = /^\/ip[46]\/([^/]+)/.exec(address)?.[1] ?? address
    const now = Date.now()
    const last = this.mismatchLogged.get(host)
    if (last == null || now - last >= 60_000) {
      if (this.mismatchLogged.size >= 1024) this.mismatchLogged.clear()
      this.mismatchLogged.set(host, now)
      this.log.warn({ address, accepted: this.pnet.keys.map(k => this.keyId(k)) }, `a connection with ${address} was keyed with none of this controller's mesh keys; closed (logged at most once a minute per host)`)
    }
    this.emit('meshkey:mismatch', address)
  }

  /**
   * A controller went silent (nothing heard from it for the unhealthy
   * window): pings it over its connection, and hangs up if no answer comes
   * within `timeoutMs`. On a link that drops packets a connection stays open
   * for minutes, TCP holding what was sent into it; once the link is back
   * that backlog (digests from before a worker died, updates since
   * superseded) would arrive as news, seconds late, behind the
   * retransmission back-off. A new connection starts clean, and the
   * reconnect loop dials it as soon as the peer can be reached. A peer that
   * is only slow answers the ping and keeps its connection.
   */
  checkSilent (peerId: string, timeoutMs: number): void {
    const node = this.node
    if (node == null || this.pinging.has(peerId)) return
    const peer = peerIdFromString(peerId)
    if (node.getConnections(peer).length === 0) return
    this.pinging.add(peerId)
    this.libp2p.services.ping.ping(peer, { signal: AbortSignal.timeout(timeoutMs) }).then(() => {}, async (err: Error) => {
      if (this.node !== node || node.getConnections(peer).length === 0) return
      this.log.info({ peer: peerId, err: err.message }, 'hung up on a silent peer that did not answer a ping: a new connection once it can be reached')
      await node.hangUp(peer).catch((e: Error) => { this.log.debug({ peer: peerId, err: e.message }, 'hang-up failed') })
    }).finally(() => { this.pinging.delete(peerId) })
  }

  /** The allow list changed: hang up on connected peers it no longer admits. */
  private readonly onAdmissionChange = ({ removed }: { added: string[], removed: string[] }): void => {
    const node = this.node
    if (node == null) return
    for (const p of removed) {
      if (!this.peers.connected.has(p) && node.getConnections(peerIdFromString(p)).length === 0) continue
      this.refuse(p, null, 'revoked')
      node.hangUp(peerIdFromString(p)).catch((err: Error) => { this.log.debug({ peer: p, err: err.message }, 'hang-up failed') })
    }
  }

  /** Resolves true once `peerId` is connected, false after `ms` (or when the mesh stops). */
  private async connectedWithin (peerId: string, ms: number): Promise<boolean> {
    if (this.peers.connected.has(peerId)) return true
    return await new Promise<boolean>(resolve => {
      const done = (ok: boolean): void => {
        clearTimeout(timer)
        this.off('peer:connect', onConnect)
        resolve(ok)
      }
      const onConnect = (id: string): void => { if (id === peerId) done(true) }
      const timer = setTimeout(() => { done(this.peers.connected.has(peerId)) }, ms)
      this.on('peer:connect', onConnect)
    })
  }

  /** Closes the connections keyed with a key that is no longer accepted and dials their peers again, one at a time. */
  private rekey (): void {
    if (this.rekeying != null) {
      this.rekeyAgain = true
      return
    }
    this.rekeying = (async () => {
      do {
        this.rekeyAgain = false
        const peers = new Set<string>()
        for (const link of this.pnet.stale()) {
          if (link.peerId != null) peers.add(link.peerId)
          else link.abort(new MeshKeyMismatchError('its mesh key is no longer accepted'))
        }
        for (const p of peers) {
          const node = this.node
          if (node == null || this.stopped) return
          this.log.info({ peer: p }, `re-keying the connection with ${p}: it used a mesh key that was removed`)
          await node.hangUp(peerIdFromString(p), { signal: AbortSignal.timeout(1000) }).catch(() => {})
          if (this.stopped) return
          // As for any missing link, the smaller peer id dials (dialer.ts): both dialling at once would leave
          // two connections. The other side's reconnect loop dials at its next round; if it has not within
          // twice that, this side does. Either way the next peer waits: a controller keeps its other links.
          const every = this.init.reconnectIntervalMs ?? DEFAULT_RECONNECT_INTERVAL_MS
          if (p > this.peerId || !await this.connectedWithin(p, 2 * every + 1000)) await this.dialer.dialNow(p)
        }
      } while (this.rekeyAgain && !this.stopped)
    })().finally(() => { this.rekeying = null })
  }

  /** The replica anti-entropy applies to: with a tracer, each apply that changes something is a span. */
  private syncReplica (): SyncReplica {
    const r = this.replica
    const tracer = this.tracer
    if (tracer == null) return r
    return {
      stateVector: () => r.stateVector(),
      checkStateVector: sv => { r.checkStateVector(sv) },
      diff: sv => r.diff(sv),
      apply: (update, token) => r.apply(update, token),
      applyDelta: async update => await tracedSyncApply(tracer, this.pendingLinks, this.init.controllerId, update.length, async () => await (r.applyDelta?.(update) ?? r.apply(update)))
    }
  }

  private queue (update: Uint8Array): void {
    // Synchronously inside the write: the active context is the write's.
    if (this.tracer != null) this.writeTraces.captureActive()
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
    const traces = this.writeTraces.take()
    // Size first: merging is super-linear in the number of updates, and a batch this big travels by sync anyway.
    const bytes = pending.reduce((n, u) => n + u.length, 0)
    if (bytes + ENVELOPE_BYTES <= this.maxMessageBytes) {
      const update = pending.length === 1 ? pending[0] : this.replica.merge(pending)
      if (update.length + ENVELOPE_BYTES <= this.maxMessageBytes) {
        this.send(REGISTRY_TOPIC, { kind: Kind.update, controllerId, payload: update, traces })
        return
      }
    }
    // Too big for one gossip message (a compaction of a large segment): peers pull it by sync,
    // and link that exchange's apply to the writes announced here.
    this.send(REGISTRY_TOPIC, { kind: Kind.hint, controllerId, payload: NO_BYTES, traces })
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
    // Signed by a peer the allow list does not admit (another controller admitted it and forwarded
    // its message): dropped without blaming the forwarder, whose list may just be newer or older.
    if (this.admission != null && !this.admission.recheck(from)) {
      this.refuse(from, null, 'gossip')
      return TopicValidatorResult.Ignore
    }
    try {
      const env = decodeEnvelope(msg.data, this.maxMessageBytes)
      // A controller speaks only for itself: an admitted peer cannot send digests or hints in
      // another controller's name (it would keep a dead owner's segment alive, or speak for a live one).
      const admittedAs = this.admission?.controllerOf(from)
      if (this.admission != null && env.controllerId !== admittedAs) throw new Error(`speaks as controller ${env.controllerId} but is admitted as ${admittedAs ?? 'nobody'}`)
      let value: unknown
      if (msg.topic === REGISTRY_TOPIC) {
        if (env.kind === Kind.update) {
          const c = this.replica.check(env.payload)
          // Out of order, not malformed: drop it without blaming the sender; anti-entropy will bring it
          // (and its apply links to these writes).
          if (!c.ok && c.missing) {
            if (this.tracer != null) this.pendingLinks.add(env.traces)
            return TopicValidatorResult.Ignore
          }
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

  private applyUpdate (env: Envelope, token: unknown): void {
    const tracer = this.tracer
    if (tracer == null) {
      this.replica.apply(env.payload, token)
      return
    }
    const info = { controllerId: this.init.controllerId, from: env.controllerId, topic: REGISTRY_TOPIC, bytes: env.payload.length }
    tracedApply(tracer, env.traces, info, () => this.replica.apply(env.payload, token))
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
        if (env.kind === Kind.update) this.applyUpdate(env, value)
        else {
          if (this.tracer != null) this.pendingLinks.add(env.traces)
          this.exchanges.want(from)
        }
      } else {
        this.topics[msg.topic]?.deliver(value, { controllerId: env.controllerId, peerId: from })
      }
    } catch (err) {
      this.log.warn({ peer: from, err: (err as Error).message }, 'could not apply a gossip message')
    }
  }
}
