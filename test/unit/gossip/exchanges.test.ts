/**
 * The anti-entropy scheduler (src/gossip/exchanges.ts) on an in-memory
 * network (test/helpers/exchange-network.ts): in-memory replicas and stream
 * pairs, no sockets, no libp2p node, no Yjs. The protocol itself is
 * sync.test.ts's; what is under test here is who exchanges with whom, when:
 * one exchange at a time and the BUSY / call-back rules, back-off after
 * failures and the `behind` report, a stalled exchange that stops counting
 * as busy, the periodic exchange with a peer that differs, and, over many
 * seeds of a random network with partitions, that every replica ends equal.
 */
import { performance } from 'node:perf_hooks'
import seedrandom from 'seedrandom'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  SYNC_BEHIND_AFTER_FAILURES, SYNC_BUSY_WINDOW_MS, SYNC_FAILURE_BACKOFF_MAX_MS, SYNC_FAILURE_BACKOFF_MS, SYNC_IDLE_EVERY,
  SYNC_MAX_BUSY_RETRIES
} from '../../../src/constants.ts'
import { ExchangeNetwork } from '../../helpers/exchange-network.ts'

let net: ExchangeNetwork | null = null

afterEach(() => {
  net?.stop()
  net = null
  vi.restoreAllMocks()
  vi.useRealTimers()
})

/** Every node holds one item of its own, `item-<i>` (100 bytes). */
const ownItem = (i: number): Record<string, number> => ({ [`item-${i}`]: 100 })

const names = (items: Map<string, unknown>): string[] => [...items.keys()].sort()

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Turns of the event loop until `done` (at most 1000: in-memory exchanges need a few dozen, no timers). */
async function turns (done: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !done(); i++) await new Promise(resolve => setImmediate(resolve))
}

describe('Exchanges: a seeded random network', () => {
  /** Seeds run (EXCHANGES_TEST_SEEDS=500 for a longer search). */
  const SEEDS = Number(process.env.EXCHANGES_TEST_SEEDS ?? 16)
  /** Bounds of one run: random steps, then rounds of periodic exchanges after the final heal. */
  const STEPS = 40
  const WRITING_ROUNDS = 3
  const MAX_ROUNDS = 60

  async function run (seed: string): Promise<{ rounds: number, exchanges: number }> {
    const rng = seedrandom(seed)
    // The scheduler's own randomness (pauses, back-off jitter, the periodic pick) from the seed too.
    vi.spyOn(Math, 'random').mockImplementation(seedrandom(`${seed}/scheduler`))
    const int = (k: number): number => Math.floor(rng() * k)
    const n = 3 + int(5)
    const created = new Set<string>()
    const network = net = new ExchangeNetwork({
      n,
      items: i => {
        const items: Record<string, number> = {}
        for (let k = int(4); k > 0; k--) items[`n${i}-${k}`] = 1 + int(2000)
        for (const name of Object.keys(items)) created.add(name)
        return items
      }
    })
    const nodes = network.nodes
    let writes = 0
    for (let step = 0; step < STEPS; step++) {
      const a = nodes[int(n)]
      const others = nodes.filter(x => x !== a)
      const b = others[int(others.length)]
      const r = rng()
      if (r < 0.12) {
        // A partition: each node on a random side.
        const side = nodes.map(() => rng() < 0.5)
        network.partition([nodes.filter((_, i) => side[i]).map(x => x.id), nodes.filter((_, i) => !side[i]).map(x => x.id)])
      } else if (r < 0.2) {
        network.heal()
      } else if (r < 0.3) {
        const name = `w${writes++}`
        a.replica.items.set(name, new Uint8Array(1 + int(500)).fill(writes))
        created.add(name)
      } else if (r < 0.5) {
        void a.exchanges.syncRandomPeer()
      } else if (r < 0.65) {
        a.exchanges.want(b.id)
      } else if (r < 0.75) {
        // A direct exchange is not held back by one in progress (syncWith's contract): started only
        // on a free node, so that no replica takes part in two exchanges at once.
        if (!a.exchanges.busy) void a.exchanges.syncWith(b.id)
      } else if (r < 0.85) {
        network.publishDigests()
      }
      for (let t = 1 + int(4); t > 0; t--) await new Promise(resolve => setImmediate(resolve))
    }
    // Even partitioned, whatever was started or queued finishes (or is dropped).
    await network.settle()
    network.heal()
    await network.settle()
    // Rounds of the periodic exchange; in the first few, writes still arrive (only anti-entropy carries them here).
    let rounds = 0
    while ((rounds < WRITING_ROUNDS || !network.converged()) && rounds < MAX_ROUNDS) {
      if (rounds < WRITING_ROUNDS) {
        const name = `w${writes++}`
        nodes[int(n)].replica.items.set(name, new Uint8Array(10).fill(writes))
        created.add(name)
      }
      network.publishDigests()
      for (const x of nodes) void x.exchanges.syncRandomPeer()
      await network.settle()
      rounds++
    }
    const all = [...created].sort()
    for (const x of nodes) {
      expect(names(x.replica.items), `seed ${seed}: ${x.id} after ${rounds} rounds`).toEqual(all)
      // One exchange at a time: no replica was sent an item it already held.
      expect(x.replica.duplicates, `seed ${seed}: ${x.id} received an item twice`).toBe(0)
    }
    return { rounds, exchanges: nodes.reduce((s, x) => s + x.synced.length, 0) }
  }

  it(`after random partitions, heals, writes and exchanges, every replica ends equal and holds every item once (${SEEDS} seeds)`, async () => {
    let exchanges = 0
    let rounds = 0
    for (let s = 0; s < SEEDS; s++) {
      const res = await run(`exchanges-${s}`)
      exchanges += res.exchanges
      rounds += res.rounds
      net?.stop()
      vi.restoreAllMocks()
    }
    // The runs did exchange, and needed periodic rounds (the property is not met by replicas that started equal).
    expect(exchanges).toBeGreaterThan(SEEDS)
    expect(rounds).toBeGreaterThan(SEEDS * WRITING_ROUNDS)
  }, 30_000 + SEEDS * 1000)
})

