/**
 * Bearer tokens end to end, over real HTTPS with no client certificate:
 * worker tokens signed with EdDSA and ES256 keys made here, verified by a
 * controller given their public keys (`--token-key`, one file each) and by
 * one given a JWKS file (`--jwks`, keys picked by `kid`), register and
 * heartbeat; a worker agent attaches with one. Then every way a token can
 * be wrong, sent over HTTP: each a 401 with its reason, counted, and
 * nothing changed.
 */
import { createHmac } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { RegistrationRejectedError, type AuthReason } from '../../src/errors.ts'
import {
  agentCapability, authFailures, callers, expectRefusal, handmadeToken, rawRequest, refused, registration, registryState, signingKey, signToken, SLOW_LIVENESS, spiffe,
  writeFile, type Callers, type SigningKey
} from '../helpers/auth.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let pool: Callers
/** Verifies with PEM public keys (`--token-key ed.pem --token-key es.pem`). */
let pem: Controller
/** Verifies with a JWKS file (`--jwks`), keys `ed-1` and `es-1`. */
let jwks: Controller
let ed: SigningKey
let es: SigningKey
let edJ: SigningKey
let esJ: SigningKey
/** A key no controller knows. */
let stranger: SigningKey

beforeAll(async () => {
  bed = await testBed('auth-tokens')
  pool = callers(bed.ca)
  ;[ed, es, edJ, esJ, stranger] = await Promise.all([signingKey('EdDSA'), signingKey('ES256'), signingKey('EdDSA', 'ed-1'), signingKey('ES256', 'es-1'), signingKey('EdDSA')])
  const tokenKey = [writeFile(bed.root, 'ed.pem', ed.publicPem), writeFile(bed.root, 'es.pem', es.publicPem)]
  const jwksFile = writeFile(bed.root, 'keys.jwks', { keys: [edJ.jwk, esJ.jwk] })
  ;[pem, jwks] = await Promise.all([
    bed.start({ id: 'pem', ...SLOW_LIVENESS, tokenKey }),
    bed.start({ id: 'jwks', ...SLOW_LIVENESS, jwks: jwksFile })
  ])
})
afterAll(async () => {
  await pool?.close()
  await bed?.cleanup()
})

/** Registers `id` with `token` at `c`, heartbeats it, and checks the entry is bound to the token's identity. */
async function registersAndHeartbeats (c: Controller, token: string, id: string, identity = spiffe('worker', id)): Promise<void> {
  const client = pool.token(token)
  const reg = await client.json('POST', `${c.url}/register`, registration(id))
  expect(reg.status, JSON.stringify(reg.body)).toBe(200)
  expect(reg.body).toMatchObject({ status: 'registered', worker_id: id })
  const hb = await client.json('POST', `${c.url}/heartbeat`, { worker_id: id, load: 3 })
  expect(hb.status).toBe(200)
  expect(hb.body.status).toBe('acknowledged')
  expect(c.core.registry.get(id)?.identity).toBe(identity)
  expect(c.core.liveness.get(id)?.load).toBe(3)
}

