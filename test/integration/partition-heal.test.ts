/**
 * Partition and heal with real controllers over real TCP libp2p: every node
 * of each group blocks every node of the other (connection gater, both
 * directions); both sides register and deregister while cut off, and a
 * worker fails over from one side to the other. During the partition each
 * side keeps routing its own workers (partition availability) and stops
 * routing the other side's once their owners' digests are missing. After
 * `unblock()` everywhere, every controller holds the same registry (one
 * registry_hash) and routes every live worker, within a bounded wait.
 *
 * Workers heartbeat at their owner over HTTPS for the whole test (the
 * partition is on the p2p links only), and every worker offers its own
 * capability `cap-<id>`, so each `/route` has one exact expected answer.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let pulse: Pulse | null = null

beforeEach(async () => { bed = await testBed('partition') })
afterEach(async () => {
  await pulse?.stop()
  pulse = null
  await bed.cleanup()
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const get = async (base: string, path: string) => await bed.client.json('GET', base + path)

function workerBody (id: string, incarnation?: number): Record<string, unknown> {
  const body: Record<string, unknown> = { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
  if (incarnation != null) body.incarnation = incarnation
  return body
}

/**
 * Heartbeats every worker at its owner every 150 ms (interval 200 ms,
 * unhealthy after 600 ms), each worker on its own so one slow request delays
 * no other. A live worker heartbeating at its owner must never be told
 * `worker_not_registered` unless its owner expired it for silence (a starved
 * event loop on a loaded machine can delay heartbeats past stale-after), so
 * both are recorded; on that answer the worker re-registers, as the
 * platform's workers do.
 */
class Pulse {
  readonly owners = new Map<string, Controller>()
  private readonly busy = new Set<string>()
  private readonly timer: NodeJS.Timeout
  private readonly pending = new Set<Promise<unknown>>()
  readonly notRegistered: string[] = []
  readonly expired = new Set<string>()

  constructor (cs: Controller[]) {
    for (const c of cs) c.core.on('expired', id => { this.expired.add(`${id}@${c.config.id}`) })
    this.timer = setInterval(() => {
      for (const [id, c] of this.owners) {
        if (this.busy.has(id)) continue
        this.busy.add(id)
        const p = (async () => {
          const res = await post(c.url, '/heartbeat', { worker_id: id })
          if (res.body?.error === 'worker_not_registered' && this.owners.get(id) === c) {
            this.notRegistered.push(`${id}@${c.config.id}`)
            await post(c.url, '/register', workerBody(id))
          }
        })().catch(() => {}).finally(() => {
          this.busy.delete(id)
          this.pending.delete(p)
        })
        this.pending.add(p)
      }
    }, 150)
  }

  /** Workers told worker_not_registered by an owner that had not expired them: lost registrations. */
  lost (): string[] {
    return this.notRegistered.filter(x => !this.expired.has(x))
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    await Promise.allSettled([...this.pending])
  }
}

async function startMesh (n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: 'c0' })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `c${i}`, bootstrap: cs.slice(0, 2).map(c => c.p2p.multiaddrs[0]) }))
  await linked(cs, cs)
  return cs
}

/** Waits until every controller of `a` is connected to every (other) controller of `b`. */
async function linked (a: Controller[], b: Controller[]): Promise<void> {
  await eventually(() => a.every(x => {
    const peers = new Set(x.p2p.connectedPeers())
    return b.every(y => y === x || peers.has(y.p2p.peerId))
  }), 'the groups to be fully connected', 15_000)
}

/** Cuts every p2p link between the two groups, from both sides, and waits until no link is left. */
async function partition (a: Controller[], b: Controller[]): Promise<void> {
  await Promise.all([
    ...a.map(async x => { await faultsOf(x).block(b.map(y => y.p2p.peerId)) }),
    ...b.map(async y => { await faultsOf(y).block(a.map(x => x.p2p.peerId)) })
  ])
  await eventually(() => a.every(x => {
    const peers = new Set(x.p2p.connectedPeers())
    return b.every(y => !peers.has(y.p2p.peerId) && !y.p2p.connectedPeers().includes(x.p2p.peerId))
  }), 'no link left between the groups', 5_000)
}

async function register (c: Controller, id: string, incarnation?: number): Promise<number> {
  const res = await post(c.url, '/register', workerBody(id, incarnation))
  expect(res.status).toBe(200)
  expect(res.body).toMatchObject({ status: 'registered', worker_id: id, controller_id: c.config.id })
  pulse!.owners.set(id, c)
  return res.body.incarnation
}

async function deregister (c: Controller, id: string): Promise<void> {
  pulse!.owners.delete(id)
  const res = await post(c.url, '/deregister', { worker_id: id })
  expect(res.body).toMatchObject({ status: 'deregistered', known: true })
}

async function routeOf (c: Controller, id: string): Promise<{ status: number, body: any }> {
  return await post(c.url, '/route', { verb: 'invoke', capability: `cap-${id}` })
}

