/**
 * `npm run bench:identity` — what knowing a caller costs per request: a
 * bearer token verified afresh (jose, EdDSA and ES256), the same token
 * answered from the verifier's cache (a worker heartbeating with one token),
 * a client certificate's identity read from Node's peer certificate, and a
 * route-policy decision (fresh and remembered). Single-threaded, in process.
 */
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PeerCertificate } from 'node:tls'
import { exportSPKI, generateKeyPair, SignJWT } from 'jose'
import { createIdentity, createTokenVerifier, identityFromCertificate, parsePolicy } from '../../src/identity/index.ts'
import { ValidationError } from '../../src/errors.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { scriptArgs } from '../args.ts'

const { values } = scriptArgs({
  script: 'bench:identity',
  summary: 'Per-request cost of identities: token verification (fresh and cached), certificate identity, route policy.',
  options: {
    n: { type: 'string', value: 'N', default: '20000', description: 'operations per measurement' }
  }
})
const N = Number(values.n)
if (!Number.isInteger(N) || N < 10) throw new ValidationError(`--n: expected an integer >= 10, got "${values.n}"`)
const TD = 'capmesh.local'

/** Mean µs per call of `fn` over N calls, after N/10 warm-up calls. */
async function measure (fn: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < N / 10; i++) await fn(i)
  const t = process.hrtime.bigint()
  for (let i = 0; i < N; i++) await fn(i)
  return Number(process.hrtime.bigint() - t) / 1000 / N
}

const rows: Array<[string, number]> = []
for (const alg of ['EdDSA', 'ES256'] as const) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  const token = await new SignJWT({ sub: 'w1', role: 'worker', exp: Math.floor(Date.now() / 1000) + 3600 }).setProtectedHeader({ alg }).sign(privateKey)
  const keys = [await exportSPKI(publicKey)]
  const fresh = createTokenVerifier({ trustDomain: TD, keys, cacheSize: 0 })
  const cached = createTokenVerifier({ trustDomain: TD, keys })
  rows.push([`token verify, ${alg}, no cache`, await measure(async () => await fresh(token))])
  rows.push([`token verify, ${alg}, cache hit`, await measure(async () => await cached(token))])
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-identity-'))
try {
  await ensureTls({ dir: root })
  const issued = await issueIdentity({ dir: root, role: 'worker', name: 'w1' })
  const peer = (new X509Certificate(issued.cert) as unknown as { toLegacyObject: () => PeerCertificate }).toLegacyObject()
  rows.push(['identityFromCertificate', await measure(() => identityFromCertificate(peer, { trustDomain: TD }))])
} finally {
  rmSync(root, { recursive: true, force: true })
}

const client = createIdentity({ trustDomain: TD, role: 'client', name: 'team-a', via: 'token' })
const rules = Array.from({ length: 50 }, (_, i) => ({ identities: [`spiffe://${TD}/client/team-*`, `spiffe://${TD}/client/c${i}`], capabilities: [`cap-${i}-*`, `exact-${i}`, `g?-${i}-*`] }))
const remembering = parsePolicy({ rules })
const forgetting = parsePolicy({ rules }, 'bench', { cacheSize: 0 })
rows.push(['allowsRoute, 50 rules, fresh (last rule matches)', await measure(() => forgetting.allowsRoute(client, 'cap-49-x'))])
rows.push(['allowsRoute, 50 rules, remembered', await measure(() => remembering.allowsRoute(client, 'cap-49-x'))])

console.log(`${N} operations each; node ${process.version}; load average ${loadavg()[0].toFixed(1)}`)
for (const [what, us] of rows) console.log(`${what.padEnd(48)} ${us.toFixed(2).padStart(8)} µs`)
