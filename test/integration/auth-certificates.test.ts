/**
 * Client certificates over real TLS: what Node's TLS refuses to verify
 * (another CA unless `--client-ca` names it, expired, not yet valid, not
 * for client authentication), what it verifies but names no single
 * identity (two SPIFFE ids, a malformed one, none — unless `--subject-map`
 * maps its subject), and what a verified identity may still not do (act
 * for another worker id, call an endpoint of another role, name another
 * identity in a capability, be denied with `--deny-identity`). Each refusal
 * is a 401 or 403 with its reason, counted, with no registry change and no
 * crash.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import type { AuthReason } from '../../src/errors.ts'
import { authFailures, callers, expectRefusal, refused, registration, signingKey, signToken, SLOW_LIVENESS, spiffe, tlsRequest, writeFile, type Callers } from '../helpers/auth.ts'
import { capability, testBed, type TestBed } from '../helpers/controllers.ts'
import { clientCertificate, tlsDirCa, unrelatedCa, type ClientCertInit, type TestCa } from '../helpers/x509.ts'

const DAY = 86_400_000
const uri = (value: string): { type: 'url', value: string } => ({ type: 'url', value })
/** A certificate without a SPIFFE id, known only by its subject (other attributes, like C, are not part of the key). */
const LEGACY_SUBJECT = 'C=DE, O=legacy, OU=gpu, CN=legacy-7'

let bed: TestBed
let pool: Callers
let bedCa: TestCa
let otherCa: TestCa
/** Defaults: trusts only the bed's CA, no subject map, no denials. */
let plain: Controller
/** Also trusts `otherCa` (--client-ca), maps LEGACY_SUBJECT (--subject-map), denies worker/w9 (--deny-identity). */
let wide: Controller

beforeAll(async () => {
  bed = await testBed('auth-certs')
  pool = callers(bed.ca)
  bedCa = tlsDirCa(bed.tlsDir)
  otherCa = await unrelatedCa('CN=partner CA, O=partner')
  ;[plain, wide] = await Promise.all([
    bed.start({ id: 'plain', ...SLOW_LIVENESS }),
    bed.start({
      id: 'wide',
      ...SLOW_LIVENESS,
      clientCa: [writeFile(bed.root, 'partner-ca.pem', otherCa.cert)],
      // Written in another order and spacing than the certificate's subject: keys are read into one canonical form.
      subjectMap: writeFile(bed.root, 'subjects.json', { subjects: { 'O=legacy,OU=gpu,  CN=legacy-7': spiffe('worker', 'legacy-7') } }),
      denyIdentity: [spiffe('worker', 'w9')]
    })
  ])
})
afterAll(async () => {
  await pool?.close()
  await bed?.cleanup()
})

/** A client presenting a certificate `ca` signed with `init`. */
const presenting = async (ca: TestCa, init: ClientCertInit) => pool.cert(await clientCertificate(ca, init))

/** Certificates the bed's CA signed that /register must refuse at `plain`, each for its reason. */
const REFUSED: Array<{ name: string, reason: AuthReason, init: () => ClientCertInit }> = [
  { name: 'expired yesterday', reason: 'certificate_untrusted', init: () => ({ sans: [uri(spiffe('worker', 'x1'))], notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) }) },
  { name: 'valid only from tomorrow', reason: 'certificate_untrusted', init: () => ({ sans: [uri(spiffe('worker', 'x1'))], notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 2 * DAY) }) },
  { name: 'for server authentication only (EKU serverAuth)', reason: 'certificate_untrusted', init: () => ({ sans: [uri(spiffe('worker', 'x1'))], usage: 'server' }) },
  { name: 'two SPIFFE ids', reason: 'certificate_ambiguous', init: () => ({ sans: [uri(spiffe('worker', 'x1')), uri(spiffe('worker', 'x2'))] }) },
  { name: 'the same SPIFFE id twice', reason: 'certificate_ambiguous', init: () => ({ sans: [uri(spiffe('worker', 'x1')), uri(spiffe('worker', 'x1'))] }) },
  { name: 'a SPIFFE id with a third path segment', reason: 'certificate_malformed_san', init: () => ({ sans: [uri('spiffe://capmesh.local/worker/x1/extra')] }) },
  { name: 'a SPIFFE id with an unknown role', reason: 'certificate_malformed_san', init: () => ({ sans: [uri('spiffe://capmesh.local/admin/x1')] }) },
  { name: 'a SPIFFE id percent-encoded', reason: 'certificate_malformed_san', init: () => ({ sans: [uri('spiffe://capmesh.local/worker/x%31')] }) },
  { name: 'a SPIFFE id of another trust domain', reason: 'certificate_malformed_san', init: () => ({ sans: [uri('spiffe://other.example/worker/x1')] }) },
  { name: 'no SAN at all', reason: 'certificate_no_identity', init: () => ({ subject: LEGACY_SUBJECT }) },
  { name: 'DNS and e-mail SANs, no SPIFFE id', reason: 'certificate_no_identity', init: () => ({ subject: 'CN=x1', sans: [{ type: 'dns', value: 'x1.example' }, { type: 'email', value: 'x1@example.org' }, uri('https://x1.example/')] }) }
]