/** Every controller in `cs` routes each of `ids` to that very worker, attached where `owner` says. */
async function routesAll (cs: Controller[], ids: string[], owner: (id: string) => string): Promise<boolean> {
  const ok = await Promise.all(cs.flatMap(c => ids.map(async id => {
    const r = await routeOf(c, id)
    return r.status === 200 && r.body.worker_id === id && r.body.controller_id === owner(id)
  })))
  return ok.every(Boolean)
}

async function workerIds (c: Controller): Promise<string[]> {
  const res = await get(c.url, '/workers?limit=10000')
  expect(res.status).toBe(200)
  return res.body.workers.map((w: { worker_id: string }) => w.worker_id).sort()
}

async function registryHashes (cs: Controller[]): Promise<string[]> {
  return await Promise.all(cs.map(async c => (await get(c.url, '/mesh')).body.registry_hash as string))
}

/** In-process view of the same checks (cheap to poll): hash, worker set, and a route to each live worker. */
function healedInProcess (cs: Controller[], live: string[], owner: (id: string) => string): boolean {
  const hash = cs[0].core.registryHash
  for (const c of cs) {
    if (c.core.registryHash !== hash) return false
    const ids = [...c.core.registry.workers()].map(w => w.worker_id).sort()
    if (JSON.stringify(ids) !== JSON.stringify(live)) return false
    for (const id of live) {
      try {
        const r = c.core.route({ verb: 'invoke', capability: `cap-${id}` })
        if (r.worker_id !== id || r.controller_id !== owner(id)) return false
      } catch {
        return false
      }
    }
  }
  return true
}

/**
 * Healed: one registry_hash, the same /workers set (= the live workers)
 * everywhere, each routable from everywhere — polled in-process, then
 * confirmed over HTTPS.
 */
async function healed (cs: Controller[]): Promise<void> {
  const live = [...pulse!.owners.keys()].sort()
  const owner = (id: string): string => pulse!.owners.get(id)!.config.id
  const what = `${cs.length} controllers to converge on ${live.length} live workers`
  await eventually(() => healedInProcess(cs, live, owner), what, 12_000, 50)
  await eventually(async () => {
    const hs = await registryHashes(cs)
    if (!hs.every(h => h === hs[0])) return false
    for (const c of cs) if (JSON.stringify(await workerIds(c)) !== JSON.stringify(live)) return false
    return await routesAll(cs, live, owner)
  }, `${what} (over HTTPS)`, 10_000, 200)
}

