/**
 * Compaction under fire, with real controllers over real TCP libp2p: one
 * controller rewrites its own segment into a new generation again and again
 * (`registry.compact()`) while the others register, deregister, take over
 * and tombstone workers concurrently, and while a fourth controller is
 * partitioned away (and compacts too, holding tombstones for other owners'
 * workers). After the heal every controller holds the same live set — the
 * one the acknowledged operations say, nothing lost, nothing resurrected —
 * and each encoded registry stays within 2x a fresh encoding of its live
 * entries.
 *
 * Liveness is out of the way here (unhealthy after 60 s): only registry
 * writes change the registry.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
const timers: NodeJS.Timeout[] = []

beforeEach(async () => { bed = await testBed('compaction') })
afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t)
  await bed.cleanup()
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)

function workerBody (id: string): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
}

const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100 }

/** What the acknowledged operations say: worker id → its owner, or null once deregistered. */
const expected = new Map<string, string | null>()

async function register (c: Controller, id: string): Promise<void> {
  const res = await post(c.url, '/register', workerBody(id))
  expect(res.status).toBe(200)
  expect(res.body).toMatchObject({ status: 'registered', worker_id: id, controller_id: c.config.id })
  expected.set(id, c.config.id)
}

async function deregister (c: Controller, id: string): Promise<void> {
  const res = await post(c.url, '/deregister', { worker_id: id })
  expect(res.status).toBe(200)
  expect(res.body, `${id} is known at ${c.config.id} when it deregisters it`).toMatchObject({ status: 'deregistered', known: true })
  expected.set(id, null)
}

/**
 * Churn at `c` until at least `minOps` operations are acknowledged: `lanes`
 * sequential loops, each over its own ids (`<prefix>-<n>`, n cycling through
 * `ids`), registering an id and, two times out of three, deregistering it
 * again — every write an overwrite or a delete in `c`'s own segment. Returns
 * the number of acknowledged operations.
 */
async function churn (c: Controller, prefix: string, minOps: number, ids = 60, lanes = 3): Promise<number> {
  let ops = 0
  await Promise.all(Array.from({ length: lanes }, async (_v, lane) => {
    for (let round = 0; ops < minOps; round++) {
      for (let n = lane; n < ids && ops < minOps; n += lanes) {
        const id = `${prefix}-${n}`
        await register(c, id)
        ops++
        if ((n + round) % 3 !== 0) {
          await deregister(c, id)
          ops++
        }
      }
    }
  }))
  return ops
}

/** The size of a fresh encoding of `c`'s live entries: one new segment per owner, nothing else. */
function freshEncodingBytes (c: Controller): number {
  const doc = new Y.Doc()
  const byOwner = new Map<string, Array<Record<string, unknown>>>()
  for (const r of c.core.registry.workers()) {
    let list = byOwner.get(r.owner)
    if (list == null) byOwner.set(r.owner, list = [])
    list.push(r as unknown as Record<string, unknown>)
  }
  doc.transact(() => {
    for (const [owner, recs] of byOwner) {
      const seg = new Y.Map<unknown>()
      doc.getMap('segments').set(`${owner}/000000000.00000000`, seg)
      for (const r of recs) seg.set(r.worker_id as string, r)
    }
  })
  return Y.encodeStateAsUpdate(doc).length
}

