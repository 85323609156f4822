/**
 * Membership: who the other controllers are and what they last said, and
 * the whole liveness-digest protocol in one place (as memberlist's state.go
 * owns its member table and every message about members):
 *
 * - outbound: `tick()` builds this controller's word from what it knows
 *   (`LocalWord`: its workers' states and loads, its registry hash, its
 *   self-preservation) and, when it says something new (see `tick`),
 *   publishes it whole as a digest (with this controller's addresses and,
 *   after a controller it never met connected, introductions to the
 *   controllers it is connected to) or only what changed since the last
 *   message, on the changes topic;
 * - inbound: `decode()` / `decodeChanges()` check a message once, in the
 *   topic validator; `receive()` / `receiveChanges()` apply it to the member
 *   table (and hand a digest's addresses to the transport);
 * - `heard()` / `synced()` / `connected()` take the mesh's other news;
 * - `sweep()` applies silence timeouts and peer self-preservation, and says
 *   which members are gone for good.
 *
 * It knows nothing of libp2p: the mesh reaches it through MembershipTransport.
 */
import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import { DEFAULT_SELF_PRESERVATION_MAX_WINDOWS, DEFAULT_SELF_PRESERVATION_PEER_RATIO } from '../constants.ts'
import { DIGEST_PART_BYTES } from '../constants.ts'
import {
  buildDigest, decodeChanges, decodeDigest, encodeChanges, encodeDigest, listedWorkers, wordChanges, wordOf, type Digest, type DigestHeader,
  type OwnedWorker, type Word, type WordChanges
} from './digest.ts'
import { MemberTable, type Member, type MemberStatus } from './members.ts'

/** The gossip topic digests travel on (`/3`: wire format 3, see gossip/envelope.ts). */
export const LIVENESS_TOPIC = 'capmesh/liveness/3'
/**
 * The topic of word changes (WordChanges), a topic of its own so that a
 * controller from before them, which does not subscribe to it, never sees
 * one: a controller sends changes only while every peer subscribed to the
 * digests takes them too, and full digests otherwise.
 */
export const LIVENESS_CHANGES_TOPIC = 'capmesh/liveness-changes/3'

/** What this controller says about itself: read at every digest tick. */
export interface LocalWord {
  /** The workers it owns, with the state and load it holds for each. */
  ownWorkers: () => Iterable<OwnedWorker>
  /** Its registry hash (order-independent, of the live entries). */
  registryHash: () => string
  /** Whether its workers are in self-preservation (peers' is membership's own). */
  workersSelfPreservation: () => boolean
}

/** What membership needs of the network. The mesh provides it; calls must not block. */
export interface MembershipTransport {
  /** Publishes one digest message on the liveness topic. */
  publish: (payload: Uint8Array) => void
  /** Publishes one changes message on the changes topic. */
  publishChanges: (payload: Uint8Array) => void
  /** Whether every peer subscribed to the liveness topic is subscribed to the changes topic too (none is from before them). */
  changesUnderstood: () => boolean
  /** Whether any peer would receive a digest now (subscribed to the liveness topic). */
  reachable: () => boolean
  /** This controller's listen addresses. */
  localAddrs: () => string[]
  /** An address of each controller it is connected to (for newcomers). */
  introductions: () => string[]
  /** `peerId` listens at `addrs` (from its digest). */
  learnAddrs: (peerId: string, addrs: string[]) => void
  /** Controllers another one says it is connected to (claims, checked when dialled). */
  learnIntroduced: (addrs: string[]) => void
}

export interface MembershipInit {
  /** This controller's id (its own digests are never applied). */
  controllerId: string
  local: LocalWord
  /** A member silent this long is `silent` (its workers unhealthy) (ms). */
  unhealthyAfterMs: number
  /** ... and this long `gone` (its entries may be dropped) (ms). */
  staleAfterMs: number
  /** How often tick() is called: a digest goes out at most this often (ms). */
  digestIntervalMs: number
  /** A digest goes out at least this often even when nothing changed (ms). */
  digestKeepaliveMs: number
  /** Lost fraction of known members that triggers self-preservation. @default 0.5 */
  selfPreservationPeerRatio?: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
}

