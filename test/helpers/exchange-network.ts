/**
 * An in-memory network of anti-entropy schedulers (src/gossip/exchanges.ts),
 * in the spirit of yjs's seeded test network: N nodes, each an `Exchanges`
 * over its own MemoryReplica and PeerTable, linked by @libp2p/utils'
 * in-memory stream pairs. No sockets, no libp2p node, no Yjs.
 *
 * It plays the parts of the mesh around the scheduler: every pair starts
 * connected, with no exchange queued (a mesh that formed earlier); `cut` is
 * a partition (the peers disconnect, streams in flight between them are
 * aborted, dials are refused) and `link` a heal (both sides see a new
 * connection, and the smaller peer id wants an exchange, as mesh.ts does on
 * peer:connect). `hold` keeps a node's dials to a peer waiting (a node in a
 * long exchange), `silent` peers take streams and never answer (a stall).
 * Registry hashes travel as membership carries them: each node's hash is a
 * digest of its replica, learnt by its peers from `publishDigests()` and,
 * after an exchange, as "it holds what I hold".
 */
import type { Stream } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
// Not the globals: a test may fake those.
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { Exchanges } from '../../src/gossip/exchanges.ts'
import { PeerTable } from '../../src/gossip/peers.ts'
import { SYNC_PROTOCOL, type SyncFailureReason, type SyncResult } from '../../src/gossip/sync.ts'
import { MemoryReplica } from './memory-replica.ts'

export interface ExchangeNetworkInit {
  /** Number of nodes, with ids `peer-00`, `peer-01`, … (so node i has the i-th smallest peer id). */
  n: number
  /** The items node i holds at start (name → size in bytes). @default none */
  items?: (i: number) => Record<string, number>
  /** Largest delta a node accepts (bytes). @default 64 MiB */
  maxSyncBytes?: number
  /** Sync timeout of every node (ms). @default 5000 */
  syncTimeoutMs?: number
  /** Give the scheduler registry hashes (without them every peer always looks different). @default true */
  hashes?: boolean
}

export class TestNode {
  readonly id: string
  readonly replica: MemoryReplica
  readonly peers = new PeerTable()
  readonly exchanges: Exchanges
  /** Peers' registry hashes as last heard (a digest, or an exchange that ended), as membership keeps them. */
  readonly heard = new Map<string, { hash: string, at: number }>()
  /** Every dial this node made, by target (refused and failed ones included), and when (monotonic ms). */
  readonly dials: string[] = []
  readonly dialTimes: number[] = []
  /** Exchanges that completed, either side. */
  readonly synced: Array<SyncResult & { peerId: string }> = []
  /** Exchanges that failed, either side. */
  readonly failures: Array<{ peerId: string, reason: SyncFailureReason }> = []

  constructor (id: string, replica: MemoryReplica, net: ExchangeNetwork, init: ExchangeNetworkInit) {
    this.id = id
    this.replica = replica
    const hashes = init.hashes ?? true
    this.exchanges = new Exchanges({
      controllerId: `c-${id}`,
      replica,
      peers: this.peers,
      log: pino({ level: 'silent' }),
      peerId: () => id,
      dial: async (peerId, signal) => await net.dial(this, peerId, signal),
      registryHash: hashes ? () => this.hash() : undefined,
      peerHash: hashes ? peerId => this.heard.get(peerId) ?? null : undefined,
      blocked: peerId => net.isCut(id, peerId),
      maxSyncBytes: init.maxSyncBytes ?? 64 * 1024 * 1024,
      syncTimeoutMs: init.syncTimeoutMs ?? 5000,
      onSync: res => {
        this.synced.push(res)
        this.heard.set(res.peerId, { hash: this.hash(), at: performance.now() })
      },
      onSyncFailed: (peerId, reason) => { this.failures.push({ peerId, reason }) }
    })
  }

  /** The registry hash: a digest of what the replica holds. */
  hash (): string {
    return createHash('sha256').update(this.replica.digest()).digest('hex').slice(0, 16)
  }

  /** Exchanges this node has dialled with `peerId`. */
  dialsTo (peerId: string): number {
    return this.dials.filter(p => p === peerId).length
  }
}

const pairKey = (a: string, b: string): string => a < b ? `${a} ${b}` : `${b} ${a}`

export class ExchangeNetwork {
  readonly nodes: TestNode[] = []
  /** Nodes that accept sync streams and never answer (a stalled peer). */
  readonly silent = new Set<string>()
  private readonly cuts = new Set<string>()
  private readonly gates = new Map<string, Promise<void>>()
  private readonly releases: Array<() => void> = []
  /** Streams in flight, by pair of nodes (aborted when the pair is cut). */
  private readonly streams = new Map<string, Set<Stream>>()

  constructor (init: ExchangeNetworkInit) {
    for (let i = 0; i < init.n; i++) {
      const id = `peer-${String(i).padStart(2, '0')}`
      this.nodes.push(new TestNode(id, new MemoryReplica(init.items?.(i) ?? {}), this, init))
    }
    for (const a of this.nodes) {
      for (const b of this.nodes) {
        if (a !== b) this.connect(a, b.id, false)
      }
    }
  }