describe('worker tokens that verify', () => {
  it('EdDSA and ES256, verified with --token-key PEM files: register and heartbeat', async () => {
    await registersAndHeartbeats(pem, await signToken(ed, { sub: 't-ed' }), 't-ed')
    await registersAndHeartbeats(pem, await signToken(es, { sub: 't-es' }), 't-es')
  })

  it('EdDSA and ES256 through a JWKS file (--jwks), the key picked by kid', async () => {
    await registersAndHeartbeats(jwks, await signToken(edJ, { sub: 'j-ed' }, { kid: 'ed-1' }), 'j-ed')
    await registersAndHeartbeats(jwks, await signToken(esJ, { sub: 'j-es' }, { kid: 'es-1' }), 'j-es')
    // Without a kid, every key of the algorithm is tried.
    await registersAndHeartbeats(jwks, await signToken(edJ, { sub: 'j-nokid' }), 'j-nokid')
  })

  it('worker_ids: the token acts for exactly those ids (not even its sub)', async () => {
    const token = await signToken(ed, { sub: 'pool', worker_ids: ['p1', 'p2'] })
    await registersAndHeartbeats(pem, token, 'p1', spiffe('worker', 'pool'))
    await registersAndHeartbeats(pem, token, 'p2', spiffe('worker', 'pool'))
    for (const id of ['p3', 'pool']) {
      await refused([pem], 'worker_not_covered', async () => await pool.token(token).json('POST', `${pem.url}/register`, registration(id)))
    }
  })

  it('a worker agent attaches with a token, heartbeats, and deregisters on stop', async () => {
    const agent = workerAgent({
      workerId: 'agent-1',
      workerUrl: 'https://127.0.0.1:7100',
      capabilities: [agentCapability('agent-cap')],
      controllers: [jwks.url, pem.url],
      affinity: 'pem',
      tls: { ca: bed.ca },
      token: await signToken(es, { sub: 'agent-1' }),
      heartbeatIntervalMs: 50,
      reprobeIntervalMs: 0
    })
    try {
      await agent.start()
      expect(agent.controller?.url).toBe(pem.url)
      await eventually(() => agent.counters.heartbeats.ok >= 3, 'three heartbeats acknowledged')
      expect(agent.counters.heartbeats.failed).toBe(0)
      expect(pem.core.registry.get('agent-1')?.identity).toBe(spiffe('worker', 'agent-1'))
      expect((await pool.cert(await bed.identity('client', 'c1')).json('POST', `${pem.url}/route`, { verb: 'invoke', capability: 'agent-cap' })).body.worker_id).toBe('agent-1')
    } finally {
      await agent.stop()
    }
    expect(pem.core.registry.get('agent-1')).toBeUndefined()
  })

  it('a worker agent with an expired token is rejected for good, with the controller\'s reason', async () => {
    const before = registryState(pem)
    const agent = workerAgent({
      workerId: 'agent-2',
      workerUrl: 'https://127.0.0.1:7101',
      capabilities: [agentCapability('agent-cap')],
      controllers: [pem.url],
      tls: { ca: bed.ca },
      token: await signToken(ed, { sub: 'agent-2', exp: Math.floor(Date.now() / 1000) - 3600 }),
      heartbeatIntervalMs: 50,
      reprobeIntervalMs: 0,
      retries: 0
    })
    agent.on('error', () => {})
    try {
      const err = await agent.start().then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(RegistrationRejectedError)
      expect((err as RegistrationRejectedError).httpStatus).toBe(401)
      expect((err as RegistrationRejectedError).reason).toMatchObject({ code: 'CAPMESH_ERR_UNAUTHENTICATED', reason: 'token_expired' })
    } finally {
      await agent.stop()
    }
    expect(registryState(pem)).toEqual(before)
  })
})

const now = (): number => Math.floor(Date.now() / 1000)

/** Tokens that must be refused, each for `reason`, at the controller named; all otherwise register `tb`. */
const BAD: Array<{ name: string, at: 'pem' | 'jwks', reason: AuthReason, token: () => Promise<string> }> = [
  { name: 'signed by a key the controller does not know', at: 'pem', reason: 'token_signature', token: async () => await signToken(stranger, { sub: 'tb' }) },
  {
    name: 'claims changed after signing',
    at: 'pem',
    reason: 'token_signature',
    token: async () => {
      const [h, , s] = (await signToken(ed, { sub: 'tb' })).split('.')
      return `${h}.${handmadeToken({}, { sub: 'tb', role: 'operator', exp: now() + 3600 }).split('.')[1]}.${s}`
    }
  },
  { name: 'alg none, no signature (built by hand)', at: 'pem', reason: 'token_algorithm', token: async () => handmadeToken({ alg: 'none', typ: 'JWT' }, { sub: 'tb', role: 'worker', exp: now() + 3600 }) },
  {
    name: 'alg HS256 keyed with the public key (key confusion)',
    at: 'pem',
    reason: 'token_algorithm',
    token: async () => {
      const unsigned = handmadeToken({ alg: 'HS256', typ: 'JWT' }, { sub: 'tb', role: 'worker', exp: now() + 3600 }).slice(0, -1)
      return `${unsigned}.${createHmac('sha256', ed.publicPem).update(unsigned).digest('base64url')}`
    }
  },
  { name: 'a kid no key of the JWKS has', at: 'jwks', reason: 'token_unknown_key', token: async () => await signToken(edJ, { sub: 'tb' }, { kid: 'ed-2' }) },
  { name: 'expired an hour ago', at: 'pem', reason: 'token_expired', token: async () => await signToken(ed, { sub: 'tb', iat: now() - 7200, exp: now() - 3600 }) },
  { name: 'expired an hour ago (JWKS)', at: 'jwks', reason: 'token_expired', token: async () => await signToken(esJ, { sub: 'tb', iat: now() - 7200, exp: now() - 3600 }, { kid: 'es-1' }) },
  { name: 'not valid for another hour (nbf)', at: 'pem', reason: 'token_not_yet_valid', token: async () => await signToken(es, { sub: 'tb', nbf: now() + 3600 }) },
  { name: 'no role', at: 'pem', reason: 'token_claims', token: async () => await signToken(ed, { sub: 'tb', role: undefined }) },
  { name: 'no sub', at: 'pem', reason: 'token_claims', token: async () => await signToken(ed, {}) },
  { name: 'no exp', at: 'pem', reason: 'token_claims', token: async () => await signToken(ed, { sub: 'tb', exp: undefined }) },
  { name: 'an unknown role', at: 'pem', reason: 'token_claims', token: async () => await signToken(ed, { sub: 'tb', role: 'admin' }) },
  { name: 'worker_ids not an array', at: 'pem', reason: 'token_claims', token: async () => await signToken(ed, { sub: 'tb', worker_ids: 'tb' }) },
  { name: 'larger than 8 KiB, though validly signed', at: 'pem', reason: 'token_too_large', token: async () => await signToken(ed, { sub: 'tb', pad: 'x'.repeat(8500) }) },
  { name: 'not a JWT', at: 'pem', reason: 'token_malformed', token: async () => 'not-a-jwt' },
  { name: 'two parts only', at: 'jwks', reason: 'token_malformed', token: async () => (await signToken(edJ, { sub: 'tb' })).split('.').slice(0, 2).join('.') }
]