describe('client certificates refused (401, nothing changed, counted, no crash)', () => {
  it('(the control: a certificate made the same way, valid now, with one SPIFFE id, is accepted)', async () => {
    const client = await presenting(bedCa, { subject: 'CN=x0', sans: [{ type: 'dns', value: 'x0.example' }, uri(spiffe('worker', 'x0'))] })
    expect((await client.json('POST', `${plain.url}/register`, registration('x0'))).status).toBe(200)
    expect(plain.core.registry.get('x0')?.identity).toBe(spiffe('worker', 'x0'))
    expect((await client.json('POST', `${plain.url}/deregister`, { worker_id: 'x0' })).status).toBe(200)
  })

  it.each(REFUSED.map(r => [r.name, r] as const))('%s', async (_name, r) => {
    const client = await presenting(bedCa, r.init())
    const counted = await authFailures(bed.client, plain.url, { reason: r.reason, route: '/register' })
    await refused([plain, wide], r.reason, async () => await client.json('POST', `${plain.url}/register`, registration('x1')))
    expect(await authFailures(bed.client, plain.url, { reason: r.reason, route: '/register' })).toBe(counted + 1)
    // The open /health still answers on the same connection: the refusal is per request, not a dropped connection.
    expect((await client.json('GET', `${plain.url}/health`)).status).toBe(200)
  })

  it('a worker certificate from a second CA: untrusted, unless --client-ca names that CA', async () => {
    const client = await presenting(otherCa, { subject: 'CN=w2, O=partner', sans: [uri(spiffe('worker', 'w2'))] })
    await refused([plain, wide], 'certificate_untrusted', async () => await client.json('POST', `${plain.url}/register`, registration('w2')))
    const res = await client.json('POST', `${wide.url}/register`, registration('w2'))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(wide.core.registry.get('w2')?.identity).toBe(spiffe('worker', 'w2'))
    expect((await client.json('POST', `${wide.url}/heartbeat`, { worker_id: 'w2' })).body.status).toBe('acknowledged')
  })

  it('a certificate without a SPIFFE id: no identity, unless --subject-map maps its subject', async () => {
    const client = await presenting(bedCa, { subject: LEGACY_SUBJECT, sans: [{ type: 'dns', value: 'legacy-7.gpu.example' }] })
    await refused([plain, wide], 'certificate_no_identity', async () => await client.json('POST', `${plain.url}/register`, registration('legacy-7')))
    const res = await client.json('POST', `${wide.url}/register`, registration('legacy-7'))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(wide.core.registry.get('legacy-7')?.identity).toBe(spiffe('worker', 'legacy-7'))
    // The mapped identity covers its own name only.
    await refused([plain, wide], 'worker_not_covered', async () => await client.json('POST', `${wide.url}/register`, registration('legacy-8')))
    // The same subject from an untrusted CA is not mapped: the CA is checked first.
    const forged = await presenting(otherCa, { subject: LEGACY_SUBJECT })
    await refused([plain, wide], 'certificate_untrusted', async () => await forged.json('POST', `${plain.url}/register`, registration('legacy-7')))
  })

  it('a resumed TLS session keeps what its handshake proved: the identity, or the refusal', async () => {
    // httpsClient (the agent's, the CLI's) resumes sessions: no certificate is sent again then.
    const worker = await bed.identity('worker', 'x5')
    const partner = await clientCertificate(otherCa, { sans: [uri(spiffe('worker', 'x6'))] })
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const full = await tlsRequest(plain.url, { ca: bed.ca, tls: { ...worker, maxVersion }, method: 'POST', path: '/register', body: registration('x5') })
      expect(full.status).toBe(200)
      const resumed = await tlsRequest(plain.url, { ca: bed.ca, tls: { session: full.session, maxVersion }, method: 'POST', path: '/heartbeat', body: { worker_id: 'x5' } })
      expect({ reused: resumed.reused, status: resumed.status, ack: resumed.body.status }).toEqual({ reused: true, status: 200, ack: 'acknowledged' })

      const untrusted = await tlsRequest(plain.url, { ca: bed.ca, tls: { ...partner, maxVersion }, method: 'POST', path: '/register', body: registration('x6') })
      expectRefusal(untrusted, 'certificate_untrusted')
      const again = await refused([plain], 'certificate_untrusted', async () => await tlsRequest(plain.url, { ca: bed.ca, tls: { session: untrusted.session, maxVersion }, method: 'POST', path: '/register', body: registration('x6') }))
      expect(again.reused).toBe(true)
    }
    expect(plain.core.registry.get('x6')).toBeUndefined()
  })

  it('a bearer token at a controller given no token keys', async () => {
    const token = await signToken(await signingKey('EdDSA'), { sub: 'x1' })
    await refused([plain, wide], 'token_unknown_key', async () => await pool.token(token).json('POST', `${plain.url}/register`, registration('x1')))
  })

  it('the controllers still answer after all that', async () => {
    for (const c of [plain, wide]) expect((await bed.client.json('GET', `${c.url}/health`)).body.status).toBe('ok')
  })
})