  node (id: string): TestNode {
    const n = this.nodes.find(n => n.id === id)
    if (n == null) throw new Error(`no node ${id}`)
    return n
  }

  isCut (a: string, b: string): boolean { return this.cuts.has(pairKey(a, b)) }

  /** Cuts the link between `a` and `b`: both disconnect, their streams in flight are aborted. */
  cut (a: string, b: string): void {
    const key = pairKey(a, b)
    if (this.cuts.has(key)) return
    this.cuts.add(key)
    this.node(a).peers.connected.delete(b)
    this.node(b).peers.connected.delete(a)
    for (const s of this.streams.get(key) ?? []) s.abort(new Error('the link was cut'))
    this.streams.delete(key)
  }

  /** Restores a cut link: a new connection on both sides, as the mesh's peer:connect handles it. */
  link (a: string, b: string): void {
    if (!this.cuts.delete(pairKey(a, b))) return
    this.connect(this.node(a), b)
    this.connect(this.node(b), a)
  }

  /** Cuts every link between nodes of different groups. */
  partition (groups: string[][]): void {
    for (const [i, g] of groups.entries()) {
      for (const h of groups.slice(i + 1)) {
        for (const a of g) for (const b of h) this.cut(a, b)
      }
    }
  }

  /** Restores every cut link. */
  heal (): void {
    for (const key of [...this.cuts]) {
      const [a, b] = key.split(' ')
      this.link(a, b)
    }
  }

  /** Each node tells the peers it is linked to its registry hash (membership's digest). */
  publishDigests (): void {
    const now = performance.now()
    for (const a of this.nodes) {
      const hash = a.hash()
      for (const b of this.nodes) {
        if (b !== a && !this.isCut(a.id, b.id)) b.heard.set(a.id, { hash, at: now })
      }
    }
  }

  /** Holds every dial to `id` until the returned function is called. */
  hold (id: string): () => void {
    let release!: () => void
    this.gates.set(id, new Promise(resolve => { release = resolve }))
    const done = (): void => {
      this.gates.delete(id)
      release()
    }
    this.releases.push(done)
    return done
  }

  /** Opens a sync stream from `from` to `to` and hands the inbound end to `to`. */
  async dial (from: TestNode, to: string, signal: AbortSignal): Promise<Stream> {
    from.dials.push(to)
    from.dialTimes.push(performance.now())
    const gate = this.gates.get(to)
    if (gate != null) await gate
    signal.throwIfAborted()
    if (this.isCut(from.id, to)) throw new Error('the connection gater refused the dial')
    const [outbound, inbound] = await streamPair({ protocol: SYNC_PROTOCOL, delay: 0 })
    outbound.protocol = inbound.protocol = SYNC_PROTOCOL
    const key = pairKey(from.id, to)
    const open = this.streams.get(key) ?? new Set()
    this.streams.set(key, open)
    for (const s of [outbound, inbound]) {
      open.add(s)
      s.addEventListener('close', () => { open.delete(s) })
    }
    if (!this.silent.has(to)) this.node(to).exchanges.respond(inbound, from.id)
    return outbound
  }

  /** Waits until no node has an exchange in progress or queued and no stream is open (throws after `timeoutMs`). */
  async settle (timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs
    // A refused exchange queues its call back only once the refusal's stream closed: quiet for a few turns.
    let quiet = 0
    while (quiet < 3) {
      if (performance.now() > deadline) {
        const busy = this.nodes.filter(n => n.exchanges.backlog > 0).map(n => `${n.id} (${n.exchanges.backlog})`)
        throw new Error(`the network did not settle within ${timeoutMs} ms: backlog at ${busy.join(', ')}; ${this.openStreams()} streams open`)
      }
      if (this.nodes.every(n => n.exchanges.backlog === 0) && this.openStreams() === 0) {
        quiet++
        await nextTurn()
      } else {
        quiet = 0
        await sleep(1)
      }
    }
  }

  private openStreams (): number {
    let n = 0
    for (const set of this.streams.values()) {
      for (const s of set) if (s.status === 'open' || s.status === 'closing') n++
    }
    return n
  }

  /** True when every replica holds the same items. */
  converged (): boolean {
    return new Set(this.nodes.map(n => n.replica.digest())).size === 1
  }

  /** Stops every scheduler, releases held dials and aborts the streams still open. */
  stop (): void {
    for (const n of this.nodes) n.exchanges.stop()
    for (const release of this.releases) release()
    for (const set of this.streams.values()) {
      for (const s of set) s.abort(new Error('the network stopped'))
    }
    this.streams.clear()
  }

  /** Marks `peerId` connected to `node` now, as the mesh does on peer:connect (`want`: and queues the exchange). */
  private connect (node: TestNode, peerId: string, want = true): void {
    node.peers.connected.add(peerId)
    node.peers.state(peerId).connectedAt = performance.now()
    node.exchanges.connected(peerId)
    // One side starts the exchange of a new link: the smaller peer id (mesh.ts).
    if (want && peerId > node.id) node.exchanges.want(peerId)
  }
}
