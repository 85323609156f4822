/**
 * Bearer tokens: compact JWTs signed with EdDSA (Ed25519) or ES256 (P-256),
 * verified with `jose` against public keys given as PEM (SPKI) and/or a
 * JWKS file. Claims: `sub` (the identity's name), `role`, `exp`, and for
 * workers optionally `worker_ids`. The identity is
 * `spiffe://<trust-domain>/<role>/<sub>`, the same as a certificate's for
 * that role and name.
 *
 * Which keys are tried: a token with a `kid` is checked against the JWKS
 * keys with that `kid`, or, when there is none, against the PEM keys of its
 * algorithm (PEM keys have no `kid`); a token without one against every
 * key of its algorithm. No key to try: `token_unknown_key`.
 *
 * A verified token is remembered by its exact text until its `exp` (plus
 * the clock tolerance): a worker sending the same token every second costs
 * one signature check per token. Only verified tokens are remembered, so
 * the cache holds only what the key holders signed.
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, decodeProtectedHeader, importSPKI, jwtVerify, type CryptoKey, type JSONWebKeySet, type JWTPayload, type JWTVerifyOptions, type ProtectedHeaderParameters } from 'jose'
import { DEFAULT_TOKEN_CACHE_SIZE, DEFAULT_TOKEN_CLOCK_TOLERANCE_SEC, DEFAULT_TOKEN_MAX_BYTES } from '../constants.ts'
import { AuthError, ConfigError, type AuthReason } from '../errors.ts'
import { BoundedMap } from '../utils/bounded-map.ts'
import { createIdentity, isIdentityName, isRole, isTrustDomain, isWorkerId, type Identity } from './identity.ts'
import { configFailure, isPlainObject, pointer, readJsonFile } from './json-file.ts'

export interface TokenVerifierInit {
  /** Trust domain of the identities tokens name. */
  trustDomain: string
  /** PEM public keys (SPKI, `-----BEGIN PUBLIC KEY-----`), Ed25519 or P-256; see loadTokenKeys. @default none */
  keys?: string[] | undefined
  /** A JWKS file (`{"keys": [...]}`) of public keys; keys other than Ed25519 / P-256 are ignored. @default none */
  jwksFile?: string
  /** Clock skew allowed on `exp` and `nbf` (seconds). @default 30 */
  clockToleranceSec?: number
  /** Largest token accepted (bytes); larger ones are refused before any parsing. @default 8192 */
  maxBytes?: number
  /** Verified tokens remembered; 0 remembers none. @default 10000 */
  cacheSize?: number
}

/**
 * Verifies a bearer token (the text after `Bearer `) and returns its
 * identity, frozen; `now` is the time to check it at (ms since the epoch,
 * default Date.now()). Rejects with AuthError (401) and a `token_*` reason.
 */
export type TokenVerifier = (token: string, now?: number) => Promise<Identity>

type Alg = 'EdDSA' | 'ES256'
const ALGORITHMS: Alg[] = ['EdDSA', 'ES256']
/** Three base64url parts; the signature may be empty (so that `alg: none` is reported as such). */
const COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

interface Cached { identity: Identity, expiresAtMs: number }

