/**
 * Keeps this controller connected to the others: the reconnect loop re-dials
 * bootstrap addresses and known controllers that are not connected, with
 * capped back-off, so a healed partition or a restarted peer rejoins by
 * itself; and where controllers listen is learnt from their digests and the
 * introductions in them. A peer the allow list does not admit is never
 * dialled, nor taken from an introduction.
 *
 * A DNS name in an address (`/dns4/c2/tcp/9100`) is looked up on every dial,
 * so a controller that comes back on a new address under the same name is
 * found again; while the controller a bootstrap name led to stays
 * connected, the name is looked up again now and then, and dialled if it
 * now resolves elsewhere.
 */
import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { BOOTSTRAP_RECHECK_INTERVAL_MS, MAX_INTRODUCED_DIALS, MAX_INTRODUCED_PEERS } from '../constants.ts'
import { dnsName, resolveAddr, systemResolve, type Resolve } from './addresses.ts'
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
  /** Looks up the DNS names in addresses, on every dial. @default the system's resolver */
  resolve?: Resolve
  /** Look a connected bootstrap name up again this often (ms). @default 30000 */
  recheckIntervalMs?: number
  /** True if the allow list admits a peer (looked up again in the file if it does not know it). @default every peer */
  admitted?: (peerId: string) => boolean
  /** A peer was not dialled or not taken from an introduction: it is not admitted. */
  refused?: (peerId: string, address: string | null, reason: RefusalReason) => void
  log: Logger
}

/** A bootstrap address and what the reconnect loop knows of it. */
interface BootstrapAddr {
  /** As given: the key of its back-off, and what logs name. */
  given: string
  ma: Multiaddr
  /** The peer id in the address, if any. */
  peerId: string | undefined
  /** The DNS name in it, if any (looked up on every dial). */
  named: boolean
  /** The peer last found there (addresses may omit the peer id). */
  found: string | undefined
  /** What the name resolved to when `found` was found there (sorted). */
  resolved: string
  /** When the name was last looked up while `found` stayed connected (monotonic ms). */
  checkedAt: number
  /** A lookup of the name is under way. */
  checking: boolean
}

export class Dialer {
  private readonly init: DialerInit
  private readonly peers: PeerTable
  private readonly redial = new Map<string, { fails: number, next: number }>()
  /** Targets whose handshake failed, told once until a dial to them succeeds. */
  private readonly refused = new Set<string>()
  private bootstrapAddrs: BootstrapAddr[] = []
  /** Names whose lookup failed, told once until one succeeds. */
  private readonly unresolved = new Set<string>()
  private readonly resolve: Resolve
  private readonly recheckEvery: number
  private stopped = false

  constructor (init: DialerInit) {
    this.init = init
    this.peers = init.peers
    this.resolve = init.resolve ?? systemResolve
    this.recheckEvery = init.recheckIntervalMs ?? BOOTSTRAP_RECHECK_INTERVAL_MS
  }

  private get node (): Libp2p | null { return this.init.node() }

  private get peerId (): string { return this.init.peerId() }

  private admitted (peerId: string): boolean { return this.init.admitted?.(peerId) ?? true }

