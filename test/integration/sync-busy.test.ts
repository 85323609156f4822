/**
 * One anti-entropy exchange at a time per controller (real controllers,
 * real TCP libp2p on loopback): a controller already in an exchange answers
 * BUSY instead of computing a second delta against a state vector that is
 * about to go stale, and the exchange it refused still happens once it is
 * free. The periodic sync is set to a minute so that only the retry can
 * make the second exchange happen.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('sync-busy') })
afterEach(async () => { await bed.cleanup() })

/** No periodic exchange within a test, and no owner judged gone while it runs (the preset's is 1.2 s). */
const slow = { syncIntervalMs: 60_000, heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }

async function startMesh (n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: 'c0', ...slow })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `c${i}`, ...slow, bootstrap: [cs[0].p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => cs.every(o => o === c || c.p2p.connectedPeers().includes(o.p2p.peerId))), 'a full mesh', 15_000)
  // The exchanges each new link starts are over before a test takes its own.
  await eventually(() => cs.every(c => !c.p2p.busy), 'no exchange in progress', 5_000, 5)
  await new Promise(resolve => setTimeout(resolve, 100))
  await eventually(() => cs.every(c => !c.p2p.busy), 'no exchange in progress', 5_000, 5)
  return cs
}

/** Peer ids `c` completed an exchange with (either side), from now on. */
function exchanges (c: Controller): Set<string> {
  const seen = new Set<string>()
  c.p2p.on('sync', r => { seen.add(r.peerId) })
  return seen
}

describe('sync exchanges', () => {
  it('a controller in an exchange answers BUSY to a second one, and takes it once free', async () => {
    const [c0, c1, c2] = await startMesh(3)
    const atC1 = exchanges(c1)
    // c1 holds its exchange with c0 open for a second (its fault hook delays every exchange).
    faultsOf(c1).set({ delayMs: 1_000 })
    const first = c0.p2p.syncWith(c1.p2p.peerId)
    await eventually(() => c1.p2p.busy, 'c1 to be in the exchange with c0', 5_000, 5)

    expect(await c2.p2p.syncWith(c1.p2p.peerId), 'c1 refuses a second exchange while in one').toBeNull()
    expect(atC1.has(c2.p2p.peerId)).toBe(false)

    expect(await first, 'the first exchange completes').not.toBeNull()
    faultsOf(c1).set({ delayMs: 0 })
    const again = await c2.p2p.syncWith(c1.p2p.peerId)
    expect(again, 'a free c1 takes the exchange').not.toBeNull()
    expect(again!.peerController).toBe('c1')
    await eventually(() => atC1.has(c2.p2p.peerId), 'c1 to record the exchange with c2', 5_000, 5)
  })

  it('a link that comes up while one side is busy still gets its exchange', async () => {
    const [c0, c1, c2] = await startMesh(3)
    // Whichever of the two has the smaller peer id starts the exchange when their link comes up.
    await faultsOf(c1).block([c2.p2p.peerId])
    await faultsOf(c2).block([c1.p2p.peerId])
    await eventually(() => !c1.p2p.connectedPeers().includes(c2.p2p.peerId), 'c1 and c2 to be apart', 5_000)
    const atC1 = exchanges(c1)
    const atC2 = exchanges(c2)
    // Something only c2 holds (its gossip lost at c0, the only peer it reaches): controllers that
    // already agree skip the exchange, so this is what makes one necessary.
    faultsOf(c0).set({ lossRate: 1 })
    c2.core.registry.register({ worker_id: 'only-at-c2', worker_url: 'https://127.0.0.1:7000/', capabilities: [capability('cap-z') as never] })
    await new Promise(resolve => setTimeout(resolve, 200))
    faultsOf(c0).set({ lossRate: 0 })
    expect(c0.core.registry.get('only-at-c2')).toBeUndefined()
    expect(c1.core.registry.get('only-at-c2')).toBeUndefined()

    faultsOf(c1).set({ delayMs: 800 })
    const first = c0.p2p.syncWith(c1.p2p.peerId)
    await eventually(() => c1.p2p.busy, 'c1 to be in the exchange with c0', 5_000, 5)
    // The link comes back while c1 is busy: whichever side starts the exchange must wait for c1.
    faultsOf(c1).unblock()
    faultsOf(c2).unblock()
    await eventually(() => c1.p2p.connectedPeers().includes(c2.p2p.peerId), 'c1 and c2 to reconnect', 5_000, 10)
    expect(await first).not.toBeNull()
    await eventually(() => atC1.has(c2.p2p.peerId) && atC2.has(c1.p2p.peerId), 'the exchange between c1 and c2 after the reconnect', 8_000, 20)
    expect(c1.core.registry.get('only-at-c2')?.owner).toBe('c2')
  })
})
