import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { base64url, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AuthError, ConfigError, type AuthReason } from '../../../src/errors.ts'
import { createTokenVerifier, loadTokenKeys, type TokenVerifier } from '../../../src/identity/index.ts'

const TD = 'capmesh.local'
const NOW = Date.parse('2026-12-01T12:00:00Z')
const SEC = Math.floor(NOW / 1000)
const root = mkdtempSync(join(tmpdir(), 'capmesh-tokens-'))

interface Pair { publicKey: CryptoKey, privateKey: CryptoKey, pem: string }
let ed: Pair
let ed2: Pair
let es: Pair
let verify: TokenVerifier

async function pair (alg: 'EdDSA' | 'ES256'): Promise<Pair> {
  const p = await generateKeyPair(alg, { extractable: true })
  return { ...p, pem: await exportSPKI(p.publicKey) }
}

/** A token signed with `key`; claims default to a valid worker token for w1 at NOW. */
async function sign (key: Pair, claims: JWTPayload = {}, header: Record<string, unknown> = {}, alg: 'EdDSA' | 'ES256' = key === es ? 'ES256' : 'EdDSA'): Promise<string> {
  return await new SignJWT({ sub: 'w1', role: 'worker', exp: SEC + 600, ...claims }).setProtectedHeader({ alg, ...header }).sign(key.privateKey)
}

/** A token assembled by hand (header and claims as given, signature as given). */
function handmade (header: unknown, claims: unknown, signature = ''): string {
  const enc = (v: unknown): string => base64url.encode(typeof v === 'string' ? v : JSON.stringify(v))
  return `${enc(header)}.${enc(claims)}.${signature}`
}

async function reason (p: Promise<unknown>): Promise<AuthReason> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(AuthError)
    expect((err as AuthError).code).toBe('CAPMESH_ERR_UNAUTHENTICATED')
    return (err as AuthError).reason
  }
  throw new Error('expected the token to be refused')
}

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error('expected a ConfigError')
}

