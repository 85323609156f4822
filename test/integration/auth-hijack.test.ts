/**
 * A worker hijack across a mesh of three controllers: worker identity A
 * (the certificate `worker/w1`) registers w1 at controller a; identity B, a
 * worker token with `sub: impostor` and `worker_ids: ["w1"]` (it covers the
 * id, but it is another identity), tries to register w1 with its own URL,
 * heartbeat it, drain it and deregister it at every controller. Each is
 * refused with 403 worker_owned_by_other — the entry records who
 * registered it, and every controller holds the entry — and routing to w1's
 * capability still gives A's URL everywhere, the registries unchanged. A
 * itself may move w1 to another controller, and an operator may remove it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import type { HttpsClient } from '../../src/utils/https-client.ts'
import { authFailures, callers, refused, registration, registryState, signingKey, signToken, SLOW_LIVENESS, spiffe, writeFile, type Callers } from '../helpers/auth.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

const A_URL = 'https://10.1.0.1:7001/a'
const B_URL = 'https://10.66.6.6:7666/b'
const ID_A = spiffe('worker', 'w1')

let bed: TestBed
let pool: Callers
let a: Controller
let b: Controller
let c: Controller
let mesh: Controller[]
let owner: HttpsClient
let impostor: HttpsClient

beforeAll(async () => {
  bed = await testBed('auth-hijack')
  pool = callers(bed.ca)
  const key = await signingKey('ES256')
  const tokenKey = [writeFile(bed.root, 'token-key.pem', key.publicPem)]
  a = await bed.start({ id: 'a', ...SLOW_LIVENESS, tokenKey })
  b = await bed.start({ id: 'b', ...SLOW_LIVENESS, tokenKey, bootstrap: [a.p2p.multiaddrs[0]] })
  c = await bed.start({ id: 'c', ...SLOW_LIVENESS, tokenKey, bootstrap: [a.p2p.multiaddrs[0]] })
  mesh = [a, b, c]
  await eventually(() => mesh.every(x => mesh.every(y => x === y || x.p2p.connectedPeers().includes(y.p2p.peerId))), 'a full mesh of a, b, c', 15_000)
  owner = pool.cert(await bed.identity('worker', 'w1'))
  impostor = pool.token(await signToken(key, { sub: 'impostor', role: 'worker', worker_ids: ['w1'] }))
})
afterAll(async () => {
  await pool?.close()
  await bed?.cleanup()
})

const routeOcr = async (x: Controller): Promise<{ status: number, url?: string, id?: string }> => {
  const res = await bed.client.json('POST', `${x.url}/route`, { verb: 'invoke', capability: 'ocr' })
  return { status: res.status, url: res.body.worker_url, id: res.body.worker_id }
}

/** w1 as every controller holds it: bound to A, at A's URL, with the registry hashes all equal. */
async function everywhereOwnedByA (what: string): Promise<void> {
  await eventually(() => {
    const recs = mesh.map(x => x.core.registry.get('w1'))
    return recs.every(r => r?.identity === ID_A && r.worker_url === A_URL) && new Set(mesh.map(x => x.core.registryHash)).size === 1
  }, what)
}

describe('a worker id registered by one identity, across a mesh of three controllers (one story, in order)', () => {
  it('refuses another identity covering the id everything, at every controller; routes still go to A', async () => {
    const reg = await owner.json('POST', `${a.url}/register`, registration('w1', { url: A_URL, capabilities: [capability('ocr')] }))
    expect(reg.status).toBe(200)
    expect(reg.body).toMatchObject({ status: 'registered', controller_id: 'a' })
    await everywhereOwnedByA('w1, bound to A, at every controller')
    // Healthy everywhere (b and c route it on a's digest).
    await eventually(async () => (await Promise.all(mesh.map(routeOcr))).every(r => r.status === 200), 'w1 routable at a, b and c')
    const before = mesh.map(registryState)
    const failuresBefore = await Promise.all(mesh.map(async x => await authFailures(bed.client, x.url, { reason: 'worker_owned_by_other' })))

    for (const x of mesh) {
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/register`, registration('w1', { url: B_URL, capabilities: [capability('ocr')] })))
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/heartbeat`, { worker_id: 'w1' }))
      // With an incarnation far ahead too: it would win any ordering of attachments if it were let through.
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/heartbeat`, { worker_id: 'w1', incarnation: 1_000_000 }))
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/drain`, { worker_id: 'w1' }))
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/deregister`, { worker_id: 'w1' }))
    }
    // Each controller counted its five refusals.
    for (const [i, x] of mesh.entries()) expect(await authFailures(bed.client, x.url, { reason: 'worker_owned_by_other' })).toBe(failuresBefore[i] + 5)

    // Nothing went out to the others later either: give the mesh a few anti-entropy rounds, then look again.
    await new Promise(resolve => setTimeout(resolve, 2 * b.config.syncIntervalMs))
    expect(mesh.map(registryState)).toEqual(before)
    await everywhereOwnedByA('w1 still bound to A everywhere')
    for (const x of mesh) {
      expect(await routeOcr(x)).toEqual({ status: 200, url: A_URL, id: 'w1' })
      // Not drained, owned by a.
      expect(x.core.registry.get('w1')?.owner).toBe('a')
    }
    expect(a.core.liveness.get('w1')?.state).toBe('healthy')
  })

  it('an operator registering w1 again leaves it bound to A: the impostor is still refused', async () => {
    const res = await bed.client.json('POST', `${b.url}/register`, registration('w1', { url: A_URL, capabilities: [capability('ocr')] }))
    expect(res.status).toBe(200)
    expect(res.body.controller_id).toBe('b')
    await eventually(() => mesh.every(x => x.core.registry.get('w1')?.owner === 'b' && x.core.registry.get('w1')?.identity === ID_A), 'w1 attached to b, still bound to A, everywhere')
    for (const x of mesh) {
      await refused(mesh, 'worker_owned_by_other', async () => await impostor.json('POST', `${x.url}/heartbeat`, { worker_id: 'w1' }))
    }
  })

  it('A itself may move w1 to another controller; an operator may remove it everywhere', async () => {
    const hb = await owner.json('POST', `${c.url}/heartbeat`, { worker_id: 'w1' })
    expect(hb.status).toBe(200)
    expect(hb.body.status).toBe('acknowledged')
    await eventually(() => mesh.every(x => x.core.registry.get('w1')?.owner === 'c' && x.core.registry.get('w1')?.identity === ID_A), 'w1 moved to c, still bound to A')
    await everywhereOwnedByA('w1 at A\'s URL after the move')

    const gone = await bed.client.json('POST', `${a.url}/deregister`, { worker_id: 'w1' })
    expect(gone.status).toBe(200)
    expect(gone.body).toMatchObject({ status: 'deregistered', known: true })
    await eventually(() => mesh.every(x => x.core.registry.get('w1') == null), 'w1 removed everywhere')
    for (const x of mesh) expect((await routeOcr(x)).status).toBe(404)
  })
})
