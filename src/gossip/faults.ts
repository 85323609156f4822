/**
 * Simulated network faults for tests and the simulation harness, injected
 * through MeshInit.faults (production meshes have none):
 *
 * - partitions: `block(peerIds)` cuts the links to those peers and the
 *   connection gater refuses new ones until `unblock()`;
 * - loss: every incoming gossip message is dropped with probability `lossRate`;
 * - delay: incoming gossip messages and sync exchanges wait `delayMs`.
 *
 * One instance per mesh; the mesh attaches itself when it starts.
 */

/** What a mesh gives its faults when it starts. */
export interface FaultTarget {
  /** Closes every connection to `peerId`. */
  hangUp: (peerId: string) => Promise<void>
  /** `peerId` may be dialled again at once (forget its reconnect back-off). */
  redial: (peerId: string) => void
}

export class NetworkFaults {
  /** Incoming gossip messages and sync exchanges wait this long (ms). */
  delayMs = 0
  /** Probability that an incoming gossip message is dropped. */
  lossRate = 0
  private readonly blockedPeers = new Set<string>()
  private target: FaultTarget | null = null

  /** Called by the mesh on start (null on stop). */
  attach (target: FaultTarget | null): void {
    this.target = target
  }

  /** True while links to `peerId` are cut. */
  blocked (peerId: string): boolean {
    return this.blockedPeers.has(peerId)
  }

  /** Cuts every link to `peerIds` and refuses new ones until unblocked. */
  async block (peerIds: string[]): Promise<void> {
    for (const p of peerIds) this.blockedPeers.add(p)
    await Promise.all(peerIds.map(async p => { await this.target?.hangUp(p).catch(() => {}) }))
  }

  /** Lets `peerIds` (default: every blocked peer) connect again. */
  unblock (peerIds?: string[]): void {
    for (const p of peerIds ?? [...this.blockedPeers]) {
      this.blockedPeers.delete(p)
      this.target?.redial(p)
    }
  }

  /** Sets loss and delay (clamped to sane ranges). */
  set (f: { delayMs?: number, lossRate?: number }): void {
    if (f.delayMs != null) this.delayMs = Math.max(0, f.delayMs)
    if (f.lossRate != null) this.lossRate = Math.min(1, Math.max(0, f.lossRate))
  }

  /** Runs `deliver` for an incoming gossip message: now, later, or never. */
  message (deliver: () => void): void {
    if (this.lossRate > 0 && Math.random() < this.lossRate) return
    if (this.delayMs > 0) setTimeout(deliver, this.delayMs)
    else deliver()
  }

  /** Waits before a sync exchange, either side. */
  async exchange (): Promise<void> {
    if (this.delayMs > 0) await new Promise(resolve => setTimeout(resolve, this.delayMs))
  }
}

/** Creates the faults object to give a mesh (MeshInit.faults). */
export function networkFaults (): NetworkFaults {
  return new NetworkFaults()
}