function file (name: string, content: unknown): string {
  const path = join(root, name)
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

beforeAll(async () => {
  [ed, ed2, es] = await Promise.all([pair('EdDSA'), pair('EdDSA'), pair('ES256')])
  verify = createTokenVerifier({ trustDomain: TD, keys: [ed.pem, es.pem] })
})
afterAll(() => rmSync(root, { recursive: true, force: true }))

describe('createTokenVerifier: good tokens', () => {
  it('an EdDSA worker token is the identity a worker certificate of that name has', async () => {
    const id = await verify(await sign(ed), NOW)
    expect(id).toEqual({ id: 'spiffe://capmesh.local/worker/w1', role: 'worker', name: 'w1', workerIds: ['w1'], via: 'token' })
    expect(Object.isFrozen(id)).toBe(true)
  })

  it('an ES256 token; each role gets its worker ids', async () => {
    expect(await verify(await sign(es, { sub: 'billing', role: 'client' }), NOW)).toMatchObject({ id: 'spiffe://capmesh.local/client/billing', role: 'client', workerIds: [] })
    expect(await verify(await sign(es, { sub: 'alice', role: 'operator' }), NOW)).toMatchObject({ role: 'operator', workerIds: null })
    expect(await verify(await sign(ed, { sub: 'prom', role: 'metrics' }), NOW)).toMatchObject({ role: 'metrics', workerIds: [] })
    expect(await verify(await sign(ed, { sub: 'pool', worker_ids: ['a', 'b', 'a'] }), NOW)).toMatchObject({ name: 'pool', workerIds: ['a', 'b'] })
  })

  it('accepts exp and nbf within the clock tolerance (30 s by default)', async () => {
    expect((await verify(await sign(ed, { exp: SEC - 20 }), NOW)).name).toBe('w1')
    expect((await verify(await sign(ed, { nbf: SEC + 20 }), NOW)).name).toBe('w1')
    const strict = createTokenVerifier({ trustDomain: TD, keys: [ed.pem], clockToleranceSec: 0 })
    expect(await reason(strict(await sign(ed, { exp: SEC - 20 }), NOW))).toBe('token_expired')
  })

  it('a kid with only PEM keys configured: the PEM keys of the algorithm are tried', async () => {
    expect((await verify(await sign(ed, {}, { kid: 'whatever' }), NOW)).name).toBe('w1')
  })
})

describe('createTokenVerifier: refusals', () => {
  it('token_expired and token_not_yet_valid', async () => {
    expect(await reason(verify(await sign(ed, { exp: SEC - 31 }), NOW))).toBe('token_expired')
    expect(await reason(verify(await sign(ed, { nbf: SEC + 31 }), NOW))).toBe('token_not_yet_valid')
  })

  it('token_algorithm: alg none, HMAC, RSA, a missing alg', async () => {
    const claims = { sub: 'w1', role: 'operator', exp: SEC + 600 }
    expect(await reason(verify(handmade({ alg: 'none', typ: 'JWT' }, claims), NOW))).toBe('token_algorithm')
    expect(await reason(verify(handmade({ alg: 'none' }, claims, 'c2ln'), NOW))).toBe('token_algorithm')
    expect(await reason(verify(handmade({ alg: 'HS256' }, claims, 'c2lnbmF0dXJl'), NOW))).toBe('token_algorithm')
    expect(await reason(verify(handmade({ alg: 'RS256' }, claims, 'c2lnbmF0dXJl'), NOW))).toBe('token_algorithm')
    expect(await reason(verify(handmade({ typ: 'JWT' }, claims, 'c2lnbmF0dXJl'), NOW))).toBe('token_algorithm')
  })

  it('token_signature: another key, a changed payload, a changed header, an empty signature', async () => {
    expect(await reason(verify(await sign(ed2), NOW))).toBe('token_signature')
    const good = await sign(ed)
    const [h, , s] = good.split('.')
    const forged = `${h}.${base64url.encode(JSON.stringify({ sub: 'w1', role: 'operator', exp: SEC + 600 }))}.${s}`
    expect(await reason(verify(forged, NOW))).toBe('token_signature')
    const otherHeader = `${base64url.encode(JSON.stringify({ alg: 'EdDSA', kid: 'x' }))}.${good.split('.')[1]}.${s}`
    expect(await reason(verify(otherHeader, NOW))).toBe('token_signature')
    expect(await reason(verify(`${h}.${good.split('.')[1]}.`, NOW))).toBe('token_signature')
  })

  it('token_unknown_key: no key of the algorithm, an unknown kid in a JWKS', async () => {
    const edOnly = createTokenVerifier({ trustDomain: TD, keys: [ed.pem] })
    expect(await reason(edOnly(await sign(es), NOW))).toBe('token_unknown_key')
    const jwks = file('unknown-kid.json', { keys: [{ ...await exportJWK(ed.publicKey), kid: 'k1' }] })
    const byKid = createTokenVerifier({ trustDomain: TD, keys: undefined, jwksFile: jwks })
    expect((await byKid(await sign(ed, {}, { kid: 'k1' }), NOW)).name).toBe('w1')
    expect(await reason(byKid(await sign(ed, {}, { kid: 'k2' }), NOW))).toBe('token_unknown_key')
    expect(await reason(byKid(await sign(es, {}, { kid: 'k1' }), NOW))).toBe('token_unknown_key')
  })

  it.each<[string, JWTPayload]>([
    ['no sub', { sub: undefined }],
    ['no role', { role: undefined }],
    ['no exp', { exp: undefined }],
    ['sub not a string', { sub: 42 as unknown as string }],
    ['an empty sub', { sub: '' }],
    ['a sub with a slash', { sub: 'a/b' }],
    ['a sub with percent-encoding', { sub: 'w%31' }],
    ['a sub with a space', { sub: 'w 1' }],
    ['a sub over 256 characters', { sub: 'x'.repeat(257) }],
    ['an unknown role', { role: 'admin' }],
    ['role not a string', { role: ['operator'] }],
    ['exp not a number', { exp: 'tomorrow' as unknown as number }],
    ['iat not a number', { iat: 'now' as unknown as number }],
    ['worker_ids not an array', { worker_ids: 'w1' }],
    ['an empty worker_ids', { worker_ids: [] }],
    ['worker_ids with a non-string', { worker_ids: ['w1', 7] }],
    ['worker_ids with an invalid worker id', { worker_ids: ['w1', 'has space'] }],
    ['worker_ids for a client', { role: 'client', worker_ids: ['w1'] }],
    ['worker_ids for an operator', { role: 'operator', worker_ids: ['w1'] }]
  ])('token_claims: %s', async (_, claims) => {
    expect(await reason(verify(await sign(ed, claims), NOW))).toBe('token_claims')
  })

  it('token_too_large: refused before any parsing', async () => {
    expect(await reason(verify('x'.repeat(8193), NOW))).toBe('token_too_large')
    const small = createTokenVerifier({ trustDomain: TD, keys: [ed.pem], maxBytes: 100 })
    const token = await sign(ed, { pad: 'p'.repeat(100) })
    expect(await reason(small(token, NOW))).toBe('token_too_large')
    expect((await verify(token, NOW)).name).toBe('w1')
  })

  it.each([
    ['not a JWT at all', 'hello'],
    ['two parts', 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ3MSJ9'],
    ['four parts', 'a.b.c.d'],
    ['characters outside base64url', 'eyJ=.eyJ.c2ln'],
    ['a header that is not JSON', `${base64url.encode('not json')}.${base64url.encode('{}')}.c2ln`],
    ['a header that is a JSON array', `${base64url.encode('[1]')}.${base64url.encode('{}')}.c2ln`],
    ['a kid that is not a string', handmade({ alg: 'EdDSA', kid: 7 }, {}, 'c2ln')],
    ['the empty string', '']
  ])('token_malformed: %s', async (_, token) => {
    expect(await reason(verify(token, NOW))).toBe('token_malformed')
  })

  it('token_malformed: claims that are not a JSON object, though signed', async () => {
    const { CompactSign } = await import('jose')
    const token = await new CompactSign(new TextEncoder().encode('[1,2]')).setProtectedHeader({ alg: 'EdDSA' }).sign(ed.privateKey)
    expect(await reason(verify(token, NOW))).toBe('token_malformed')
  })

  it('a refusal is a 401 asking for a bearer token, with its reason in the body', async () => {
    try {
      await verify(await sign(ed, { exp: SEC - 100 }), NOW)
      expect.unreachable()
    } catch (err) {
      const e = err as AuthError
      expect(e.name).toBe('AuthError')
      expect(e.status).toBe(401)
      expect(e.headers()).toEqual({ 'www-authenticate': 'Bearer' })
      expect(e.wireBody()).toMatchObject({ error: 'unauthenticated', code: 'CAPMESH_ERR_UNAUTHENTICATED', reason: 'token_expired' })
    }
  })
})

describe('the cache of verified tokens', () => {
  it('answers a token it verified without checking it again, until its exp', async () => {
    const v = createTokenVerifier({ trustDomain: TD, keys: [ed.pem] })
    const token = await sign(ed, { nbf: SEC - 5, exp: SEC + 60 })
    const first = await v(token, NOW)
    // Before its nbf only a fresh check would refuse it: the answer comes from the cache.
    expect(await v(token, NOW - 3_600_000)).toBe(first)
    expect(await v(token, NOW + 60_000 + 29_000)).toBe(first)
    expect(await reason(v(token, NOW + 90_000))).toBe('token_expired')
    // Once expired it is forgotten: checked afresh (and refused, as it would have been).
    expect(await reason(v(token, NOW - 3_600_000))).toBe('token_not_yet_valid')
  })

  it('remembers nothing with cacheSize 0, and at most cacheSize tokens, least recently used out first', async () => {
    const none = createTokenVerifier({ trustDomain: TD, keys: [ed.pem], cacheSize: 0 })
    const t = await sign(ed, { nbf: SEC - 5 })
    await none(t, NOW)
    expect(await reason(none(t, NOW - 3_600_000))).toBe('token_not_yet_valid')

    const two = createTokenVerifier({ trustDomain: TD, keys: [ed.pem], cacheSize: 2 })
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map(async sub => await sign(ed, { sub, nbf: SEC - 5 })))
    await two(a, NOW)
    await two(b, NOW)
    await two(a, NOW) // a is now the most recently used
    await two(c, NOW) // b goes
    expect((await two(a, NOW - 3_600_000)).name).toBe('a')
    expect((await two(c, NOW - 3_600_000)).name).toBe('c')
    expect(await reason(two(b, NOW - 3_600_000))).toBe('token_not_yet_valid')
  })

  it('never remembers a refused token', async () => {
    const v = createTokenVerifier({ trustDomain: TD, keys: [ed.pem] })
    const token = await sign(ed, { nbf: SEC + 100 })
    expect(await reason(v(token, NOW))).toBe('token_not_yet_valid')
    expect((await v(token, NOW + 100_000)).name).toBe('w1')
  })
})

describe('JWKS files', () => {
  it('selects by kid, and tries every matching key of a token without one', async () => {
    const jwks = file('jwks.json', {
      keys: [
        { ...await exportJWK(ed.publicKey), kid: 'a' },
        { ...await exportJWK(ed2.publicKey), kid: 'b', use: 'sig', alg: 'EdDSA' },
        { ...await exportJWK(es.publicKey), kid: 'c' },
        { kty: 'RSA', kid: 'rsa', n: 'AQAB', e: 'AQAB' } // another issuer's key: ignored
      ]
    })
    const v = createTokenVerifier({ trustDomain: TD, jwksFile: jwks })
    expect((await v(await sign(ed2, {}, { kid: 'b' }), NOW)).name).toBe('w1')
    expect((await v(await sign(ed2), NOW)).name).toBe('w1') // two Ed25519 keys match; the second verifies
    expect((await v(await sign(es, { sub: 'c1', role: 'client' }, { kid: 'c' }), NOW)).name).toBe('c1')
    expect(await reason(v(await sign(ed, {}, { kid: 'b' }), NOW))).toBe('token_signature') // kid b, signed by a
    expect(await reason(v(await sign(ed, {}, { kid: 'rsa' }), NOW))).toBe('token_unknown_key')
  })

  it('with PEM keys too: a kid not in the JWKS falls back to the PEM keys', async () => {
    const jwks = file('jwks-a.json', { keys: [{ ...await exportJWK(ed.publicKey), kid: 'a' }] })
    const v = createTokenVerifier({ trustDomain: TD, keys: [es.pem], jwksFile: jwks })
    expect((await v(await sign(es, {}, { kid: 'elsewhere' }), NOW)).name).toBe('w1')
    expect((await v(await sign(ed, {}, { kid: 'a' }), NOW)).name).toBe('w1')
    expect((await v(await sign(ed), NOW)).name).toBe('w1')
  })

  it.each<[string, () => Promise<unknown>, RegExp]>([
    ['not JSON', async () => '{', /not JSON/],
    ['no keys array', async () => ({ key: [] }), /must be an object \{"keys"/],
    ['a private key', async () => ({ keys: [await exportJWK(ed.privateKey)] }), /keys\/0: holds private or secret key material/],
    ['a secret key', async () => ({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }), /keys\/0: holds private/],
    ['a broken key', async () => ({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'short' }] }), /keys\/0: not a valid public key/],
    ['an alg that does not fit the key', async () => ({ keys: [{ ...await exportJWK(ed.publicKey), alg: 'ES256' }] }), /keys\/0\/alg/],
    ['no usable key', async () => ({ keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB' }] }), /no Ed25519 \(OKP\) or P-256 \(EC\) key/],
    ['a kid that is not a string', async () => ({ keys: [{ ...await exportJWK(ed.publicKey), kid: 1 }] }), /keys\/0\/kid: must be a string/]
  ])('refuses a JWKS file with %s (ConfigError)', async (_, content, message) => {
    const path = file('bad-jwks.json', await content())
    const err = configError(() => createTokenVerifier({ trustDomain: TD, jwksFile: path }))
    expect(err.message).toMatch(message)
    expect(err.message).toContain(path)
  })
})

describe('configuration', () => {
  it('refuses no keys, a bad trust domain, bad options, and keys that are not Ed25519 or P-256 public keys', async () => {
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: undefined })).message).toMatch(/no token keys/)
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [] })).message).toMatch(/no token keys/)
    expect(configError(() => createTokenVerifier({ trustDomain: 'Bad Domain', keys: [ed.pem] })).message).toMatch(/trust domain/)
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [ed.pem], maxBytes: 0 })).message).toMatch(/maxBytes/)
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [ed.pem], clockToleranceSec: -1 })).message).toMatch(/clockToleranceSec/)
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [ed.pem], cacheSize: 1.5 })).message).toMatch(/cacheSize/)
    const privatePem = await exportPKCS8(ed.privateKey)
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [privatePem] })).message).toMatch(/token key 1: not a PEM public key/)
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [ed.pem, rsa] })).message).toMatch(/token key 2: a rsa key; only Ed25519/)
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
    expect(configError(() => createTokenVerifier({ trustDomain: TD, keys: [p384] })).message).toMatch(/secp384r1/)
  })

  it('loadTokenKeys reads one or more PEM public keys a file', async () => {
    const one = file('ed.pub.pem', ed.pem)
    const both = file('both.pub.pem', `# issuer keys\n${ed2.pem}\n${es.pem}`)
    const keys = loadTokenKeys([one, both])
    expect(keys).toHaveLength(3)
    const v = createTokenVerifier({ trustDomain: TD, keys })
    expect((await v(await sign(ed2), NOW)).name).toBe('w1')
    expect((await v(await sign(es), NOW)).name).toBe('w1')
  })

  it('loadTokenKeys refuses a missing file, no key, a private key, an RSA key (ConfigError naming the file)', async () => {
    const rsa = file('rsa.pub.pem', generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString())
    const cases: Array<[string, RegExp]> = [
      [join(root, 'missing.pem'), /cannot read it/],
      [file('empty.pem', 'nothing here'), /no PEM public key/],
      [file('private.pem', await exportPKCS8(ed.privateKey)), /holds a private key/],
      [rsa, /a rsa key; only Ed25519 \(EdDSA\) and P-256 \(ES256\)/],
      [file('garbage.pem', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), /cannot read the public key/]
    ]
    for (const [path, message] of cases) {
      const err = configError(() => loadTokenKeys([path]))
      expect(err.message).toMatch(message)
      expect(err.message).toContain(path)
    }
  })
})