describe('Exchanges: one exchange at a time', () => {
  it('a node in an exchange answers BUSY; being the smaller id, it calls the refused peer back once free', async () => {
    net = new ExchangeNetwork({ n: 3, items: ownItem })
    const [a, b, c] = net.nodes
    const release = net.hold(c.id)
    // a's exchange with c waits for its stream: a is in an exchange.
    const ac = a.exchanges.syncWith(c.id)
    expect(a.exchanges.busy).toBe(true)
    expect(await b.exchanges.syncWith(a.id)).toBeNull()
    expect(b.failures).toEqual([]) // BUSY is no failure
    expect(names(a.replica.items)).toEqual(['item-0'])
    expect(names(b.replica.items)).toEqual(['item-1'])
    // a queued the call back (its exchange with c, and b).
    await vi.waitFor(() => { expect(a.exchanges.backlog).toBe(2) })
    expect(b.exchanges.backlog).toBe(0)
    release()
    expect(await ac).toMatchObject({ peerController: 'c-peer-02', wasInSync: false })
    await net.settle()
    expect(a.synced.map(r => r.peerId)).toEqual([c.id, b.id])
    // b did not ask again: a took the exchange over.
    expect(b.dialsTo(a.id)).toBe(1)
    expect(a.dialsTo(b.id)).toBe(1)
    // After c, then b: a and b hold everything; c got a's item only.
    expect(names(a.replica.items)).toEqual(['item-0', 'item-1', 'item-2'])
    expect(names(b.replica.items)).toEqual(['item-0', 'item-1', 'item-2'])
    expect(names(c.replica.items)).toEqual(['item-0', 'item-2'])
  })

  it('refused by a busy peer with a larger id, a node asks again after a pause and gets its exchange; the busy one does not call back', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0) // the shortest pauses
    net = new ExchangeNetwork({ n: 3, items: ownItem })
    const [a, b, c] = net.nodes
    const release = net.hold(c.id)
    const bc = b.exchanges.syncWith(c.id)
    a.exchanges.want(b.id)
    await vi.waitFor(() => { expect(a.dialsTo(b.id)).toBeGreaterThanOrEqual(3) }, { timeout: 2000, interval: 5 })
    expect(b.exchanges.backlog).toBe(1) // its own exchange only: no call back queued
    release()
    await bc
    await net.settle()
    expect(a.synced.map(r => r.peerId)).toEqual([b.id])
    expect(b.dialsTo(a.id)).toBe(0)
    expect(names(a.replica.items)).toEqual(['item-0', 'item-1', 'item-2'])
  })

  it(`asks a busy peer with a larger id at most ${SYNC_MAX_BUSY_RETRIES} more times, then leaves it to the periodic exchange`, async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0) // pauses of 20 ms × BUSY answers: 720 ms in all, within the busy window
    net = new ExchangeNetwork({ n: 3, items: ownItem })
    const [a, b, c] = net.nodes
    const release = net.hold(c.id)
    const bc = b.exchanges.syncWith(c.id)
    a.exchanges.want(b.id)
    await vi.waitFor(() => { expect(a.exchanges.backlog).toBe(0) }, { timeout: 2500, interval: 5 })
    expect(a.dialsTo(b.id)).toBe(1 + SYNC_MAX_BUSY_RETRIES)
    await sleep(200)
    expect(a.dialsTo(b.id)).toBe(1 + SYNC_MAX_BUSY_RETRIES)
    expect(a.synced).toEqual([])
    expect(b.exchanges.busy).toBe(true)
    release()
    await bc
  })

  it('two nodes dialling each other at once both answer BUSY, and the smaller id calls back: no deadlock, no endless refusals', async () => {
    net = new ExchangeNetwork({ n: 2, items: ownItem })
    const [a, b] = net.nodes
    const [ra, rb] = await Promise.all([a.exchanges.syncWith(b.id), b.exchanges.syncWith(a.id)])
    expect(ra).toBeNull()
    expect(rb).toBeNull()
    await net.settle()
    expect(a.dialsTo(b.id)).toBe(2)
    expect(b.dialsTo(a.id)).toBe(1)
    expect(a.synced.map(r => r.peerId)).toEqual([b.id])
    expect(net.converged()).toBe(true)
    expect(a.failures).toEqual([])
    expect(b.failures).toEqual([])
  })
})

