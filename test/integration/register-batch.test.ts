/**
 * POST /register/batch over real HTTPS, with real identities, on a mesh of
 * two: who may register which ids (an operator any, a worker identity only
 * the ids it covers, item by item exactly as /register decides), a
 * malformed batch refused whole with its bad items named and nothing
 * written, the limits, and a batch reaching the other controller (which
 * checks the owner's seal before it routes to any of it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_REGISTER_BATCH } from '../../src/constants.ts'
import type { Controller } from '../../src/controller/index.ts'
import { AUTH_REASONS } from '../../src/errors.ts'
import { callers, refused, registration, registryState, signingKey, signToken, SLOW_LIVENESS, spiffe, writeFile, type Callers } from '../helpers/auth.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let a: Controller
let b: Controller
let call: Callers
let hostToken: string

beforeAll(async () => {
  bed = await testBed('register-batch')
  call = callers(bed.ca)
  const key = await signingKey('EdDSA')
  const tokenKey = [writeFile(bed.root, 'ed.pem', key.publicPem)]
  a = await bed.start({ id: 'a', ...SLOW_LIVENESS, tokenKey })
  b = await bed.start({ id: 'b', ...SLOW_LIVENESS, tokenKey, bootstrap: [a.p2p.multiaddrs[0]] })
  // One identity for the workers of a host: a worker token covering three ids.
  hostToken = await signToken(key, { sub: 'host-1', worker_ids: ['h1', 'h2', 'h3'] })
}, 60_000)
afterAll(async () => {
  await call?.close()
  await bed?.cleanup()
})

const batch = (ids: string[]): { workers: Array<Record<string, unknown>> } => ({ workers: ids.map(id => registration(id)) })
/** Both controllers hold the same registry (earlier tests' writes have reached b). */
const settled = async (): Promise<void> => { await eventually(() => registryState(a).hash === registryState(b).hash, 'a and b agree', 20_000) }
const ids = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