export interface MembershipEvents {
  /** A member's status changed (alive, silent, gone). */
  status: [controllerId: string, from: MemberStatus, to: MemberStatus]
  /** What a member reports of one of its workers changed. */
  worker: [controllerId: string, workerId: string]
  /** What a member reports of all of its workers may have changed (its word became current, or stopped being). */
  word: [controllerId: string]
  /** Peer self-preservation switched. */
  selfPreservation: [on: boolean]
  /** A digest (or a part of one) from another controller, as received. */
  digest: [controllerId: string, digest: Digest]
  /** A changes message from another controller, as received. */
  changes: [controllerId: string, changes: WordChanges]
}

export class Membership extends EventEmitter<MembershipEvents> {
  readonly controllerId: string
  /** Random per start: lets members tell a restart from a slow digest. */
  readonly epoch = randomBytes(6).toString('hex')
  private readonly init: MembershipInit
  private readonly table: MemberTable
  private readonly now: () => number
  private readonly peerRatio: number
  private transport: MembershipTransport | null = null
  private seq = 0
  /** What members last heard, to send the next message only when it says something new, and only what changed. */
  private readonly published: Published = { seq: -1, word: null, selfPreservation: false, hash: '', hashAtLastTick: '', at: -Infinity, force: true, fullAt: -Infinity, fullBytes: 0, changedBytes: 0 }
  /** A digest is owed to members that connected (monotonic ms to send it at, and when the first was owed); null if none. */
  private owed: { at: number, since: number } | null = null
  /** Peers ever connected: a first connection makes the next digest introduce the mesh. */
  private readonly metPeers = new Set<string>()
  private introduceNext = true
  private peerSpSince: number | null = null
  /** When peer self-preservation last ended: members get a stale window to be heard again before any drop. */
  private peerSpEndedAt = -Infinity

  constructor (init: MembershipInit) {
    super()
    this.init = init
    this.controllerId = init.controllerId
    this.now = init.now ?? (() => performance.now())
    this.peerRatio = init.selfPreservationPeerRatio ?? DEFAULT_SELF_PRESERVATION_PEER_RATIO
    this.table = new MemberTable({ unhealthyAfterMs: init.unhealthyAfterMs, staleAfterMs: init.staleAfterMs, now: this.now })
    this.table.on('status', (id, from, to) => { this.emit('status', id, from, to) })
    this.table.on('worker', (id, w) => { this.emit('worker', id, w) })
    this.table.on('word', id => { this.emit('word', id) })
  }

  /** Connects membership to the mesh (null: detached, nothing is published). */
  attach (transport: MembershipTransport | null): void {
    this.transport = transport
  }

  // ---------------------------------------------------------------- members

  get (controllerId: string): Member | undefined { return this.table.get(controllerId) }

  members (): IterableIterator<[string, Member]> { return this.table.entries() }

  /** Starts tracking a controller seen in the registry. */
  know (controllerId: string): void {
    if (controllerId !== this.controllerId) this.table.know(controllerId)
  }

  /** The state a worker of `controllerId` should be routed by. */
  stateOf (controllerId: string, workerId: string): ReturnType<MemberTable['stateOf']> { return this.table.stateOf(controllerId, workerId) }

  loadOf (controllerId: string, workerId: string): number { return this.table.loadOf(controllerId, workerId) }

  /** The registry hash the controller behind `peerId` last reported (or held after an exchange), and when. */
  hashOf (peerId: string): { hash: string, at: number } | null {
    const m = this.table.byPeerId(peerId)
    return m?.registryHash == null ? null : { hash: m.registryHash, at: m.hashAt }
  }

  /** True while this controller has lost contact with most members at once (it is more likely cut off). */
  get peerSelfPreservation (): boolean { return this.peerSpSince != null }

  // ---------------------------------------------------------------- inbound