describe('Exchanges: the queue', () => {
  it('a queued exchange whose peer is cut off during a BUSY pause does not hold up the exchanges queued behind it', async () => {
    // The pause is a (fake) timer: the test acts while it is pending, then ends it.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    net = new ExchangeNetwork({ n: 4, items: ownItem })
    const [a, b, c, d] = net.nodes
    const release = net.hold(c.id)
    const bc = b.exchanges.syncWith(c.id)
    // b is busy and the larger id: a asks again after a pause.
    a.exchanges.want(b.id)
    await turns(() => a.dialsTo(b.id) === 1 && a.exchanges.backlog === 1)
    expect([a.dialsTo(b.id), a.exchanges.backlog]).toEqual([1, 1]) // refused once, b queued, the pause pending
    a.exchanges.want(d.id)
    net.cut(a.id, b.id)
    vi.advanceTimersByTime(1000)
    await turns(() => a.synced.length > 0)
    expect(a.synced.map(r => r.peerId)).toEqual([d.id])
    expect(a.exchanges.backlog).toBe(0)
    expect(a.dialsTo(b.id)).toBe(1)
    release()
    await bc
  })
})

describe('Exchanges: failures', () => {
  it(`backs off from a peer whose exchanges fail, reports it behind after ${SYNC_BEHIND_AFTER_FAILURES} failures, clears it on a success`, async () => {
    net = new ExchangeNetwork({ n: 2, items: ownItem, hashes: false })
    const [a, b] = net.nodes
    a.replica.refuse = true
    const waits: number[] = []
    for (let i = 1; i <= SYNC_BEHIND_AFTER_FAILURES; i++) {
      expect(a.exchanges.behind()).toEqual([])
      // A direct exchange is not held back by the back-off.
      expect(await a.exchanges.syncWith(b.id)).toBeNull()
      const f = a.peers.get(b.id)?.syncFailure
      expect(f).toMatchObject({ count: i, reason: 'rejected' })
      waits.push(f!.retryAt - performance.now())
      // b records its side (the stream a aborted) before it is free for the next one.
      await net.settle()
    }
    // The back-off doubles per failure (with ±25 % jitter).
    for (const [i, w] of waits.entries()) {
      expect(w).toBeGreaterThan(0.75 * SYNC_FAILURE_BACKOFF_MS * 2 ** i - 50)
      expect(w).toBeLessThanOrEqual(1.25 * SYNC_FAILURE_BACKOFF_MS * 2 ** i)
    }
    expect(a.exchanges.behind()).toEqual([expect.objectContaining({ peerId: b.id, controllerId: 'c-peer-01', failures: SYNC_BEHIND_AFTER_FAILURES, reason: 'rejected' })])
    // The failing side aborted the stream: the peer saw it end at once ('closed'), not after its sync timeout.
    expect(b.failures.map(f => f.reason)).toEqual(['closed', 'closed', 'closed'])
    expect(names(a.replica.items)).toEqual(['item-0'])

    // No tight loop: periodic ticks and hints during the back-off start no exchange, and queue none.
    for (let i = 0; i < 50; i++) {
      await a.exchanges.syncRandomPeer()
      a.exchanges.want(b.id)
    }
    expect(a.dialsTo(b.id)).toBe(SYNC_BEHIND_AFTER_FAILURES)
    expect(a.exchanges.backlog).toBe(0)

    // A new connection may try again at once; the run of failures goes on counting.
    a.exchanges.connected(b.id)
    await a.exchanges.syncRandomPeer()
    expect(a.dialsTo(b.id)).toBe(SYNC_BEHIND_AFTER_FAILURES + 1)
    expect(a.exchanges.behind()).toEqual([expect.objectContaining({ failures: SYNC_BEHIND_AFTER_FAILURES + 1 })])
    await net.settle()

    // A success clears it.
    a.replica.refuse = false
    a.exchanges.connected(b.id)
    await a.exchanges.syncRandomPeer()
    expect(a.dialsTo(b.id)).toBe(SYNC_BEHIND_AFTER_FAILURES + 2)
    expect(a.peers.get(b.id)?.syncFailure).toBeNull()
    expect(a.exchanges.behind()).toEqual([])
    await net.settle()
    expect(net.converged()).toBe(true)
  })

  it('retries a failing peer once its back-off is over, not before', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0) // back-off: 750 ms after the first failure, 1500 ms after the second
    net = new ExchangeNetwork({ n: 2, items: ownItem, hashes: false })
    const [a, b] = net.nodes
    a.replica.refuse = true
    const tick = setInterval(() => { void a.exchanges.syncRandomPeer() }, 10)
    try {
      await vi.waitFor(() => { expect(a.dialsTo(b.id)).toBe(2) }, { timeout: 3000, interval: 10 })
      const [first, second] = a.dialTimes
      expect(second - first).toBeGreaterThanOrEqual(0.75 * SYNC_FAILURE_BACKOFF_MS)
      // The next waits twice as long: 70 ticks later, still two.
      await sleep(700)
      expect(a.dialsTo(b.id)).toBe(2)
      expect(a.peers.get(b.id)?.syncFailure).toMatchObject({ count: 2 })
    } finally {
      clearInterval(tick)
    }
  })

  it('a delta too large for this node is reported behind at once and held back for the longest back-off', async () => {
    vi.spyOn(Math, 'random').mockImplementation(seedrandom('too-large'))
    net = new ExchangeNetwork({ n: 3, items: i => i === 1 ? { big: 64 * 1024 } : ownItem(i), maxSyncBytes: 16 * 1024, hashes: false })
    const [a, b, c] = net.nodes
    expect(await a.exchanges.syncWith(b.id)).toBeNull()
    expect(a.exchanges.behind()).toEqual([expect.objectContaining({ peerId: b.id, failures: 1, reason: 'too_large' })])
    expect(a.peers.get(b.id)!.syncFailure!.retryAt - performance.now()).toBeGreaterThan(0.75 * SYNC_FAILURE_BACKOFF_MAX_MS - 50)
    // b recorded the size failure too (it refused to send), and nothing was applied on either side.
    expect(b.failures).toEqual([{ peerId: a.id, reason: 'too_large' }])
    expect(a.replica.applied).toEqual([])
    // Meanwhile the periodic exchange picks either peer: b's turns start nothing, c's go ahead.
    for (let i = 0; i < 20; i++) {
      await a.exchanges.syncRandomPeer()
      await net.settle()
    }
    expect(a.dialsTo(b.id)).toBe(1)
    expect(a.dialsTo(c.id)).toBeGreaterThan(0)
    expect(a.dialsTo(c.id)).toBeLessThan(20)
    expect(a.failures).toHaveLength(1)
    // A disconnected peer is not reported.
    net.cut(a.id, b.id)
    expect(a.exchanges.behind()).toEqual([])
  })
})