describe('POST /register/batch', () => {
  it('an operator registers 200 workers in one request: one result each, in order; all routable at the other controller', async () => {
    const want = ids(200, 'op-')
    const res = await bed.client.json('POST', `${a.url}/register/batch`, batch(want))
    expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBe(200)
    expect(res.body.registered).toBe(200)
    expect(res.body.refused).toBe(0)
    expect(res.body.results.map((r: { worker_id: string }) => r.worker_id)).toEqual(want)
    for (const r of res.body.results) expect(r).toEqual({ status: 'registered', worker_id: r.worker_id, incarnation: 1, controller_id: 'a' })
    for (const id of want) expect(a.core.registry.get(id)?.owner).toBe('a')
    // b applies a's segment only with a valid seal by a: every worker there means the batch was sealed.
    await eventually(() => want.every(id => b.core.registry.get(id) != null), 'the batch at b', 20_000)
    const routed = await call.cert(await bed.identity('client', 'c1')).json('POST', `${b.url}/route`, { verb: 'invoke', capability: 'cap-op-199' })
    expect(routed.status).toBe(200)
    expect(routed.body.worker_id).toBe('op-199')
  })

  it('a worker identity covering every id registers them all, bound to it: another identity cannot take one over', async () => {
    const host = call.token(hostToken)
    const res = await host.json('POST', `${a.url}/register/batch`, batch(['h1', 'h2', 'h3']))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.results.map((r: { status: string }) => r.status)).toEqual(['registered', 'registered', 'registered'])
    for (const id of ['h1', 'h2', 'h3']) expect(a.core.registry.get(id)?.identity).toBe(spiffe('worker', 'host-1'))
    const other = call.cert(await bed.identity('worker', 'h2'))
    const hijack = await other.json('POST', `${b.url}/register/batch`, batch(['h2']))
    expect(hijack.status).toBe(200)
    expect(hijack.body).toMatchObject({ registered: 0, refused: 1 })
    expect(hijack.body.results[0]).toMatchObject({ status: 'refused', worker_id: 'h2', http_status: 403, reason: 'worker_owned_by_other', code: AUTH_REASONS.worker_owned_by_other })
    expect(b.core.registry.get('h2')?.owner).not.toBe('b')
  })

  it('a worker identity that does not cover some ids: those are refused, each with its reason; the others registered', async () => {
    const w1 = call.cert(await bed.identity('worker', 'w1'))
    const before = a.core.registry.size
    const res = await w1.json('POST', `${a.url}/register/batch`, batch(['w2', 'w1', 'w3']))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body).toMatchObject({ registered: 1, refused: 2 })
    expect(res.body.results.map((r: { worker_id: string, status: string }) => [r.worker_id, r.status])).toEqual([['w2', 'refused'], ['w1', 'registered'], ['w3', 'refused']])
    // Each refusal is what /register answers for that worker.
    const single = await w1.json('POST', `${a.url}/register`, registration('w2'))
    expect(single.status).toBe(403)
    for (const r of [res.body.results[0], res.body.results[2]]) {
      expect(r).toMatchObject({ http_status: 403, error: single.body.error, reason: 'worker_not_covered', code: AUTH_REASONS.worker_not_covered })
      expect(r.message).toContain(r.worker_id)
    }
    expect(a.core.registry.size).toBe(before + 1)
    expect(a.core.registry.get('w2')).toBeUndefined()
    expect(a.core.registry.get('w3')).toBeUndefined()
    // A capability naming another identity's SPIFFE id is refused as /register refuses it.
    const spoof = await w1.json('POST', `${a.url}/register/batch`, { workers: [registration('w1', { capabilities: [capability('c', { spiffe_id: spiffe('worker', 'w9') })] })] })
    expect(spoof.status).toBe(200)
    expect(spoof.body.results[0]).toMatchObject({ status: 'refused', reason: 'worker_not_covered' })
  })

  it('a client identity may not call it, and a caller without one is asked who it is: nothing changes', async () => {
    await settled()
    const client = call.cert(await bed.identity('client', 'c1'))
    await refused([a, b], 'role_not_allowed', async () => await client.json('POST', `${a.url}/register/batch`, batch(['c-1'])))
    await refused([a, b], 'credentials_missing', async () => await call.cert().json('POST', `${a.url}/register/batch`, batch(['c-1'])))
  })

  it('a malformed batch is refused whole, its bad items named, and nothing is written', async () => {
    await settled()
    const before = [registryState(a), registryState(b)]
    const bad = batch(ids(6, 'bad-'))
    bad.workers[1].worker_url = 'ftp://127.0.0.1/x'
    delete bad.workers[4].capabilities
    const res = await bed.client.json('POST', `${a.url}/register/batch`, bad)
    expect(res.status).toBe(400)
    expect(res.body.code).toBe('CAPMESH_ERR_VALIDATION')
    const fields = res.body.details.map((d: { field: string }) => d.field)
    expect(fields).toEqual(expect.arrayContaining(['body/workers/1/worker_url', 'body/workers/4/capabilities']))
    expect(fields.every((f: string) => f.startsWith('body/workers/1/') || f.startsWith('body/workers/4/'))).toBe(true)

    const twice = await bed.client.json('POST', `${a.url}/register/batch`, batch(['dup-0', 'dup-1', 'dup-0']))
    expect(twice.status).toBe(400)
    expect(twice.body.code).toBe('CAPMESH_ERR_VALIDATION')
    expect(twice.body.details).toEqual([{ field: 'body/workers/2/worker_id', message: 'repeats body/workers/0/worker_id (dup-0)' }])

    const empty = await bed.client.json('POST', `${a.url}/register/batch`, { workers: [] })
    expect(empty.status).toBe(400)
    expect(empty.body.details[0].field).toBe('body/workers')
    const notAList = await bed.client.json('POST', `${a.url}/register/batch`, registration('lone'))
    expect(notAList.status).toBe(400)
    expect([registryState(a), registryState(b)]).toEqual(before)
  })

  it(`limits: more than ${MAX_REGISTER_BATCH} workers, or a body over the body limit, are refused whole`, async () => {
    const before = registryState(a)
    const tooMany = { workers: ids(MAX_REGISTER_BATCH + 1, 'm').map(id => ({ worker_id: id, worker_url: 'https://h/', capabilities: [] })) }
    const many = await bed.client.json('POST', `${a.url}/register/batch`, tooMany)
    expect(many.status).toBe(400)
    expect(many.body.details.map((d: { field: string }) => d.field)).toContain('body/workers')
    // The body limit (256 KiB by default) holds for the whole batch.
    const big = { workers: ids(900, 'big-').map(id => registration(id, { url: `https://127.0.0.1:7000/${id}/${'p'.repeat(100)}` })) }
    const large = await bed.client.json('POST', `${a.url}/register/batch`, big)
    expect(Buffer.byteLength(JSON.stringify(big))).toBeGreaterThan(256 * 1024)
    expect(large.status).toBe(413)
    expect(large.body.code).toBe('CAPMESH_ERR_BODY_TOO_LARGE')
    expect(registryState(a)).toEqual(before)
  })
})