describe('compaction', () => {
  it('while the others write and one controller is partitioned loses nothing, resurrects nothing, and keeps every registry bounded', async () => {
    expected.clear()
    const k0 = await bed.start({ id: 'k0', ...calm })
    const rest: Controller[] = []
    for (const id of ['k1', 'k2', 'k3']) rest.push(await bed.start({ id, bootstrap: [k0.p2p.multiaddrs[0]], ...calm }))
    const [k1, k2, k3] = rest
    const all = [k0, k1, k2, k3]
    await eventually(() => all.every(c => all.every(o => o === c || c.p2p.connectedPeers().includes(o.p2p.peerId))), 'a full mesh', 15_000)

    // Twenty workers per controller, known everywhere before the cut.
    await Promise.all(all.flatMap(c => Array.from({ length: 20 }, async (_v, i) => { await register(c, `${c.config.id}-base-${i}`) })))
    await eventually(() => all.every(c => c.core.registry.size === 80 && c.core.registryHash === k0.core.registryHash), 'eighty workers everywhere')

    // k3 is cut off from the others (both directions).
    const main = [k0, k1, k2]
    await Promise.all([
      ...main.map(async c => { await faultsOf(c).block([k3.p2p.peerId]) }),
      faultsOf(k3).block(main.map(c => c.p2p.peerId))
    ])
    await eventually(() => main.every(c => !c.p2p.connectedPeers().includes(k3.p2p.peerId)) && k3.p2p.connectedPeers().length === 0, 'k3 cut off')

    // k0 compacts every 20 ms for the whole write phase; k3 compacts every 100 ms while cut off.
    const k0Before = k0.core.registry.stats().compactions
    const k3Before = k3.core.registry.stats().compactions
    timers.push(setInterval(() => { k0.core.registry.compact() }, 20))
    timers.push(setInterval(() => { k3.core.registry.compact() }, 100))

    const [k0Ops, k1Ops, k2Ops, k3Ops] = await Promise.all([
      churn(k0, 'k0-c', 250),
      churn(k1, 'k1-c', 250),
      churn(k2, 'k2-c', 250),
      churn(k3, 'k3-c', 250),
      (async () => {
        // Meanwhile, on the connected side, other owners act on k0's workers while k0 compacts:
        // k1 deregisters five of them (a tombstone in k1's segment), k2 takes five over (they
        // re-attach there with a higher incarnation), one at a time.
        for (let i = 0; i < 5; i++) {
          await deregister(k1, `k0-base-${i}`)
          await register(k2, `k0-base-${10 + i}`)
          await new Promise(resolve => setTimeout(resolve, 150))
        }
      })(),
      (async () => {
        // Across the cut: k1 deregisters workers of k3, and k3 deregisters workers of k1. Each
        // side only holds a tombstone for the other's entry, through its own compactions.
        for (let i = 0; i < 3; i++) {
          await deregister(k1, `k3-base-${i}`)
          await deregister(k3, `k1-base-${i}`)
          await new Promise(resolve => setTimeout(resolve, 300))
        }
      })()
    ])
    for (const t of timers.splice(0)) clearInterval(t)
    // The write phase really was concurrent with many compactions, on both sides of the cut.
    expect(Math.min(k0Ops, k1Ops, k2Ops, k3Ops)).toBeGreaterThanOrEqual(250)
    expect(k0.core.registry.stats().compactions - k0Before).toBeGreaterThan(20)
    expect(k3.core.registry.stats().compactions - k3Before).toBeGreaterThan(5)
    // The cut was real: each side removed the other's worker only on its own side so far.
    expect(k3.core.registry.get('k3-base-0')).toBeDefined()
    expect(k3.core.registry.get('k1-base-0')).toBeUndefined()
    expect(k0.core.registry.get('k1-base-0')).toBeDefined()
    expect(k0.core.registry.get('k3-base-0')).toBeUndefined()

    for (const c of all) faultsOf(c).unblock()
    const live = [...expected].filter(([, owner]) => owner != null).map(([id]) => id).sort()
    const gone = [...expected].filter(([, owner]) => owner == null).map(([id]) => id)
    expect(live.length).toBeGreaterThan(80)
    await eventually(() => all.every(c => c.core.registryHash === k0.core.registryHash && c.core.registry.size === live.length),
      'one registry hash on all four controllers after the heal', 15_000)

    for (const c of all) {
      // Nothing lost: every acknowledged registration not deregistered since is there, with its latest owner.
      const missing = live.filter(id => c.core.registry.get(id)?.owner !== expected.get(id))
      expect(missing, `live workers missing or with the wrong owner at ${c.config.id}`).toEqual([])
      // Nothing resurrected.
      const ghosts = gone.filter(id => c.core.registry.get(id) != null)
      expect(ghosts, `deregistered workers still present at ${c.config.id}`).toEqual([])
      // Routable from every controller (a healthy owner reports them; no heartbeats needed within 60 s).
      for (const id of ['k0-base-12', 'k1-base-7', 'k3-base-9', live.find(x => x.startsWith('k0-c-'))!]) {
        expect(c.core.route({ verb: 'invoke', capability: `cap-${id}` }).worker_id).toBe(id)
      }
      // Bounded: within 2x a fresh encoding of the live entries.
      const bytes = c.core.registry.encodeState().length
      const fresh = freshEncodingBytes(c)
      expect(bytes, `encoded registry of ${c.config.id} (${bytes} B) vs a fresh encoding of its ${live.length} live entries (${fresh} B)`).toBeLessThanOrEqual(2 * fresh)
    }
  }, 40_000)
})
