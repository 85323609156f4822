/**
 * The only code that touches libp2p. A Mesh joins one controller's registry
 * to the other controllers':
 *
 * - local registry updates are batched per tick and published on the
 *   registry topic (too large for one message: a sync hint instead);
 * - every incoming message is validated in the gossipsub topic validator
 *   before it can touch the document, and a peer sending garbage is rejected
 *   (gossipsub scores it down) and logged once;
 * - anti-entropy (sync.ts) runs when a connection opens, on a hint, and
 *   every `syncIntervalMs` with a random peer;
 * - a reconnect loop re-dials bootstrap addresses and known controllers, so
 *   a healed partition or a restarted peer rejoins by itself;
 * - liveness digests from the core go out on their own topic.
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
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { Logger } from 'pino'
import * as Y from 'yjs'
import {
  DEFAULT_MAX_GOSSIP_BYTES, DEFAULT_MAX_SYNC_FRAME_BYTES, DEFAULT_RECONNECT_INTERVAL_MS, DEFAULT_SYNC_INTERVAL_MS, DEFAULT_SYNC_TIMEOUT_MS
} from '../constants.ts'
import { MissingDependencyError, Origin, validateUpdate, type Registry, type ValidUpdate } from '../registry/index.ts'
import { decodeDigest, decodeEnvelope, encodeDigest, encodeEnvelope, Kind, MAX_INTRODUCED_PEERS, type Digest, type Envelope } from './envelope.ts'
import { loadOrCreatePeerKey } from './keys.ts'
import { PeerBusyError, SYNC_PROTOCOL, refuseSync, syncInitiator, syncResponder, type SyncResult } from './sync.ts'
import { useHalfWindowUpdates } from './yamux-window.ts'

export const REGISTRY_TOPIC = 'capmesh/registry/2'
export const LIVENESS_TOPIC = 'capmesh/liveness/2'

const NO_BYTES = new Uint8Array(0)

function fastMessageId (msg: { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array }): string {
  return createHash('sha1').update(msg.from ?? NO_BYTES).update(msg.seqno ?? NO_BYTES).update(msg.topic).update(msg.data ?? NO_BYTES).digest('base64')
}

/** Mean pause (ms) before asking a BUSY peer again; it grows with each BUSY answer. */
const BUSY_PAUSE_MS = 40
/** An exchange older than this no longer makes its controller busy (a stalled or very large one). */
const BUSY_WINDOW_MS = 3000
/** gossipsub mesh degree and gossip fan-out (see the comment where they are used). */
const MESH_DEGREE = { D: 1, Dlo: 1, Dhi: 2, Dout: 0, Dscore: 0, Dlazy: 2, gossipFactor: 0, idontwantMinDataSize: 16 * 1024 }
/** Inbound connections accepted per second from one host, and in the handshake at once (libp2p: 5 and 10). */
const INBOUND_CONNECTIONS_PER_SECOND = 256
/** Failed dials after which a controller known only from another's digest is forgotten. */
const MAX_INTRODUCED_DIALS = 5
/** How often libp2p pings each connection to find dead links (its default is 10 s). */
const CONNECTION_PING_INTERVAL_MS = 60_000
/** BUSY answers after which a wanted exchange is left to the periodic one. */
const MAX_BUSY_RETRIES = 8
/**
 * A periodic exchange goes to a peer whose registry hash (from its digests,
 * or from the last exchange) differs from this controller's; when every peer
 * agrees, only every this many periods, with a random one: the net for a
 * lost digest. At rest a mesh then exchanges almost nothing.
 */
const IDLE_SYNC_EVERY = 10

export interface MeshInit {
  registry: Registry
  /** Folder for the persistent peer key (`peer.key`). */
  dataDir: string
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
  /** Largest sync frame (bytes): a whole registry must fit. @default 256 MiB */
  maxSyncFrameBytes?: number
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
  last_message_at: string | null
}

export interface MeshEvents {
  /** A valid liveness digest from a controller. Listeners must not block. */
  digest: [controllerId: string, digest: Digest]
  /** Any valid message from a controller: proof that it is alive. */
  heard: [controllerId: string]
  /** A sync completed. */
  sync: [result: SyncResult & { peerId: string, ms: number }]
  'peer:connect': [peerId: string]
  'peer:disconnect': [peerId: string]
}

