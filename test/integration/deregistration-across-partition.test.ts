/**
 * A worker fails over across a partition and is deregistered on its new
 * side after that side dropped its old owner's segment (the old owner was
 * gone for the stale window). When the partition heals, the old owner puts
 * its dropped segment back, with the worker's older entry in it. The
 * deregistration must still win: without a tombstone (the new owner no
 * longer knew of the older entry) that entry came back everywhere, and a
 * heartbeat of the worker's old attachment arriving late at the old owner
 * (TCP delivers what was sent into a black-holed link once it heals) made a
 * worker that had left routable again (`churn-under-partition --net netns`
 * broke `no-ghosts` that way).
 *
 * Real controllers over real libp2p and HTTPS; the partition is the
 * connection gater (faults.block).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capability, connected, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let beat: NodeJS.Timeout | null = null

beforeEach(async () => { bed = await testBed('dereg-partition') })
afterEach(async () => {
  if (beat != null) clearInterval(beat)
  beat = null
  await bed.cleanup()
})

const post = async (base: string, path: string, body: unknown) => await bed.client.json('POST', base + path, body)
const route = async (c: Controller, cap: string) => await post(c.url, '/route', { verb: 'invoke', capability: cap })
const body = (id: string, incarnation?: number) => ({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)], ...(incarnation != null ? { incarnation } : {}) })

describe('a deregistration made during a partition', () => {
  it('still wins after the heal over the older entry its old owner puts back', async () => {
    const a = await bed.start({ id: 'a' })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    // c expires its silent workers only after a minute: the worker's old entry is still in c's
    // segment at the heal, as it is when c is in self-preservation.
    const c = await bed.start({ id: 'c', bootstrap: [a.p2p.multiaddrs[0]], staleAfterMs: 60_000 })
    const cs = [a, b, c]
    for (const x of cs) for (const y of cs) if (x !== y) await connected(x, y, true, `${x.config.id} and ${y.config.id} to connect`)

    for (const id of ['w', 'w-other']) expect((await post(c.url, '/register', body(id))).body).toMatchObject({ status: 'registered', controller_id: 'c', incarnation: 1 })
    // Where each worker heartbeats now.
    const at = new Map<string, Controller>([['w', c], ['w-other', c]])
    beat = setInterval(() => { for (const [id, x] of at) post(x.url, '/heartbeat', { worker_id: id }).catch(() => {}) }, 150)
    await eventually(async () => {
      for (const x of cs) for (const id of ['w', 'w-other']) if ((await route(x, `cap-${id}`)).body?.worker_id !== id) return false
      return true
    }, 'every controller to route both workers', 15_000, 100)

    // c is cut off; w fails over to a (one incarnation up).
    await faultsOf(a).block([c.p2p.peerId])
    await faultsOf(b).block([c.p2p.peerId])
    await faultsOf(c).block([a.p2p.peerId, b.p2p.peerId])
    await connected(a, c, false, 'a and c to be cut off')
    at.delete('w')
    expect((await post(a.url, '/register', body('w', 2))).body).toMatchObject({ status: 'registered', controller_id: 'a', incarnation: 2 })
    at.set('w', a)
    // a and b drop c's segment (c is gone for the stale window, and they lost only half of their peers).
    await eventually(() => a.core.registry.get('w-other') == null && b.core.registry.get('w-other') == null, 'a and b to drop c\'s entries', 15_000)
    // w leaves, at a, which no longer knows of c's entry for it.
    at.delete('w')
    expect((await post(a.url, '/deregister', { worker_id: 'w' })).body).toMatchObject({ status: 'deregistered', known: true })

    // The heal: c puts its dropped segment back, w's incarnation-1 entry in it.
    faultsOf(a).unblock()
    faultsOf(b).unblock()
    faultsOf(c).unblock()
    await eventually(async () => {
      const hashes = new Set(cs.map(x => x.core.registryHash))
      if (hashes.size !== 1) return false
      for (const x of cs) if ((await route(x, 'cap-w-other')).body?.worker_id !== 'w-other') return false
      return true
    }, 'the three controllers to agree and route c\'s live worker again', 30_000, 100)
    // The deregistration stands everywhere: c's older entry does not come back.
    for (const x of cs) expect(x.core.registry.get('w'), `w at ${x.config.id}`).toBeUndefined()
    // A heartbeat of w's old attachment arriving at c now (sent into the cut link, delivered late) revives nothing.
    expect((await post(c.url, '/heartbeat', { worker_id: 'w', incarnation: 1 })).body).toMatchObject({ error: 'worker_not_registered' })
    for (const x of cs) expect((await route(x, 'cap-w')).body, `route at ${x.config.id}`).toMatchObject({ error: 'no_worker_available' })
  }, 120_000)
})