/** A verifier of bearer tokens; throws ConfigError at once for a bad key, JWKS file or option. */
export function createTokenVerifier (init: TokenVerifierInit): TokenVerifier {
  const { trustDomain } = init
  if (!isTrustDomain(trustDomain)) throw new ConfigError(`invalid trust domain "${String(trustDomain)}" (lower-case letters, digits, ".", "-", "_")`)
  const tolerance = init.clockToleranceSec ?? DEFAULT_TOKEN_CLOCK_TOLERANCE_SEC
  const maxBytes = init.maxBytes ?? DEFAULT_TOKEN_MAX_BYTES
  const cacheSize = init.cacheSize ?? DEFAULT_TOKEN_CACHE_SIZE
  if (!Number.isFinite(tolerance) || tolerance < 0) throw new ConfigError(`clockToleranceSec must be a number >= 0, got ${tolerance}`)
  if (!Number.isInteger(maxBytes) || maxBytes < 1) throw new ConfigError(`maxBytes must be a positive integer, got ${maxBytes}`)
  if (!Number.isInteger(cacheSize) || cacheSize < 0) throw new ConfigError(`cacheSize must be an integer >= 0, got ${cacheSize}`)

  const pem = (init.keys ?? []).map((k, i) => ({ pem: k, alg: pemAlgorithm(k, `token key ${i + 1}`) }))
  const jwks = init.jwksFile != null ? loadJwks(init.jwksFile) : undefined
  if (pem.length === 0 && jwks == null) throw new ConfigError('no token keys: give PEM public keys or a JWKS file')
  const jwksKeys = jwks != null ? createLocalJWKSet(jwks) : undefined
  // importSPKI is async; start now so the first token does not wait for it, and never leave a rejection unhandled.
  const pemKeys: Promise<Array<{ alg: Alg, key: CryptoKey }>> = Promise.all(pem.map(async p => ({ alg: p.alg, key: await importSPKI(p.pem, p.alg) })))
  pemKeys.catch(() => {})

  const cache = new BoundedMap<string, Cached>(cacheSize)

  async function keysFor (header: ProtectedHeaderParameters, alg: Alg): Promise<CryptoKey[]> {
    const out: CryptoKey[] = []
    if (jwksKeys != null) {
      try {
        out.push(await jwksKeys(header))
      } catch (err) {
        const code = (err as { code?: string }).code
        if (code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') {
          for await (const k of err as AsyncIterable<CryptoKey>) out.push(k)
        } else if (code !== 'ERR_JWKS_NO_MATCHING_KEY') {
          throw err
        }
      }
    }
    if (header.kid === undefined || out.length === 0) {
      for (const k of await pemKeys) if (k.alg === alg) out.push(k.key)
    }
    return out
  }

  async function verify (token: string, nowMs: number): Promise<JWTPayload> {
    if (!COMPACT.test(token)) throw new AuthError('token_malformed', 'the bearer token is not a compact JWS (header.payload.signature)')
    let header: ProtectedHeaderParameters
    try {
      header = decodeProtectedHeader(token)
    } catch {
      throw new AuthError('token_malformed', 'the bearer token\'s header is not a base64url JSON object')
    }
    const alg = header.alg
    if (alg !== 'EdDSA' && alg !== 'ES256') throw new AuthError('token_algorithm', `token algorithm ${JSON.stringify(alg ?? null)} is not accepted (only ${ALGORITHMS.join(', ')})`)
    if (header.kid !== undefined && typeof header.kid !== 'string') throw new AuthError('token_malformed', 'the token\'s "kid" is not a string')
    const keys = await keysFor(header, alg)
    if (keys.length === 0) {
      throw new AuthError('token_unknown_key', header.kid !== undefined
        ? `no configured key has kid ${JSON.stringify(header.kid.slice(0, 100))} (nor is there a PEM key for ${alg})`
        : `no configured key for ${alg}`)
    }
    const options: JWTVerifyOptions = {
      algorithms: ALGORITHMS,
      clockTolerance: tolerance,
      currentDate: new Date(nowMs),
      requiredClaims: ['sub', 'role', 'exp']
    }
    for (const key of keys) {
      try {
        return (await jwtVerify(token, key, options)).payload
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') continue
        throw joseFailure(err)
      }
    }
    throw new AuthError('token_signature', keys.length === 1 ? 'the token\'s signature does not verify' : `the token's signature verifies with none of the ${keys.length} keys it could be signed with`)
  }

  return async function verifyToken (token: string, now: number = Date.now()): Promise<Identity> {
    if (typeof token !== 'string') throw new AuthError('token_malformed', 'the bearer token is not a string')
    if (token.length > maxBytes) throw new AuthError('token_too_large', `the bearer token has ${token.length} bytes; at most ${maxBytes} are accepted`)
    const hit = cache.get(token, true)
    if (hit !== undefined) {
      if (now < hit.expiresAtMs) return hit.identity
      cache.delete(token)
      throw new AuthError('token_expired', `the bearer token expired at ${new Date(hit.expiresAtMs - tolerance * 1000).toISOString()}`)
    }
    const claims = await verify(token, now)
    const identity = identityOf(claims, trustDomain)
    cache.set(token, { identity, expiresAtMs: ((claims.exp as number) + tolerance) * 1000 })
    return identity
  }
}

/** The identity the verified claims name; AuthError `token_claims` when they do not name one. */
function identityOf (claims: JWTPayload, trustDomain: string): Identity {
  const { sub, role } = claims
  const workerIds: unknown = claims.worker_ids
  const bad = (message: string): never => { throw new AuthError('token_claims', message) }
  if (typeof claims.exp !== 'number') bad('"exp" must be a number')
  if (!isIdentityName(sub)) bad('"sub" must be a name: printable ASCII without spaces, "/", "%", "?" or "#", at most 256 characters')
  if (!isRole(role)) bad('"role" must be one of worker, client, operator, metrics')
  if (workerIds !== undefined) {
    if (role !== 'worker') bad(`"worker_ids" is only for the worker role, not ${String(role)}`)
    if (!Array.isArray(workerIds) || workerIds.length === 0) bad('"worker_ids" must be a non-empty array of worker ids')
    const list = workerIds as unknown[]
    const wrong = list.findIndex(w => !isWorkerId(w))
    if (wrong >= 0) bad(`"worker_ids"[${wrong}] is not a worker id (printable ASCII without spaces, at most 256)`)
  }
  return createIdentity({ trustDomain, role: role as Identity['role'], name: sub as string, via: 'token', workerIds: workerIds as string[] | undefined })
}