  /** Decodes and checks a digest message (the topic validator; throws DigestError on garbage). */
  decode (payload: Uint8Array): Digest { return decodeDigest(payload) }

  /** Decodes and checks a changes message (the topic validator; throws DigestError on garbage). */
  decodeChanges (payload: Uint8Array): WordChanges { return decodeChanges(payload) }

  /** A checked digest from `controllerId` over `peerId`. */
  receive (controllerId: string, peerId: string, d: Digest): void {
    if (controllerId === this.controllerId) return
    if (d.addrs != null) this.transport?.learnAddrs(peerId, d.addrs)
    if (d.peers != null) this.transport?.learnIntroduced(d.peers)
    this.table.digest(controllerId, d, peerId)
    this.emit('digest', controllerId, d)
  }

  /** A checked changes message from `controllerId` over `peerId`. */
  receiveChanges (controllerId: string, peerId: string, c: WordChanges): void {
    if (controllerId === this.controllerId) return
    this.table.changes(controllerId, c, peerId)
    this.emit('changes', controllerId, c)
  }

  /** Any valid message (or a completed exchange) from `controllerId`: it is alive. */
  heard (controllerId: string, peerId?: string): void {
    if (controllerId !== this.controllerId) this.table.heard(controllerId, peerId)
  }

  /** An anti-entropy exchange with `controllerId` just ended: it holds what this controller holds. */
  synced (controllerId: string): void {
    if (controllerId !== this.controllerId) this.table.hash(controllerId, this.init.local.registryHash())
  }

  /**
   * A new link (a controller joining, a partition healing): the peer must
   * learn this controller's word and the controllers it can introduce. Links
   * come in bursts (a heal opens one to every controller of the other side),
   * so one digest goes out once the burst is over.
   */
  connected (peerId: string): void {
    if (!this.metPeers.has(peerId)) {
      this.metPeers.add(peerId)
      this.introduceNext = true
    }
    const now = this.now()
    const since = this.owed?.since ?? now
    const interval = this.init.digestIntervalMs
    this.owed = { at: Math.min(now + 2 * interval, since + 5 * interval), since }
  }

  // --------------------------------------------------------------- outbound

  /**
   * Publishes this controller's word when it says something members do not
   * know: a worker's state or load changed, self-preservation switched, the
   * registry hash changed and has held still for one interval (so a stream
   * of registrations does not make every controller publish), members
   * connected (once the burst of connections is over), or
   * `digestKeepaliveMs` passed since the last message. Every message costs
   * each receiver ~0.2–0.5 ms of CPU in the libp2p stack, so an unchanged
   * word is not repeated.
   *
   * What goes out is the whole word (a digest, in parts if large) or, when
   * that is cheaper, only what changed since the last message (WordChanges).
   * A full digest goes out anyway when one is owed (the first, a new link),
   * when self-preservation switched, once a keepalive interval since the last
   * full one, once the changes sent since add up to a full one's size (a
   * receiver that lost a changes message is exact again within that), and
   * whenever a peer subscribed to digests does not take changes.
   */
  tick (): void {
    // With nobody subscribed yet, a digest reaches no one now and arrives late and stale through
    // gossipsub's catch-up (IHAVE/IWANT) later: hold it, with what it owes, for the first listener.
    if (this.transport == null || !this.transport.reachable()) return
    const local = this.init.local
    const { word, owned, bytes: fullBytes } = wordOf(local.ownWorkers())
    const hash = local.registryHash()
    const selfPreservation = local.workersSelfPreservation() || this.peerSelfPreservation
    const p = this.published
    const changes = p.word == null ? null : wordChanges(p.word, word)
    const changed = changes == null || changes.states.length > 0 || changes.loads.length > 0 || selfPreservation !== p.selfPreservation
    const settledHash = hash !== p.hash && hash === p.hashAtLastTick
    p.hashAtLastTick = hash
    const now = this.now()
    const owed = this.owed != null && now >= this.owed.at
    if (!p.force && !owed && !changed && !settledHash && now - p.at < this.init.digestKeepaliveMs) return
    const seq = this.seq++
    const asChanges = changes != null && !p.force && !owed && !this.introduceNext &&
      selfPreservation === p.selfPreservation && now - p.fullAt < this.init.digestKeepaliveMs &&
      changes.bytes < fullBytes && changes.bytes <= DIGEST_PART_BYTES && p.changedBytes + changes.bytes <= Math.max(p.fullBytes, fullBytes) &&
      this.transport.changesUnderstood()
    if (asChanges) {
      this.transport.publishChanges(encodeChanges({ epoch: this.epoch, seq, base: p.seq, owned, states: changes.states, loads: changes.loads, registry_hash: hash, self_preservation: selfPreservation }))
      p.changedBytes += changes.bytes
    } else {
      const header: DigestHeader = { epoch: this.epoch, seq, owned, registry_hash: hash, self_preservation: selfPreservation, addrs: this.transport.localAddrs().slice(0, 16) }
      // Introductions cost ~100 bytes per controller: only after a controller this one never met connected.
      if (this.introduceNext) header.peers = this.transport.introductions()
      this.introduceNext = false
      for (const d of buildDigest(header, listedWorkers(word))) this.transport.publish(encodeDigest(d))
      Object.assign(p, { fullAt: now, fullBytes, changedBytes: 0 })
    }
    Object.assign(p, { seq, word, selfPreservation, hash, at: now, force: false })
    if (owed) this.owed = null
  }