  /** Parses the bootstrap addresses (a malformed one throws). */
  setBootstrap (addrs: string[]): void {
    this.bootstrapAddrs = addrs.map(given => {
      const ma = multiaddr(given)
      const peerId = ma.getComponents().find(c => c.name === 'p2p')?.value
      return { given, ma, peerId, named: dnsName(ma) != null, found: undefined, resolved: '', checkedAt: 0, checking: false }
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
    const targets: Array<[string, Multiaddr | PeerId, BootstrapAddr?]> = []
    const viaBootstrap = new Set<string>()
    for (const b of this.bootstrapAddrs) {
      const pid = b.peerId ?? b.found
      if (pid != null && this.init.blocked(pid)) continue
      if (b.peerId != null && !this.admitted(b.peerId)) {
        this.init.refused?.(b.peerId, b.given, 'dial')
        continue
      }
      // Connected to whoever is there, or it is this controller (one list for all, as in a StatefulSet).
      if (pid != null && (connected.has(pid) || pid === this.peerId)) {
        if (b.named && now - b.checkedAt >= this.recheckEvery) this.recheck(b, now)
        continue
      }
      if (pid != null) viaBootstrap.add(pid)
      targets.push([b.given, b.ma, b])
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
    for (const [key, target, boot] of targets) {
      const r = this.redial.get(key) ?? { fails: 0, next: 0 }
      if (r.next > now) continue
      // No second dial while one is in flight (a handshake can outlast a round on a busy machine).
      r.next = Infinity
      this.redial.set(key, r)
      const signal = AbortSignal.timeout(dialTimeoutMs)
      let resolved: Multiaddr[] = []
      this.lookup(target).then(async addrs => {
        resolved = addrs ?? []
        return await node.dial(addrs ?? target as PeerId, { signal })
      }).then(conn => {
        this.redial.delete(key)
        this.refused.delete(key)
        const remote = conn.remotePeer.toString()
        if (boot != null) {
          boot.found = remote
          boot.resolved = resolved.map(String).sort().join(' ')
          boot.checkedAt = performance.now()
        }
        this.peers.state(remote)
      }, (err: Error) => {
        if (boot != null && dialledSelf(err)) {
          boot.found = this.peerId
          boot.resolved = resolved.map(String).sort().join(' ')
          boot.checkedAt = performance.now()
          this.redial.delete(key)
          return
        }
        // Reached, but the handshake failed: most often a controller holding another mesh key,
        // which otherwise looks like nothing at all (no peers, no error) to whoever runs it.
        if (handshakeFailed(err) && !this.refused.has(key)) {
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
    // Every digest carries them: parse only when they changed (a controller restarted elsewhere).
    if (s.addrs.length === addrs.length && s.addrs.every((a, i) => a.toString() === addrs[i])) return
    const valid: Multiaddr[] = []
    for (const a of addrs) {
      try {
        const ma = multiaddr(a)
        const pid = ma.getComponents().find(c => c.name === 'p2p')?.value
        if (pid === peerId) valid.push(ma)
      } catch {}
    }
    if (valid.length > 0) s.addrs = valid
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

  /**
   * The addresses to dial for `target`: a multiaddr with a DNS name becomes
   * what the name resolves to now; an IP multiaddr is itself; null for a
   * peer id (libp2p dials what its peer store holds).
   */
  private async lookup (target: Multiaddr | PeerId): Promise<Multiaddr[] | null> {
    if (!isMultiaddr(target)) return null
    const name = dnsName(target)
    if (name == null) return [target]
    try {
      const addrs = await resolveAddr(target, this.resolve)
      this.unresolved.delete(name.name)
      return addrs
    } catch (err) {
      // Common while a mesh starts (a peer's name exists only once it runs): said once per name.
      if (!this.unresolved.has(name.name)) {
        this.unresolved.add(name.name)
        this.init.log.warn({ name: name.name, err: (err as Error).message }, `cannot resolve ${name.name}: ${(err as Error).message}; trying again`)
      }
      throw err
    }
  }

  /** Looks a connected bootstrap name up again; if it resolves elsewhere now, the next round dials it. */
  private recheck (b: BootstrapAddr, now: number): void {
    if (b.checking) return
    b.checking = true
    b.checkedAt = now
    resolveAddr(b.ma, this.resolve).then(addrs => {
      const resolved = addrs.map(String).sort().join(' ')
      // Found before this name was ever looked up (an address with a peer id that dialled us): note what it is.
      if (b.resolved === '') b.resolved = resolved
      else if (resolved !== b.resolved && !this.stopped) {
        this.init.log.info({ bootstrap: b.given, was: b.resolved, now: resolved }, `bootstrap ${b.given} resolves elsewhere now: dialling it`)
        b.found = undefined
        this.redial.delete(b.given)
      }
    }, () => {}).finally(() => { b.checking = false })
  }
}

/** A dial that reached a peer but failed in the handshake (one of several addresses, too). */
function handshakeFailed (err: Error): boolean {
  if (err.name === 'EncryptionFailedError') return true
  return err instanceof AggregateError && err.errors.some(e => (e as Error)?.name === 'EncryptionFailedError')
}

/** A dial that reached this controller itself (its own address among the bootstrap addresses). */
function dialledSelf (err: Error): boolean {
  const self = (e: unknown): boolean => (e as Error)?.name === 'InvalidPeerIdError' && /dial self/i.test((e as Error).message)
  return self(err) || (err instanceof AggregateError && err.errors.length > 0 && err.errors.every(self))
}

function isMultiaddr (t: Multiaddr | PeerId): t is Multiaddr {
  return typeof (t as Multiaddr).getComponents === 'function'
}
