/**
 * After a partition heals, a controller hears the other side again (an
 * anti-entropy exchange, a relayed message) before that side's owners say
 * which of their workers are alive (their digests). On a network that drops
 * packets that gap reached seconds, and a worker that died during the
 * partition was routed to as `pending` in it. An owner this controller had
 * judged unreachable stays unroutable until its word arrives; a controller
 * that never heard an owner since it started (restored from its data dir)
 * still routes its workers as a last resort (restart-recovery.test.ts).
 *
 * Real controllers over real libp2p and HTTPS; the partition is the
 * connection gater (faults.block), and gossip loss at `a` holds back `c`'s
 * digests after the heal while anti-entropy goes through, so the gap is
 * held open for as long as the test looks at it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, connected, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let beat: NodeJS.Timeout | null = null

beforeEach(async () => { bed = await testBed('heal-unconfirmed') })
afterEach(async () => {
  if (beat != null) clearInterval(beat)
  beat = null
  await bed.cleanup()
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const route = async (c: Controller, cap: string) => await post(c.url, '/route', { verb: 'invoke', capability: cap })

/** Resolves after the next anti-entropy exchange between `x` and the controller behind `peerId` ends. */
async function nextSync (x: Controller, peerId: string): Promise<void> {
  await new Promise<void>(resolve => {
    const on = (r: { peerId: string }): void => {
      if (r.peerId !== peerId) return
      x.p2p.off('sync', on)
      resolve()
    }
    x.p2p.on('sync', on)
  })
}

describe('a healed partition', () => {
  it('does not route the workers of an owner judged unreachable until its digest confirms them', async () => {
    const a = await bed.start({ id: 'a' })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    // c keeps a silent worker listed (unhealthy) for a minute: its entry is still in c's segment when
    // the partition heals, as a worker that died a few seconds before a heal is.
    const c = await bed.start({ id: 'c', bootstrap: [a.p2p.multiaddrs[0]], staleAfterMs: 60_000 })
    const cs = [a, b, c]
    for (const x of cs) for (const y of cs) if (x !== y) await connected(x, y, true, `${x.config.id} and ${y.config.id} to connect`)

    for (const id of ['w-dead', 'w-live']) {
      const res = await post(c.url, '/register', { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] })
      expect(res.body).toMatchObject({ status: 'registered', controller_id: 'c' })
    }
    let beating = ['w-dead', 'w-live']
    beat = setInterval(() => { for (const id of beating) post(c.url, '/heartbeat', { worker_id: id }).catch(() => {}) }, 150)
    await eventually(async () => (await route(a, 'cap-w-dead')).body?.worker_id === 'w-dead' && (await route(a, 'cap-w-live')).body?.worker_id === 'w-live',
      'a to route both of c\'s workers', 15_000, 100)

    // c is cut off from a and b; meanwhile w-dead dies.
    await faultsOf(a).block([c.p2p.peerId])
    await faultsOf(b).block([c.p2p.peerId])
    await faultsOf(c).block([a.p2p.peerId, b.p2p.peerId])
    await connected(a, c, false, 'a and c to be cut off')
    beating = ['w-live']
    await eventually(() => c.core.stateCounts().unhealthy === 1, 'c to see w-dead unhealthy', 15_000)
    await eventually(() => ['silent', 'gone'].includes(a.core.membership.get('c')?.status ?? ''), 'a to judge c unreachable', 15_000)

    // The heal between a and c, with every gossip message to a lost: a hears c only by anti-entropy.
    faultsOf(a).set({ lossRate: 1 })
    const synced = nextSync(a, c.p2p.peerId)
    faultsOf(a).unblock([c.p2p.peerId])
    faultsOf(c).unblock([a.p2p.peerId])
    await synced
    await eventually(() => a.core.membership.get('c')?.status === 'alive', 'a to hear c again', 15_000)
    // a holds c's entries again (kept, or brought back by the exchange), w-dead among them ...
    expect(a.core.registry.get('w-dead')?.owner).toBe('c')
    expect(a.core.membership.get('c')?.current).toBe(false)
    // ... but c has not said which of them are alive: neither is routed, not even as a last resort.
    for (const cap of ['cap-w-dead', 'cap-w-live']) {
      const res = await route(a, cap)
      expect(res.body).toMatchObject({ error: 'no_worker_available' })
    }
    // Still so after another exchange: nothing but c's word changes it.
    await nextSync(a, c.p2p.peerId)
    expect((await route(a, 'cap-w-dead')).body).toMatchObject({ error: 'no_worker_available' })

    // c's digest gets through: w-live is routed again, w-dead never.
    faultsOf(a).set({ lossRate: 0 })
    await eventually(async () => (await route(a, 'cap-w-live')).body?.worker_id === 'w-live', 'a to route w-live once c\'s digest arrives', 15_000, 100)
    expect(a.core.membership.get('c')?.current).toBe(true)
    expect((await route(a, 'cap-w-dead')).body).toMatchObject({ error: 'no_worker_available' })
  }, 90_000)
})