  /** The digest tick() would build now, whole (for tests and tools). */
  digest (): Digest {
    const local = this.init.local
    const workers = [...local.ownWorkers()]
    return buildDigest({ epoch: this.epoch, seq: this.seq++, owned: workers.length, registry_hash: local.registryHash(), self_preservation: local.workersSelfPreservation() || this.peerSelfPreservation }, workers, Infinity)[0]
  }

  // --------------------------------------------------------------- timeouts

  /**
   * Applies silence timeouts and peer self-preservation. Returns the members
   * gone for the stale window whose entries may be dropped now — none while
   * this controller has lost most of its members at once (it is more likely
   * cut off than they are all dead; for at most a few stale windows), nor
   * for a stale window after that ends (members that are alive are heard
   * again only once gossip reaches them over the new links).
   */
  sweep (): string[] {
    this.table.sweep()
    let known = 0
    let lost = 0
    for (const [id, m] of this.table.entries()) {
      if (id === this.controllerId || m.lastHeard == null) continue
      known++
      if (m.status !== 'alive') lost++
    }
    const now = this.now()
    const partitioned = known >= 2 && lost / known > this.peerRatio
    if (partitioned && this.peerSpSince == null) {
      this.peerSpSince = now
      this.emit('selfPreservation', true)
    } else if (!partitioned && this.peerSpSince != null) {
      this.peerSpSince = null
      this.peerSpEndedAt = now
      this.emit('selfPreservation', false)
    }
    const staleMs = this.init.staleAfterMs
    const preserve = this.peerSpSince != null && now - this.peerSpSince < DEFAULT_SELF_PRESERVATION_MAX_WINDOWS * staleMs
    if (preserve || now - this.peerSpEndedAt < staleMs) return []
    const gone: string[] = []
    for (const [id, m] of this.table.entries()) if (m.status === 'gone' && id !== this.controllerId) gone.push(id)
    return gone
  }
}

/** What members last heard from this controller (tick). */
interface Published {
  /** The seq of the last message, full or changes (-1 before the first). */
  seq: number
  /** The word of the last message, full or changes (null before the first). */
  word: Word | null
  selfPreservation: boolean
  hash: string
  hashAtLastTick: string
  /** Monotonic ms of the last message, and of the last full digest. */
  at: number
  fullAt: number
  /** The next message must be a full digest. */
  force: boolean
  /** Approximate bytes of the last full digest, and of the changes sent since. */
  fullBytes: number
  changedBytes: number
}