interface PeerState {
  controllerId: string | null
  lastSyncAt: number | null
  lastSyncMs: number | null
  inSync: boolean | null
  lastMessageAt: number | null
  /** Where it listens (learnt from its digests); dialled when not connected. */
  addrs: Multiaddr[]
  /** Its registry hash as last known: from its latest digest, or ours right after an exchange with it. */
  hash: string | null
  /** When `hash` was learnt, and when the current connection to it opened (monotonic ms). */
  hashAt: number
  connectedAt: number
  /** When the reconnect loop first found it unconnected (monotonic ms), null while connected. */
  missingSince: number | null
  /** Known only from another controller's digest (not heard from yet): dialled, forgotten after failing. */
  introduced: boolean
}

export class Mesh extends EventEmitter<MeshEvents> {
  private readonly init: MeshInit
  private readonly registry: Registry
  private readonly log: Logger
  private readonly maxMessageBytes: number
  private readonly maxSyncFrameBytes: number
  private readonly syncTimeoutMs: number
  private node: Libp2p<{ pubsub: GossipSub }> | null = null
  private readonly peers = new Map<string, PeerState>()
  /**
   * Peers with at least one open connection, kept from libp2p's connect and
   * disconnect events: asking libp2p builds a peer id object and its base58
   * text per peer per call, which the reconnect loop and the exchange queue
   * did many times a second (a tenth of a 32-controller heal's CPU).
   */
  private readonly connected = new Set<string>()
  /** A peer never connected before has connected since the last digest: the next one introduces the mesh to it. */
  private introduceNext = true
  private readonly blocked = new Set<string>()
  private readonly loggedBadPeers = new Set<string>()
  private readonly syncing = new Set<string>()
  /** Start times (monotonic ms) of the exchanges in progress, either side. */
  private readonly exchanges = new Set<{ since: number }>()
  /** Re-runs the wanted queue when the youngest exchange stops counting as busy. */
  private busyWaitTimer: NodeJS.Timeout | null = null
  /** Peers to sync with once this controller is free, with the BUSY answers each has given. */
  private readonly wanted = new Map<string, number>()
  private wantedTimer: NodeJS.Timeout | null = null
  private readonly decoded = new WeakMap<Uint8Array, Envelope>()
  /** Payloads the topic validator already checked against this document (a check stays true as the document grows). */
  private readonly validated = new WeakMap<Uint8Array, ValidUpdate>()
  private readonly redial = new Map<string, { fails: number, next: number }>()
  /** The bootstrap addresses, parsed once: [as given, parsed, the peer id in it if any]. */
  private bootstrapAddrs: Array<[string, Multiaddr, string | undefined]> = []
  /** Bootstrap address → the peer found there (addresses may omit the peer id). */
  private readonly addrPeer = new Map<string, string>()
  /**
   * Simulated faults, for tests and the simulation harness: every incoming
   * gossip message is dropped with probability `lossRate`, and incoming
   * messages and sync exchanges are delayed by `delayMs`. Zero in production.
   */
  readonly faults = { delayMs: 0, lossRate: 0 }
  private pending: Uint8Array[] = []
  private flushQueued = false
  private timers: NodeJS.Timeout[] = []
  private syncTicks = 0
  /** This controller's registry hash at the previous periodic tick. */
  private hashAtLastTick: string | null = null
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
    this.maxSyncFrameBytes = init.maxSyncFrameBytes ?? DEFAULT_MAX_SYNC_FRAME_BYTES
    this.syncTimeoutMs = init.syncTimeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS
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
    this.bootstrapAddrs = (this.init.bootstrap ?? []).map(a => {
      const ma = multiaddr(a)
      return [a, ma, ma.getComponents().find(c => c.name === 'p2p')?.value]
    })
    const blocked = this.blocked
    this.node = await createLibp2p({
      privateKey: key,
      addresses: { listen: [`/ip4/${this.init.host ?? '127.0.0.1'}/tcp/${this.init.port ?? 9100}`] },
      transports: [tcp()],
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

    await this.libp2p.handle(SYNC_PROTOCOL, (stream: Stream, conn) => {
      this.respond(stream, conn.remotePeer.toString())
    }, { maxInboundStreams: 16 })

    this.libp2p.addEventListener('peer:connect', evt => {
      const id = evt.detail.toString()
      this.connected.add(id)
      const s = this.peers.get(id)
      if (s == null || s.connectedAt === 0) this.introduceNext = true
      this.peerState(id).connectedAt = performance.now()
      this.redial.delete(id)
      this.emit('peer:connect', id)
      // One side starts the exchange (the smaller peer id); the periodic sync covers a failure.
      if (id > this.peerId) this.want(id)
    })
    this.libp2p.addEventListener('peer:disconnect', evt => {
      const id = evt.detail.toString()
      this.connected.delete(id)
      this.emit('peer:disconnect', id)
    })

    this.registry.on('update', this.onUpdate)
    const syncEvery = this.init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
    const reconnectEvery = this.init.reconnectIntervalMs ?? DEFAULT_RECONNECT_INTERVAL_MS
    this.timers.push(setInterval(() => { void this.syncRandomPeer() }, syncEvery))
    this.timers.push(setInterval(() => { this.reconnect(reconnectEvery) }, reconnectEvery))
    for (const t of this.timers) t.unref()
    this.reconnect(reconnectEvery)
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    if (this.wantedTimer != null) clearTimeout(this.wantedTimer)
    if (this.busyWaitTimer != null) clearTimeout(this.busyWaitTimer)
    this.wanted.clear()
    this.registry.off('update', this.onUpdate)
    await this.node?.stop()
    this.node = null
    this.connected.clear()
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
    const out: string[] = []
    for (const id of this.connectedPeers()) {
      const s = this.peers.get(id)
      if (s?.controllerId != null && s.addrs.length > 0 && out.length < MAX_INTRODUCED_PEERS) out.push(s.addrs[0].toString())
    }
    return out.sort()
  }

  /**
   * Runs anti-entropy with one peer now. Resolves to null if it could not
   * (including when the peer answered BUSY). A `background` exchange (on
   * connect, on a hint, periodic) is skipped while this controller is in
   * another exchange: overlapping exchanges carry deltas computed against
   * soon-stale state vectors, so after a heal each link would pull the same
   * large delta again. Connect and hint exchanges are queued (`want`) and
   * run as soon as this controller is free.
   */
  async syncWith (peerId: string, opts: { background?: boolean } = {}): Promise<SyncResult | null> {
    if (this.syncing.has(peerId) || this.stopped || this.blocked.has(peerId)) return null
    if (opts.background === true && this.busy) return null
    this.syncing.add(peerId)
    const exchange = this.begin()
    const t0 = performance.now()
    let stream: Stream | undefined
    try {
      if (this.faults.delayMs > 0) await new Promise(resolve => setTimeout(resolve, this.faults.delayMs))
      const signal = AbortSignal.timeout(this.syncTimeoutMs)
      stream = await this.libp2p.dialProtocol(peerIdFromString(peerId), SYNC_PROTOCOL, { signal })
      const res = await syncInitiator(stream, this.registry, { maxFrameBytes: this.maxSyncFrameBytes, signal })
      this.wanted.delete(peerId)
      this.recordSync(peerId, res, performance.now() - t0)
      return res
    } catch (err) {
      if (err instanceof PeerBusyError) {
        // A busy peer with the smaller id calls back once free (see respond); ask another meanwhile.
        if (peerId < this.peerId) {
          this.wanted.delete(peerId)
          return null
        }
        // Otherwise ask again shortly, a bounded number of times; the periodic exchange covers the rest.
        const busy = this.wanted.get(peerId)
        if (busy != null && busy < MAX_BUSY_RETRIES) this.wanted.set(peerId, busy + 1)
        else this.wanted.delete(peerId)
        return null
      }
      this.wanted.delete(peerId)
      // A failed exchange must not leave its stream open: libp2p caps streams per protocol and connection.
      stream?.abort(err as Error)
      if (!this.stopped) this.log.debug({ peer: peerId, err: (err as Error).message }, 'sync failed')
      return null
    } finally {
      this.syncing.delete(peerId)
      this.end(exchange)
    }
  }

  /**
   * True while this controller takes part in a sync exchange, either side,
   * that started less than BUSY_WINDOW_MS ago: an exchange a peer stalls
   * (up to the sync timeout) must not hold off everyone else's.
   */
  get busy (): boolean { return this.busyForMs() > 0 }

  /** Exchanges queued or in progress (a mesh that just formed or healed works through one per new link). */
  get backlog (): number { return this.wanted.size + this.exchanges.size }

  private busyForMs (): number {
    const now = performance.now()
    let left = 0
    for (const e of this.exchanges) left = Math.max(left, e.since + BUSY_WINDOW_MS - now)
    return left
  }

  private begin (): { since: number } {
    const e = { since: performance.now() }
    this.exchanges.add(e)
    return e
  }

  private end (e: { since: number }): void {
    this.exchanges.delete(e)
    if (this.busyWaitTimer != null) {
      clearTimeout(this.busyWaitTimer)
      this.busyWaitTimer = null
    }
    this.runWanted()
  }

  /** Syncs with `peerId` as soon as this controller is free. */
  private want (peerId: string): void {
    if (!this.wanted.has(peerId)) this.wanted.set(peerId, 0)
    this.runWanted()
  }

  /** Starts the next wanted exchange if free; after a BUSY answer, after a short random pause. */
  private runWanted (): void {
    if (this.stopped || this.wantedTimer != null || this.busyWaitTimer != null || this.wanted.size === 0) return
    const busyFor = this.busyForMs()
    if (busyFor > 0) {
      // Normally an exchange ends first (end() runs the queue); a stalled one stops counting after the window.
      this.busyWaitTimer = setTimeout(() => {
        this.busyWaitTimer = null
        this.runWanted()
      }, busyFor + 1)
      this.busyWaitTimer.unref()
      return
    }
    const connected = this.connected
    const mine = this.init.registryHash?.()
    for (const p of this.wanted.keys()) {
      // Nothing to exchange with a peer that said, on this connection, that it holds what this controller holds.
      const s = this.peers.get(p)
      const agrees = s != null && mine != null && s.hash === mine && s.hashAt >= s.connectedAt
      if (!connected.has(p) || this.blocked.has(p) || agrees) this.wanted.delete(p)
    }
    const next = [...this.wanted].sort((a, b) => a[1] - b[1])[0]
    if (next == null) return
    const [peer, busyAnswers] = next
    if (busyAnswers === 0) {
      void this.syncWith(peer, { background: true })
      return
    }
    // Random pauses break the tie between two controllers that keep finding each other busy.
    this.wantedTimer = setTimeout(() => {
      this.wantedTimer = null
      if (!this.busy && this.wanted.has(peer)) void this.syncWith(peer, { background: true })
      else this.runWanted()
    }, BUSY_PAUSE_MS * (0.5 + Math.random()) * busyAnswers)
    this.wantedTimer.unref()
  }

  /** Peers currently connected (any libp2p peer, controllers or not). */
  connectedPeers (): string[] {
    return this.node == null ? [] : [...this.connected]
  }

  /**
   * Cuts every link to `peerIds` and refuses new ones until unblocked.
   * Used for partitions in tests and simulations.
   */
  async block (peerIds: string[]): Promise<void> {
    for (const p of peerIds) this.blocked.add(p)
    await Promise.all(peerIds.map(async p => {
      await this.node?.hangUp(peerIdFromString(p)).catch(() => {})
    }))
  }

  unblock (peerIds?: string[]): void {
    for (const p of peerIds ?? [...this.blocked]) {
      this.blocked.delete(p)
      this.redial.delete(p)
    }
  }

  status (): { peer_id: string, listen_addrs: string[], connected: number, peers: PeerStatus[] } {
    const connected = new Set(this.connectedPeers())
    const peers: PeerStatus[] = []
    for (const [id, s] of this.peers) {
      if (s.controllerId == null && !connected.has(id)) continue
      peers.push({
        peer_id: id,
        controller_id: s.controllerId,
        connected: connected.has(id),
        last_sync_at: s.lastSyncAt != null ? new Date(s.lastSyncAt).toISOString() : null,
        last_sync_ms: s.lastSyncMs != null ? Math.round(s.lastSyncMs * 10) / 10 : null,
        in_sync: s.inSync,
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
      if (!this.loggedBadPeers.has(from)) {
        this.loggedBadPeers.add(from)
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
      const s = this.peerState(from)
      s.controllerId = env.controllerId
      s.lastMessageAt = Date.now()
    }
    this.emit('heard', env.controllerId)
    try {
      if (env.kind === Kind.update) this.registry.applyUpdate(env.payload, Origin.remote, { validated: this.validated.get(env.payload) })
      else if (env.kind === Kind.digest) {
        const d = decodeDigest(env.payload)
        if (from != null) {
          if (d.addrs != null) this.learnAddrs(from, d.addrs)
          if (d.peers != null) this.learnIntroduced(d.peers)
          const s = this.peerState(from)
          s.hash = d.registry_hash
          s.hashAt = performance.now()
        }
        this.emit('digest', env.controllerId, d)
      }
      else if (env.kind === Kind.hint && from != null) this.want(from)
    } catch (err) {
      this.log.warn({ peer: from, err: (err as Error).message }, 'could not apply a gossip message')
    }
  }

  private respond (stream: Stream, peerId: string): void {
    const t0 = performance.now()
    const signal = AbortSignal.timeout(this.syncTimeoutMs)
    if (this.busy) {
      // Even a refusal reads the HELLO first: garbage is logged and aborted as in an exchange.
      // The smaller peer id of the two takes the exchange over: it calls back once free, and the
      // other stops asking. Without that, a controller refused by every peer of the other side
      // after a heal kept polling them; with both calling back, two would refuse each other for ever.
      refuseSync(stream, { maxFrameBytes: this.maxSyncFrameBytes, signal }).then(() => {
        if (this.peerId < peerId) this.want(peerId)
      }, (err: Error) => { this.syncAborted(stream, peerId, err) })
      return
    }
    const exchange = this.begin()
    const delay = this.faults.delayMs > 0 ? new Promise(resolve => setTimeout(resolve, this.faults.delayMs)) : Promise.resolve()
    delay.then(async () => await syncResponder(stream, this.registry, { maxFrameBytes: this.maxSyncFrameBytes, signal })).then(res => {
      this.wanted.delete(peerId)
      this.recordSync(peerId, res, performance.now() - t0)
    }, (err: Error) => { this.syncAborted(stream, peerId, err) }).finally(() => { this.end(exchange) })
  }

  /** An answered exchange failed (malformed frames, timeout, reset): abort the stream, log once per peer. */
  private syncAborted (stream: Stream, peerId: string, err: Error): void {
    stream.abort(err)
    if (this.loggedBadPeers.has(`sync:${peerId}`)) return
    this.loggedBadPeers.add(`sync:${peerId}`)
    this.log.warn({ peer: peerId, err: err.message }, 'aborted a sync exchange')
  }

  private recordSync (peerId: string, res: SyncResult, ms: number): void {
    const s = this.peerState(peerId)
    s.controllerId = res.peerController
    s.lastSyncAt = Date.now()
    // Each side now holds what the other had: the same registry, unless writes arrived meanwhile.
    s.hash = this.init.registryHash?.() ?? null
    s.hashAt = performance.now()
    s.lastSyncMs = ms
    s.inSync = res.wasInSync
    this.emit('heard', res.peerController)
    this.emit('sync', { ...res, peerId, ms })
  }

  /** The periodic exchange: with a peer that seems to differ, or now and then with any (IDLE_SYNC_EVERY). */
  private async syncRandomPeer (): Promise<void> {
    const candidates = this.connectedPeers().filter(p => this.peers.get(p)?.controllerId != null || !this.loggedBadPeers.has(p))
    if (candidates.length === 0) return
    const mine = this.init.registryHash?.()
    // While this registry changes, gossip is busy delivering and the peers' hashes are moving targets.
    const settled = mine == null || mine === this.hashAtLastTick
    this.hashAtLastTick = mine ?? null
    const differ = !settled ? [] : mine == null ? candidates : candidates.filter(p => this.peers.get(p)?.hash !== mine)
    const pool = differ.length > 0 ? differ : ++this.syncTicks % IDLE_SYNC_EVERY === 0 ? candidates : []
    if (pool.length === 0) return
    await this.syncWith(pool[Math.floor(Math.random() * pool.length)], { background: true })
  }

  /** Dials bootstrap addresses and known controllers that are not connected, with capped back-off. */
  private reconnect (every: number): void {
    if (this.node == null || this.stopped) return
    const node = this.node
    const connected = this.connected
    const now = performance.now()
    // Generous: a handshake on a loaded machine can take seconds, and a dial given up is paid for again.
    const dialTimeoutMs = Math.max(5000, every * 4)
    const targets: Array<[string, Multiaddr | PeerId]> = []
    const viaBootstrap = new Set<string>()
    for (const [addr, ma, id] of this.bootstrapAddrs) {
      const pid = id ?? this.addrPeer.get(addr)
      if (pid != null && (connected.has(pid) || this.blocked.has(pid))) continue
      if (pid != null) viaBootstrap.add(pid)
      targets.push([addr, ma])
    }
    for (const [id, s] of this.peers) {
      if (connected.has(id)) s.missingSince = null
      if ((s.controllerId == null && !s.introduced) || connected.has(id) || this.blocked.has(id) || viaBootstrap.has(id)) continue
      // Both ends notice a missing link. The smaller peer id dials it (as it starts the exchange);
      // the other only once that dial would have timed out: two dials at once leave two
      // connections, each with its own pings and streams for the rest of their lives.
      s.missingSince ??= now
      if (id < this.peerId && now - s.missingSince < dialTimeoutMs + every) continue
      // A known address is dialled directly; otherwise libp2p tries what its peer store has.
      targets.push([id, s.addrs[0] ?? peerIdFromString(id)])
    }
    for (const [key, target] of targets) {
      const r = this.redial.get(key) ?? { fails: 0, next: 0 }
      if (r.next > now) continue
      // No second dial while one is in flight (a handshake can outlast a round on a busy machine).
      r.next = Infinity
      this.redial.set(key, r)
      node.dial(target, { signal: AbortSignal.timeout(dialTimeoutMs) }).then(conn => {
        this.redial.delete(key)
        const remote = conn.remotePeer.toString()
        if (key.startsWith('/')) this.addrPeer.set(key, remote)
        this.peerState(remote)
      }, () => {
        r.fails++
        r.next = performance.now() + Math.min(every * 2 ** Math.min(r.fails, 2), every * 4)
        this.redial.set(key, r)
        // An introduction nobody could confirm (a stale or invented address) is dropped after a few tries.
        const s = this.peers.get(key)
        if (s?.introduced === true && s.controllerId == null && r.fails >= MAX_INTRODUCED_DIALS) {
          this.peers.delete(key)
          this.redial.delete(key)
        }
      })
    }
  }

  /** Remembers where a controller listens (from its digest) so the reconnect loop can dial it directly. */
  private learnAddrs (peerId: string, addrs: string[]): void {
    if (peerId === this.peerId || this.node == null) return
    const s = this.peerState(peerId)
    if (s.addrs.length > 0) return
    const valid: Multiaddr[] = []
    for (const a of addrs) {
      try {
        const ma = multiaddr(a)
        const pid = ma.getComponents().find(c => c.name === 'p2p')?.value
        if (pid === peerId) valid.push(ma)
      } catch {}
    }
    s.addrs = valid
  }

  /**
   * Takes note of controllers another one says it is connected to, so the
   * reconnect loop dials them. Claims only: noise checks the peer id when
   * dialled, and one that cannot be reached is forgotten.
   */
  private learnIntroduced (addrs: string[]): void {
    for (const a of addrs) {
      // Most introductions are of controllers known already: skip those before parsing (a digest
      // introduces every connected controller, and parsing a multiaddr costs tens of µs).
      const at = a.lastIndexOf('/p2p/')
      if (at < 0 || (this.peers.get(a.slice(at + 5))?.addrs.length ?? 0) > 0) continue
      let ma: Multiaddr
      try {
        ma = multiaddr(a)
      } catch {
        continue
      }
      const pid = ma.getComponents().find(c => c.name === 'p2p')?.value
      if (pid == null || pid === this.peerId || this.peers.get(pid)?.addrs.length) continue
      try {
        peerIdFromString(pid)
      } catch {
        continue
      }
      const s = this.peerState(pid)
      s.addrs = [ma]
      s.introduced = s.controllerId == null
    }
  }

  private peerState (id: string): PeerState {
    let s = this.peers.get(id)
    if (s == null) this.peers.set(id, s = { controllerId: null, lastSyncAt: null, lastSyncMs: null, inSync: null, lastMessageAt: null, addrs: [], hash: null, hashAt: -Infinity, connectedAt: 0, missingSince: null, introduced: false })
    return s
  }
}

function safeDecode (data: Uint8Array, max: number): Envelope | null {
  try {
    return decodeEnvelope(data, max)
  } catch {
    return null
  }
}