describe('partition and heal', () => {
  it('both sides stay available and write while cut off; after the heal every controller holds and routes the same live set', async () => {
    const cs = await startMesh(5)
    pulse = new Pulse(cs)
    const [c0, c1, c2, c3, c4] = cs
    // Eight workers per controller, so one silent worker stays under the 15% self-preservation threshold.
    await Promise.all(cs.flatMap((c, i) => Array.from({ length: 8 }, async (_v, j) => { await register(c, `w${i}-${j}`) })))
    await healed(cs)

    // ---- cycle 1: {c0, c1, c2} | {c3, c4}
    const A = [c0, c1, c2]
    const B = [c3, c4]
    await partition(A, B)

    // Writes on both sides while cut off.
    const movedFrom = pulse.owners.get('w3-5')!
    expect(movedFrom).toBe(c3)
    await Promise.all([
      ...['pa-0', 'pa-1'].map(async id => { await register(c0, id) }),
      ...['pa-2', 'pa-3'].map(async id => { await register(c1, id) }),
      ...['pa-4', 'pa-5'].map(async id => { await register(c2, id) }),
      ...['pb-0', 'pb-1'].map(async id => { await register(c3, id) }),
      ...['pb-2', 'pb-3'].map(async id => { await register(c4, id) }),
      deregister(c0, 'w0-0'),
      deregister(c1, 'w1-0'),
      deregister(c3, 'w3-0'),
      // Deregistered on side B, owned on side A: a tombstone on B; its owner on A expires it (no more heartbeats).
      deregister(c4, 'w2-1')
    ])
    // w3-5 fails over from c3 (side B) to c0 (side A): the worker bumps its incarnation and attaches there.
    pulse.owners.delete('w3-5')
    const inc = await register(c0, 'w3-5', 2)
    expect(inc).toBe(2)

    const ownedBy = (side: Controller[]) => [...pulse!.owners].filter(([, c]) => side.includes(c)).map(([id]) => id)
    const owner = (id: string): string => pulse!.owners.get(id)!.config.id
    // Partition availability: each side routes every live worker it owns, from every one of its controllers.
    await eventually(async () => await routesAll(A, ownedBy(A), owner), 'side A to route its own workers', 5_000, 100)
    await eventually(async () => await routesAll(B, ownedBy(B), owner), 'side B to route its own workers', 5_000, 100)
    // The partition is real: nothing written on one side reached the other.
    for (const b of B) for (const id of ['pa-0', 'pa-3', 'pa-5']) expect(b.core.registry.get(id)).toBeUndefined()
    for (const a of A) for (const id of ['pb-0', 'pb-3']) expect(a.core.registry.get(id)).toBeUndefined()
    expect(c3.core.registry.get('w3-5')?.owner).toBe('c3')
    // Once the other side's digests are missing, its workers are no longer routed (503 or, once dropped, 404).
    await eventually(async () => {
      for (const a of A) for (const id of ['w3-2', 'w4-2']) if ((await routeOf(a, id)).status === 200) return false
      for (const b of B) for (const id of ['w0-2', 'w2-2']) if ((await routeOf(b, id)).status === 200) return false
      return true
    }, 'each side to stop routing the other side\'s workers', 5_000, 100)
    // Stay cut off past the stale window: side A (it lost only half of its peers) drops side B's entries.
    await eventually(() => A.every(a => a.core.registry.get('w4-2') == null), 'side A to drop the entries of the silent side', 5_000)
    // Each side still routes its own workers after the other side's entries went.
    expect(await routesAll(A, ownedBy(A), owner)).toBe(true)
    expect(await routesAll(B, ownedBy(B), owner)).toBe(true)

    for (const c of cs) faultsOf(c).unblock()
    await linked(cs, cs)
    await healed(cs)
    // The failover decided by data: the incarnation-2 attachment at c0 won everywhere.
    for (const c of cs) expect(c.core.registry.get('w3-5')).toMatchObject({ owner: 'c0', incarnation: 2 })
    for (const c of cs) for (const id of ['w0-0', 'w1-0', 'w3-0', 'w2-1']) expect(c.core.registry.get(id)).toBeUndefined()

    // ---- cycle 2, a different cut: {c0, c3} | {c1, c2, c4}
    const A2 = [c0, c3]
    const B2 = [c1, c2, c4]
    await partition(A2, B2)
    await Promise.all([
      register(c3, 'pa2-0'),
      register(c1, 'pb2-0'),
      register(c4, 'pb2-1'),
      deregister(c0, 'pa-1'),
      deregister(c2, 'w2-3'),
      deregister(c4, 'pb-2')
    ])
    await eventually(async () => await routesAll(A2, ownedBy(A2), owner), 'side A2 to route its own workers', 5_000, 100)
    await eventually(async () => await routesAll(B2, ownedBy(B2), owner), 'side B2 to route its own workers', 5_000, 100)
    for (const b of B2) expect(b.core.registry.get('pa2-0')).toBeUndefined()
    await eventually(() => B2.every(b => b.core.registry.get('w0-3') == null) || A2.every(a => a.core.registry.get('w1-3') == null),
      'one side to drop the entries of the other', 5_000)
    for (const c of cs) faultsOf(c).unblock()
    await linked(cs, cs)
    await healed(cs)

    // No live worker heartbeating at its owner was ever told it was unknown (unless that owner expired it).
    expect(pulse.lost()).toEqual([])
  }, 40_000)

  it('a controller rejoining after a partition does not delete the entries of controllers that its peers still hear', async () => {
    const cs = await startMesh(5)
    pulse = new Pulse(cs)
    const [c0, c1, c2, c3, c4] = cs
    await Promise.all(cs.flatMap((c, i) => Array.from({ length: 8 }, async (_v, j) => { await register(c, `w${i}-${j}`) })))
    await healed(cs)
    const A = [c0, c1, c2]
    const B = [c3, c4]
    await partition(A, B)
    // Side A drops side B's entries; side B, having lost most of its peers, is in self-preservation
    // and has written side A's controllers off as gone (keeping their entries).
    await eventually(() => A.every(a => a.core.registry.get('w3-1') == null && a.core.registry.get('w4-1') == null) &&
      B.every(b => b.core.selfPreservation.peers && ['c0', 'c1', 'c2'].every(o => b.core.membership.get(o)?.status === 'gone')),
    'side A to drop side B, side B to be in self-preservation with side A gone', 8_000)

    // From here on, side A's controllers hear each other the whole time: none of them may lose a
    // live worker owned by another side-A controller.
    const lostOnA: string[] = []
    for (const a of A) {
      a.core.registry.on('change', changes => {
        for (const ch of changes) {
          if (ch.after == null && ch.before != null && ch.before.owner !== a.config.id && ['c0', 'c1', 'c2'].includes(ch.before.owner) && pulse!.owners.has(ch.workerId)) {
            lostOnA.push(`${ch.workerId}@${a.config.id}`)
          }
        }
      })
    }
    // The heal reaches c3 through c0 first: c3 hears c0 again and leaves self-preservation
    // while c1 and c2 are still silent to it (they are alive, and c0 hears them).
    faultsOf(c0).unblock([c3.p2p.peerId])
    faultsOf(c3).unblock([c0.p2p.peerId])
    await eventually(() => !c3.core.selfPreservation.peers, 'c3 to hear c0 and leave self-preservation', 5_000)
    for (const c of cs) faultsOf(c).unblock()
    await linked(cs, cs)
    await healed(cs)
    expect(lostOnA, 'live workers of side A vanished from side A after c3 rejoined and dropped the segments of c1/c2 it had not heard from yet').toEqual([])
    expect(pulse.lost()).toEqual([])
  }, 40_000)
})