describe('Exchanges: a stalled exchange', () => {
  it(`stops making the node busy after ${SYNC_BUSY_WINDOW_MS} ms: the exchanges queued behind it run, and peers are answered`, async () => {
    net = new ExchangeNetwork({ n: 4, items: ownItem, syncTimeoutMs: 20_000 })
    const [a, b, c, s] = net.nodes
    net.silent.add(s.id)
    // New links: the one to s comes first and stalls; b's is queued behind it.
    a.exchanges.want(s.id)
    a.exchanges.want(b.id)
    expect(a.exchanges.busy).toBe(true)
    expect(await c.exchanges.syncWith(a.id)).toBeNull() // BUSY
    const t0 = performance.now()
    await vi.waitFor(() => { expect(a.synced.map(r => r.peerId)).toContain(b.id) }, { timeout: SYNC_BUSY_WINDOW_MS + 3000, interval: 20 })
    expect(performance.now() - t0).toBeGreaterThan(SYNC_BUSY_WINDOW_MS - 500)
    // a called c back too (the smaller id), while the stalled exchange is still open.
    await vi.waitFor(() => { expect(a.synced.map(r => r.peerId)).toEqual([b.id, c.id]) }, { timeout: 500, interval: 10 })
    expect(a.exchanges.busy).toBe(false)
    // Still open: the stalled exchange (and s, wanted until it ends).
    expect(a.exchanges.backlog).toBe(2)
    expect(a.failures).toEqual([])
    expect(names(a.replica.items)).toEqual(['item-0', 'item-1', 'item-2'])
  }, 15_000)
})