/** A jose failure (other than a bad signature) as the AuthError it means; anything else is ours and passes through. */
function joseFailure (err: unknown): unknown {
  const e = err as { code?: string, claim?: string, reason?: string, message?: string }
  const reason: AuthReason | undefined = ({
    ERR_JWT_EXPIRED: 'token_expired',
    ERR_JWT_CLAIM_VALIDATION_FAILED: e.claim === 'nbf' && e.reason === 'check_failed' ? 'token_not_yet_valid' : 'token_claims',
    ERR_JWS_INVALID: 'token_malformed',
    ERR_JWT_INVALID: 'token_malformed',
    ERR_JOSE_NOT_SUPPORTED: 'token_malformed',
    ERR_JOSE_ALG_NOT_ALLOWED: 'token_algorithm'
  } as Record<string, AuthReason>)[e.code ?? '']
  return reason !== undefined ? new AuthError(reason, `bearer token refused: ${e.message ?? reason}`, { cause: err }) : err
}

/**
 * Reads PEM public keys (SPKI; Ed25519 or P-256) from files, one or more a
 * file. ConfigError naming the file when one cannot be read, holds no
 * public key, holds a private key, or a key of another type.
 */
export function loadTokenKeys (files: string[]): string[] {
  const out: string[] = []
  for (const file of files) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new ConfigError(`token key ${file}: cannot read it: ${(err as Error).message}`, { file })
    }
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new ConfigError(`token key ${file}: holds a private key; give the public key only (openssl pkey -pubout)`, { file })
    const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? []
    if (blocks.length === 0) throw new ConfigError(`token key ${file}: no PEM public key (-----BEGIN PUBLIC KEY-----) in it`, { file })
    for (const pem of blocks) {
      pemAlgorithm(pem, `token key ${file}`)
      out.push(`${pem}\n`)
    }
  }
  return out
}

/** The JWS algorithm a PEM public key verifies; ConfigError for anything but an Ed25519 or P-256 SPKI key. */
function pemAlgorithm (pem: string, where: string): Alg {
  if (typeof pem !== 'string' || !pem.includes('-----BEGIN PUBLIC KEY-----')) throw new ConfigError(`${where}: not a PEM public key (-----BEGIN PUBLIC KEY-----)`)
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch (err) {
    throw new ConfigError(`${where}: cannot read the public key: ${(err as Error).message}`)
  }
  const alg = algorithmOf(key)
  if (alg == null) throw new ConfigError(`${where}: a ${key.asymmetricKeyType ?? 'unknown'} key${key.asymmetricKeyDetails?.namedCurve != null ? ` (${key.asymmetricKeyDetails.namedCurve})` : ''}; only Ed25519 (EdDSA) and P-256 (ES256) keys are accepted`)
  return alg
}

function algorithmOf (key: KeyObject): Alg | null {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA'
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256'
  return null
}

/** A JWKS file checked: public keys only, at least one Ed25519 or P-256 key. */
function loadJwks (file: string): JSONWebKeySet {
  const json = readJsonFile(file, 'JWKS')
  const fail: (path: string, message: string) => never = configFailure('JWKS', file)
  if (!isPlainObject(json) || !Array.isArray(json.keys)) fail('', 'must be an object {"keys": [...]}')
  let usable = 0
  json.keys.forEach((jwk: unknown, i: number) => {
    const path = pointer(['keys', i])
    if (!isPlainObject(jwk)) fail(path, 'must be a JWK object')
    if ('d' in jwk || 'p' in jwk || 'k' in jwk) fail(path, 'holds private or secret key material; a JWKS for verification holds public keys only')
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') fail(`${path}/kid`, 'must be a string')
    const okp = jwk.kty === 'OKP' && jwk.crv === 'Ed25519'
    const ec = jwk.kty === 'EC' && jwk.crv === 'P-256'
    if (!okp && !ec) return // another issuer's key (RSA, ...): never matches an accepted algorithm
    if (jwk.alg !== undefined && jwk.alg !== (okp ? 'EdDSA' : 'ES256')) fail(`${path}/alg`, `${JSON.stringify(jwk.alg)} does not fit a ${okp ? 'Ed25519' : 'P-256'} key (${okp ? 'EdDSA' : 'ES256'})`)
    try {
      createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' })
    } catch (err) {
      fail(path, `not a valid public key: ${(err as Error).message}`)
    }
    usable++
  })
  if (usable === 0) fail('keys', 'no Ed25519 (OKP) or P-256 (EC) key: no token could ever verify')
  return json as unknown as JSONWebKeySet
}