describe('verified identities that may not do what they ask (403, nothing changed)', () => {
  it('a worker certificate registering another worker id: worker_not_covered', async () => {
    const w1 = pool.cert(await bed.identity('worker', 'w1'))
    await refused([plain], 'worker_not_covered', async () => await w1.json('POST', `${plain.url}/register`, registration('w-other')))
    // Nor heartbeat, drain or deregister one an operator registered.
    expect((await bed.client.json('POST', `${plain.url}/register`, registration('w-other'))).status).toBe(200)
    for (const path of ['/heartbeat', '/drain', '/deregister']) {
      await refused([plain], 'worker_not_covered', async () => await w1.json('POST', plain.url + path, { worker_id: 'w-other' }))
    }
    expect((await w1.json('POST', `${plain.url}/register`, registration('w1'))).status).toBe(200)
  })

  it('a client certificate calling /register: role_not_allowed', async () => {
    const client = pool.cert(await bed.identity('client', 'app'))
    await refused([plain], 'role_not_allowed', async () => await client.json('POST', `${plain.url}/register`, registration('app')))
  })

  it('a capability whose spiffe_id names another identity: refused; its own: accepted', async () => {
    const w3 = pool.cert(await bed.identity('worker', 'w3'))
    const naming = (id: string) => registration('w3', { capabilities: [capability('ocr'), capability('tts', { spiffe_id: id })] })
    await refused([plain], 'worker_not_covered', async () => await w3.json('POST', `${plain.url}/register`, naming(spiffe('worker', 'w1'))))
    await refused([plain], 'worker_not_covered', async () => await w3.json('POST', `${plain.url}/register`, naming(spiffe('operator', 'root'))))
    const ok = await w3.json('POST', `${plain.url}/register`, naming(spiffe('worker', 'w3')))
    expect(ok.status, JSON.stringify(ok.body)).toBe(200)
    expect(plain.core.registry.get('w3')?.capabilities.map(c => c.spiffe_id)).toEqual([undefined, spiffe('worker', 'w3')])
  })

  it('--deny-identity: refused everywhere but the open /health, with a valid certificate', async () => {
    const w9 = pool.cert(await bed.identity('worker', 'w9'))
    const counted = await authFailures(bed.client, wide.url, { reason: 'identity_denied' })
    await refused([wide], 'identity_denied', async () => await w9.json('POST', `${wide.url}/register`, registration('w9')))
    await refused([wide], 'identity_denied', async () => await w9.json('POST', `${wide.url}/heartbeat`, { worker_id: 'w9' }))
    await refused([wide], 'identity_denied', async () => await w9.json('GET', `${wide.url}/openapi.json`))
    expect(await authFailures(bed.client, wide.url, { reason: 'identity_denied' })).toBe(counted + 3)
    expect((await w9.json('GET', `${wide.url}/health`)).status).toBe(200)
    // The same certificate where it is not denied.
    expect((await w9.json('POST', `${plain.url}/register`, registration('w9'))).status).toBe(200)
  })
})