describe('Exchanges: a long apply', () => {
  it(`keeps the node busy past ${SYNC_BUSY_WINDOW_MS} ms while it applies a delta: no second exchange carries it again meanwhile`, async () => {
    net = new ExchangeNetwork({ n: 3, items: i => i === 0 ? {} : ownItem(i), syncTimeoutMs: 20_000 })
    const [a, b, c] = net.nodes
    // a joins late: it pulls b's registry and takes longer than the busy window to apply it.
    let release = (): void => {}
    a.replica.applyGate = new Promise(resolve => { release = resolve })
    const first = a.exchanges.syncWith(b.id)
    await vi.waitFor(() => { expect(a.replica.waitingAtGate).toBe(1) }, { timeout: 5000, interval: 10 })
    await sleep(SYNC_BUSY_WINDOW_MS + 500)
    expect(a.exchanges.busy).toBe(true)
    // Peers asking meanwhile are answered BUSY (nothing sent, nothing failed), and a asks no one.
    expect(await b.exchanges.syncWith(a.id)).toBeNull()
    expect(await c.exchanges.syncWith(a.id)).toBeNull()
    expect(a.dials).toEqual([b.id])
    expect(a.replica.waitingAtGate).toBe(1)
    release()
    expect(await first).not.toBeNull()
    // Then a calls the two back (the smaller id of each pair): c's item arrives, b's is not carried twice.
    await vi.waitFor(() => { expect(names(a.replica.items)).toEqual(['item-1', 'item-2']) }, { timeout: 5000, interval: 10 })
    expect(a.replica.duplicates).toBe(0)
    expect([...a.failures, ...b.failures, ...c.failures]).toEqual([])
  }, 15_000)
})

describe('Exchanges: the periodic exchange', () => {
  it('goes to a peer whose registry hash differs, once this node\'s own hash held still for a tick', async () => {
    net = new ExchangeNetwork({ n: 3, items: (i): Record<string, number> => i === 2 ? { other: 10 } : { same: 10 } })
    const [a, b, c] = net.nodes
    net.publishDigests()
    // The first tick has no previous hash to compare with: the registry may still be moving.
    await a.exchanges.syncRandomPeer()
    expect(a.dials).toEqual([])
    await a.exchanges.syncRandomPeer()
    expect(a.dials).toEqual([c.id])
    expect(names(a.replica.items)).toEqual(['other', 'same'])
    // That exchange moved a's hash: the next tick waits for it to hold still.
    await a.exchanges.syncRandomPeer()
    expect(a.dials).toEqual([c.id])
    // Now b (which said it holds `same` only) differs from a, and c (which holds what a holds since the exchange) does not.
    await a.exchanges.syncRandomPeer()
    expect(a.dials).toEqual([c.id, b.id])
    await net.settle()
    expect(net.converged()).toBe(true)
  })

  it(`when every peer agrees, exchanges only every ${SYNC_IDLE_EVERY}th tick`, async () => {
    net = new ExchangeNetwork({ n: 3, items: () => ({ same: 10 }) })
    const [a] = net.nodes
    net.publishDigests()
    for (let i = 0; i < 2 * SYNC_IDLE_EVERY; i++) await a.exchanges.syncRandomPeer()
    expect(a.dials).toHaveLength(2)
    expect(a.synced.every(r => r.wasInSync)).toBe(true)
  })

  it('drops a queued exchange with a peer that said on this connection that it holds the same, not one said before it', async () => {
    net = new ExchangeNetwork({ n: 2, items: () => ({ same: 10 }) })
    const [a, b] = net.nodes
    net.publishDigests()
    a.exchanges.want(b.id)
    expect(a.exchanges.backlog).toBe(0)
    expect(a.dials).toEqual([])
    // A new connection (its hash was heard on the previous one): the link's exchange runs.
    await sleep(2)
    net.cut(a.id, b.id)
    net.link(a.id, b.id)
    await net.settle()
    expect(a.dials).toEqual([b.id])
  })
})
