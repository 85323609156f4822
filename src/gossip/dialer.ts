/**
 * Keeps this controller connected to the others: the reconnect loop re-dials
 * bootstrap addresses and known controllers that are not connected, with
 * capped back-off, so a healed partition or a restarted peer rejoins by
 * itself; and where controllers listen is learnt from their digests and the
 * introductions in them. A peer the allow list does not admit is never
 * dialled, nor taken from an introduction.
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { MAX_INTRODUCED_DIALS, MAX_INTRODUCED_PEERS } from '../constants.ts'
import type { RefusalReason } from './admission.ts'
import type { PeerTable } from './peers.ts'

export interface DialerInit {
  peers: PeerTable
  /** The libp2p node: null before the mesh starts and after it stops. */
  node: () => Libp2p | null
  /** This controller's peer id (throws while the node is not started). */
  peerId: () => string
  /** True while links to a peer are cut (simulated partitions): not dialled. */
  blocked: (peerId: string) => boolean
  /** True if the allow list admits a peer (looked up again in the file if it does not know it). @default every peer */
  admitted?: (peerId: string) => boolean
  /** A peer was not dialled or not taken from an introduction: it is not admitted. */
  refused?: (peerId: string, address: string | null, reason: RefusalReason) => void
  log: Logger
}

export class Dialer {
  private readonly init: DialerInit
  private readonly peers: PeerTable
  private readonly redial = new Map<string, { fails: number, next: number }>()
  /** Targets whose handshake failed, told once until a dial to them succeeds. */
  private readonly refused = new Set<string>()
  /** The bootstrap addresses, parsed once: [as given, parsed, the peer id in it if any]. */
  private bootstrapAddrs: Array<[string, Multiaddr, string | undefined]> = []
  /** Bootstrap address → the peer found there (addresses may omit the peer id). */
  private readonly addrPeer = new Map<string, string>()
  private stopped = false

  constructor (init: DialerInit) {
    this.init = init
    this.peers = init.peers
  }

  private get node (): Libp2p | null { return this.init.node() }

  private get peerId (): string { return this.init.peerId() }

  private admitted (peerId: string): boolean { return this.init.admitted?.(peerId) ?? true }

  /** Parses the bootstrap addresses (a malformed one throws). */
  setBootstrap (addrs: string[]): void {
    this.bootstrapAddrs = addrs.map(a => {
      const ma = multiaddr(a)
      return [a, ma, ma.getComponents().find(c => c.name === 'p2p')?.value]
    })
  }

  /** Ends the reconnect loop: a round still called does nothing. */
  stop (): void {
    this.stopped = true
  }

  /** Forgets the failed dials to `key` (a peer id or bootstrap address): the next round may dial it. */
  clearBackoff (key: string): void {
    this.redial.delete(key)
  }

  /** Dials bootstrap addresses and known controllers that are not connected, with capped back-off. */
  reconnect (every: number): void {
    if (this.node == null || this.stopped) return
    const node = this.node
    const connected = this.peers.connected
    const now = performance.now()
    // Generous: a handshake on a loaded machine can take seconds, and a dial given up is paid for again.
    const dialTimeoutMs = Math.max(5000, every * 4)
    const targets: Array<[string, Multiaddr | PeerId]> = []
    const viaBootstrap = new Set<string>()
    for (const [addr, ma, id] of this.bootstrapAddrs) {
      const pid = id ?? this.addrPeer.get(addr)
      if (pid != null && (connected.has(pid) || this.init.blocked(pid))) continue
      if (id != null && !this.admitted(id)) {
        this.init.refused?.(id, addr, 'dial')
        continue
      }
      if (pid != null) viaBootstrap.add(pid)
      targets.push([addr, ma])
    }
    for (const [id, s] of this.peers) {
      if (connected.has(id)) s.missingSince = null
      if ((s.controllerId == null && !s.introduced) || connected.has(id) || this.init.blocked(id) || viaBootstrap.has(id) || !this.admitted(id)) continue
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
        this.refused.delete(key)
        const remote = conn.remotePeer.toString()
        if (key.startsWith('/')) this.addrPeer.set(key, remote)
        this.peers.state(remote)
      }, (err: Error) => {
        // Reached, but the handshake failed: most often a controller holding another mesh key,
        // which otherwise looks like nothing at all (no peers, no error) to whoever runs it.
        if (err.name === 'EncryptionFailedError' && !this.refused.has(key)) {
          this.refused.add(key)
          this.init.log.warn({ target: key, err: err.message }, `cannot connect to ${key}: the handshake failed. Does it hold the same mesh key (--mesh-key)? Compare mesh_key_id in GET /mesh on both.`)
        }
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
  learnAddrs (peerId: string, addrs: string[]): void {
    if (peerId === this.peerId || this.node == null) return
    const s = this.peers.state(peerId)
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
  learnIntroduced (addrs: string[]): void {
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
      if (!this.admitted(pid)) {
        this.init.refused?.(pid, a, 'introduced')
        continue
      }
      const s = this.peers.state(pid)
      s.addrs = [ma]
      s.introduced = s.controllerId == null
    }
  }

  /**
   * Dials `peerId` now (its known address, or what libp2p's peer store
   * has) and resolves once connected or failed; a failure is left to the
   * reconnect loop. For a connection closed on purpose (re-keying): no
   * waiting for the other side or for a reconnect round.
   */
  async dialNow (peerId: string): Promise<boolean> {
    const node = this.node
    if (node == null || this.stopped || !this.admitted(peerId) || this.init.blocked(peerId)) return false
    this.redial.delete(peerId)
    const s = this.peers.get(peerId)
    try {
      await node.dial(s?.addrs[0] ?? peerIdFromString(peerId), { signal: AbortSignal.timeout(5000) })
      return true
    } catch (err) {
      this.init.log.debug({ peer: peerId, err: (err as Error).message }, 'dial failed; the reconnect loop will retry')
      return false
    }
  }

  /** An address of each controller this one is connected to and knows where to reach (for its digests). */
  introductions (): string[] {
    const out: string[] = []
    for (const id of this.node == null ? [] : this.peers.connected) {
      const s = this.peers.get(id)
      if (!this.admitted(id)) continue
      if (s?.controllerId != null && s.addrs.length > 0 && out.length < MAX_INTRODUCED_PEERS) out.push(s.addrs[0].toString())
    }
    return out.sort()
  }
}
