/**
 * What the parts of a Mesh (mesh.ts, exchanges.ts, dialer.ts) share about
 * other peers as a transport sees them: where each listens, the connection
 * and the anti-entropy exchanges with it, and which were already logged as
 * misbehaving. What a controller *says* (its status, its registry hash, its
 * workers) is membership's (src/membership/), not this table's.
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
  /** When the current connection to it opened (monotonic ms). */
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
    if (s == null) this.states.set(id, s = { controllerId: null, lastSyncAt: null, lastSyncMs: null, inSync: null, lastMessageAt: null, addrs: [], connectedAt: 0, missingSince: null, introduced: false, syncFailure: null })
    return s
  }
}

/** A peer as /mesh shows it (see Mesh.peerStatus). */
export interface PeerView {
  peerId: string
  controllerId: string | null
  connected: boolean
  lastSyncAt: number | null
  lastSyncMs: number | null
  inSync: boolean | null
  /** `behind`: exchanges with it keep failing; `failing`: the last one failed. */
  syncState: 'ok' | 'failing' | 'behind'
  syncFailure: SyncFailure | null
  lastMessageAt: number | null
}
