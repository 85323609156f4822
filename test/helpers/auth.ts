/**
 * Helpers of the identity tests (test/integration/auth-*.test.ts): HTTPS
 * callers presenting a client certificate, a bearer token or nothing;
 * tokens signed with keys made for the run (or assembled by hand); and the
 * check every refusal ends with: its status, code and reason, and a
 * registry that did not change.
 */
import { request as httpsRequest } from 'node:https'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { expect } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { AUTH_REASONS, ERROR_CODES, type AuthReason } from '../../src/errors.ts'
import { httpsClient, type HttpsClient, type JsonResponse } from '../../src/utils/https-client.ts'
import type { Capability } from '../../src/wire/index.ts'
import { capability } from './controllers.ts'
import { scrape } from './metrics.ts'

/**
 * Liveness slow enough that a worker registered once stays healthy for the
 * whole file (the local preset expires a silent worker after 1.2 s, which
 * would change the registry under a test that checks it did not change).
 */
export const SLOW_LIVENESS = { heartbeatIntervalMs: 1000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }

export const TRUST_DOMAIN = 'capmesh.local'
export const spiffe = (role: string, name: string): string => `spiffe://${TRUST_DOMAIN}/${role}/${name}`

/** HTTPS clients trusting the bed's CA, each presenting one identity (or none); all closed by close(). */
export interface Callers {
  /** A client presenting this client certificate, or none at all. */
  cert: (tls?: { cert: string, key: string }) => HttpsClient
  /** A client presenting this bearer token (and no certificate). */
  token: (token: string) => HttpsClient
  close: () => Promise<void>
}

export function callers (ca: string): Callers {
  const made = new Map<string, HttpsClient>()
  const get = (key: string, make: () => HttpsClient): HttpsClient => {
    let c = made.get(key)
    if (c == null) made.set(key, c = make())
    return c
  }
  return {
    cert: tls => get(`cert:${tls?.cert ?? 'none'}`, () => httpsClient({ ca, cert: tls?.cert, key: tls?.key, timeoutMs: 10_000 })),
    token: token => get(`token:${token}`, () => httpsClient({ ca, token, timeoutMs: 10_000 })),
    async close () {
      for (const c of made.values()) await c.close()
      made.clear()
    }
  }
}

/** What tells whether a controller's registry changed: its hash (entries, incarnations, owners) and size. */
export interface RegistryState { hash: string, size: number }

export function registryState (c: Controller): RegistryState {
  return { hash: c.core.registryHash, size: c.core.registry.size }
}

/** The HTTP status a refusal for `reason` is answered with (401 or 403). */
export function statusOf (reason: AuthReason): number {
  return ERROR_CODES[AUTH_REASONS[reason]].status
}

/** Asserts that `res` is the refusal for `reason`: status, code, reason, and `www-authenticate: Bearer` on a 401. */
export function expectRefusal (res: JsonResponse, reason: AuthReason): void {
  const status = statusOf(reason)
  expect({ status: res.status, reason: res.body?.reason, code: res.body?.code }, JSON.stringify(res.body)).toEqual({ status, reason, code: AUTH_REASONS[reason] })
  expect(res.headers['www-authenticate']).toBe(status === 401 ? 'Bearer' : undefined)
}

/**
 * Makes the call, asserts it is refused for `reason`, and that no
 * controller of `controllers` has a different registry afterwards.
 */
export async function refused<R extends JsonResponse> (controllers: Controller[], reason: AuthReason, call: () => Promise<R>): Promise<R> {
  const before = controllers.map(registryState)
  const res = await call()
  expectRefusal(res, reason)
  expect(controllers.map(registryState)).toEqual(before)
  return res
}

/** A /register body for `id` (one capability unless given), at `url`. */
export function registration (id: string, opts: { url?: string, capabilities?: Array<Record<string, unknown>> } = {}): Record<string, unknown> {
  return { worker_id: id, worker_url: opts.url ?? `https://127.0.0.1:7000/${id}`, capabilities: opts.capabilities ?? [capability(`cap-${id}`)] }
}

