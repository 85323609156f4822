/**
 * What the parts of a Mesh (mesh.ts, exchanges.ts, dialer.ts) share about
 * other peers: the state of each, which are connected, which are blocked,
 * and which were already logged as misbehaving.
 */
import type { Multiaddr } from '@multiformats/multiaddr'
import type { SyncFailureReason } from './sync.ts'

/** The current run of failed anti-entropy exchanges with a peer (null once one succeeds). */
export interface SyncFailure {
  /** Failures in a row. */
  count: number
  reason: SyncFailureReason
  error: string
  /** Wall-clock ms of the last failure, and of the first of this run. */
  at: number
  since: number
  /** Monotonic ms before which no background exchange with it starts (back-off). */
  retryAt: number
}

export interface PeerState {
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
  /** Exchanges with it failing in a row, null when the last one succeeded (or none failed). */
  syncFailure: SyncFailure | null
}

export class PeerTable {
  private readonly states = new Map<string, PeerState>()
  /**
   * Peers with at least one open connection, kept from libp2p's connect and
   * disconnect events: asking libp2p builds a peer id object and its base58
   * text per peer per call, which the reconnect loop and the exchange queue
   * did many times a second (a tenth of a 32-controller heal's CPU).
   */
  readonly connected = new Set<string>()
  /** Peers cut off by `Mesh.block()`: the connection gater refuses them. */
  readonly blocked = new Set<string>()
  /** Peers already logged for garbage (`sync:<id>` for a failed exchange): each is logged once. */
  readonly loggedBadPeers = new Set<string>()

  get (id: string): PeerState | undefined {
    return this.states.get(id)
  }

  delete (id: string): void {
    this.states.delete(id)
  }

  [Symbol.iterator] (): Iterator<[string, PeerState]> {
    return this.states[Symbol.iterator]()
  }

  /** The state of `id`, created on first use. */
  state (id: string): PeerState {
    let s = this.states.get(id)
    if (s == null) this.states.set(id, s = { controllerId: null, lastSyncAt: null, lastSyncMs: null, inSync: null, lastMessageAt: null, addrs: [], hash: null, hashAt: -Infinity, connectedAt: 0, missingSince: null, introduced: false, syncFailure: null })
    return s
  }
}