describe('tokens refused over HTTP (401, nothing changed, counted)', () => {
  it.each(BAD.map(b => [b.name, b] as const))('%s', async (_name, bad) => {
    const c = bad.at === 'pem' ? pem : jwks
    const token = await bad.token()
    const counted = await authFailures(bed.client, c.url, { reason: bad.reason, route: '/register' })
    await refused([pem, jwks], bad.reason, async () => await pool.token(token).json('POST', `${c.url}/register`, registration('tb')))
    expect(c.core.registry.get('tb')).toBeUndefined()
    expect(await authFailures(bed.client, c.url, { reason: bad.reason, route: '/register' })).toBe(counted + 1)
  })

  it('an Authorization header sent twice is refused, even when both tokens verify', async () => {
    const [t1, t2] = await Promise.all([signToken(ed, { sub: 'tb' }), signToken(es, { sub: 'tb' })])
    const before = registryState(pem)
    const res = await rawRequest(`${pem.url}/register`, {
      ca: bed.ca,
      method: 'POST',
      headers: ['content-type', 'application/json', 'authorization', `Bearer ${t1}`, 'Authorization', `Bearer ${t2}`],
      body: JSON.stringify(registration('tb'))
    })
    expectRefusal(res, 'token_malformed')
    expect(registryState(pem)).toEqual(before)
    // The same request with either header alone registers.
    const once = await rawRequest(`${pem.url}/register`, { ca: bed.ca, method: 'POST', headers: ['content-type', 'application/json', 'authorization', `Bearer ${t1}`], body: JSON.stringify(registration('tb')) })
    expect(once.status).toBe(200)
    expect(pem.core.registry.get('tb')?.identity).toBe(spiffe('worker', 'tb'))
    expect((await bed.client.json('POST', `${pem.url}/deregister`, { worker_id: 'tb' })).status).toBe(200)
  })

  it('an Authorization header that is not "Bearer <token>"', async () => {
    for (const value of ['Basic dGI6c2VjcmV0', `Bearer ${await signToken(ed, { sub: 'tb' })} extra`, 'Bearer']) {
      const before = registryState(pem)
      const res = await rawRequest(`${pem.url}/register`, { ca: bed.ca, method: 'POST', headers: ['content-type', 'application/json', 'authorization', value], body: JSON.stringify(registration('tb')) })
      expectRefusal(res, 'token_malformed')
      expect(registryState(pem)).toEqual(before)
    }
  })

  it('the controllers still answer after all that', async () => {
    for (const c of [pem, jwks]) expect((await bed.client.json('GET', `${c.url}/health`)).body.status).toBe('ok')
  })
})