/** A capability as the worker agent takes it (typed; the same as the bed's `capability(name)`). */
export function agentCapability (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

/** `capmesh_auth_failures_total` at `url`, summed over the series whose labels include `labels`. */
export async function authFailures (operator: HttpsClient, url: string, labels: { reason?: string, route?: string } = {}): Promise<number> {
  return (await scrape(operator, url)).sum('capmesh_auth_failures_total', labels)
}

// ------------------------------------------------------------------ tokens

/** A key pair that signs tokens: its public key as PEM (for `--token-key`) and as a JWK (for `--jwks`). */
export interface SigningKey {
  alg: 'EdDSA' | 'ES256'
  privateKey: CryptoKey
  publicPem: string
  jwk: JWK
}

export async function signingKey (alg: 'EdDSA' | 'ES256', kid?: string): Promise<SigningKey> {
  const pair = await generateKeyPair(alg, { extractable: true })
  const jwk = await exportJWK(pair.publicKey)
  return { alg, privateKey: pair.privateKey, publicPem: await exportSPKI(pair.publicKey), jwk: { ...jwk, alg, ...(kid != null ? { kid } : {}) } }
}

/**
 * A token signed with `key`. Claims default to a worker token valid for an
 * hour (`exp`), for the `sub` given; an `undefined` claim is left out.
 */
export async function signToken (key: SigningKey, claims: JWTPayload & { role?: unknown, worker_ids?: unknown }, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const all: Record<string, unknown> = { role: 'worker', iat: now, exp: now + 3600, ...claims }
  for (const k of Object.keys(all)) if (all[k] === undefined) delete all[k]
  return await new SignJWT(all).setProtectedHeader({ alg: key.alg, ...header }).sign(key.privateKey)
}

/** A token assembled by hand: header and claims as given, base64url-encoded, and the signature part as given. */
export function handmadeToken (header: unknown, claims: unknown, signature = ''): string {
  const enc = (v: unknown): string => base64url.encode(JSON.stringify(v))
  return `${enc(header)}.${enc(claims)}.${signature}`
}

/** Writes `content` (a string, or JSON) to `dir/name` and returns the path. */
export function writeFile (dir: string, name: string, content: unknown): string {
  const path = join(dir, name)
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2))
  return path
}

/**
 * One HTTPS request with its headers exactly as given (a flat
 * `[name, value, ...]` list, repeated names kept), which undici and fetch
 * would merge: an Authorization header sent twice. Node sends such a list
 * as it is, so Host and Content-Length are added here.
 */
export async function rawRequest (url: string, init: { ca: string, method: string, headers: string[], body?: string }): Promise<JsonResponse> {
  const headers = ['host', new URL(url).host, 'content-length', String(Buffer.byteLength(init.body ?? '')), ...init.headers]
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: init.method, ca: init.ca, headers, agent: false, timeout: 10_000 }, res => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        const json = String(res.headers['content-type'] ?? '').includes('json') && text.length > 0
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: json ? JSON.parse(text) : text })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error(`${init.method} ${url}: no answer within 10 s`)) })
    req.on('error', reject)
    req.end(init.body)
  })
}

/**
 * One HTTP request on a TLS connection of its own (then closed), with the
 * TLS options given: a client certificate, or a `session` to resume (no
 * certificate is sent then: the server takes the identity from the
 * session). Returns the answer, the session to resume, and whether this
 * connection resumed one.
 */
export async function tlsRequest (url: string, init: { ca: string, tls: ConnectionOptions, method: string, path: string, body?: unknown }): Promise<JsonResponse & { session?: Buffer, reused: boolean }> {
  const { hostname, port } = new URL(url)
  const body = init.body !== undefined ? JSON.stringify(init.body) : ''
  return await new Promise((resolve, reject) => {
    let session: Buffer | undefined
    let text = ''
    const socket = tlsConnect({ host: hostname, port: Number(port), ca: init.ca, servername: 'localhost', ...init.tls }, () => {
      socket.write(`${init.method} ${init.path} HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    })
    socket.setTimeout(10_000, () => { socket.destroy(new Error(`${init.method} ${init.path}: no answer within 10 s`)) })
    socket.on('session', (s: Buffer) => { session = s })
    socket.on('data', (d: Buffer) => { text += d.toString('utf8') })
    socket.on('error', reject)
    socket.on('end', () => {
      const [head, ...rest] = text.split('\r\n\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1] ?? 0)
      const headers = Object.fromEntries(head.split('\r\n').slice(1).map(l => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
      const raw = rest.join('\r\n\r\n')
      resolve({ status, headers, body: String(headers['content-type']).includes('json') ? JSON.parse(raw) : raw, session, reused: socket.isSessionReused() })
    })
  })
}
