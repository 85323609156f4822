/**
 * Certificates with whatever subject alternative names and subject a test
 * needs (several SPIFFE ids, quoted characters, none at all), self-signed,
 * and the certificate object Node's TLS hands a server for them
 * (`getPeerCertificate()` has the same shape as `toLegacyObject()`); client
 * certificates signed by a test bed's CA or by an unrelated one, with any
 * validity, SANs and subject, to present over real TLS.
 */
import 'reflect-metadata'
import { webcrypto, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { PeerCertificate } from 'node:tls'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
let keys: Promise<CryptoKeyPair> | undefined

export interface TestCertInit {
  /** RFC 4514 subject. @default 'CN=test' */
  subject?: string
  /** `{type: 'url' | 'dns' | 'email' | 'ip', value}` entries; none: no SAN extension. */
  sans?: Array<{ type: 'url' | 'dns' | 'email' | 'ip', value: string }>
}

/** A self-signed certificate (PEM) with the given subject and SANs. */
export async function testCertificate (init: TestCertInit = {}): Promise<string> {
  keys ??= webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as Promise<CryptoKeyPair>
  const pair = await keys
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: init.subject ?? 'CN=test',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    signingAlgorithm: ALG,
    keys: pair,
    extensions: init.sans != null ? [new x509.SubjectAlternativeNameExtension(init.sans)] : []
  })
  return cert.toString('pem')
}

/** What `tlsSocket.getPeerCertificate()` returns for this certificate. */
export function peerCertificate (pem: string): PeerCertificate {
  return (new X509Certificate(pem) as unknown as { toLegacyObject: () => PeerCertificate }).toLegacyObject()
}

/** Both at once. */
export async function testPeerCertificate (init: TestCertInit = {}): Promise<PeerCertificate> {
  return peerCertificate(await testCertificate(init))
}

/**
 * A root CA that allows one intermediate (capmesh's own allows none), an
 * intermediate it signed and a server certificate for localhost / 127.0.0.1
 * / ::1 the intermediate signed: `chain` is the leaf followed by the
 * intermediate (what a server presents), `key` the leaf's key, `ca` the root.
 */
export async function chainedServerCertificate (): Promise<{ ca: string, chain: string, key: string }> {
  const gen = async (): Promise<CryptoKeyPair> => await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const [rootKeys, interKeys, leafKeys] = await Promise.all([gen(), gen(), gen()])
  const now = Date.now()
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 20 * 86_400_000), signingAlgorithm: ALG }
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    ...validity, serialNumber: '01', name: 'CN=test root', keys: rootKeys,
    extensions: [new x509.BasicConstraintsExtension(true, 1, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)]
  })
  const inter = await x509.X509CertificateGenerator.create({
    ...validity, serialNumber: '02', subject: 'CN=test intermediate', issuer: root.subject, publicKey: interKeys.publicKey, signingKey: rootKeys.privateKey,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)]
  })
  const leaf = await x509.X509CertificateGenerator.create({
    ...validity, serialNumber: '03', subject: 'CN=localhost', issuer: inter.subject, publicKey: leafKeys.publicKey, signingKey: interKeys.privateKey,
    extensions: [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: '::1' }])
    ]
  })
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey), 'PRIVATE KEY')
  return { ca: root.toString('pem'), chain: `${leaf.toString('pem')}\n${inter.toString('pem')}\n`, key }
}

/** A CA certificate and its private key (PEM, PKCS#8). */
export interface TestCa { cert: string, key: string }

/** The CA of a TLS dir (`ca.pem`, `ca-key.pem`): a test bed's own, which every controller of the bed trusts. */
export function tlsDirCa (tlsDir: string): TestCa {
  return { cert: readFileSync(join(tlsDir, 'ca.pem'), 'utf8'), key: readFileSync(join(tlsDir, 'ca-key.pem'), 'utf8') }
}

/** A new CA that has nothing to do with any test bed's (a second organisation's, a legacy platform's). */
export async function unrelatedCa (name = 'CN=unrelated test CA'): Promise<TestCa> {
  const pair = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name,
    notBefore: new Date(Date.now() - 86_400_000),
    notAfter: new Date(Date.now() + 30 * 86_400_000),
    signingAlgorithm: ALG,
    keys: pair,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)
    ]
  })
  return { cert: cert.toString('pem'), key: await exportPkcs8(pair.privateKey) }
}

export interface ClientCertInit extends TestCertInit {
  /** @default an hour ago */
  notBefore?: Date
  /** @default in a day */
  notAfter?: Date
  /** ExtendedKeyUsage: `client` (clientAuth, as issued identities have), `server` (serverAuth only), or none (no extension). @default 'client' */
  usage?: 'client' | 'server' | 'none'
}

/**
 * A client certificate signed by `ca` (a fresh P-256 key), with whatever
 * subject, SANs and validity the test needs: Node's TLS verifies it against
 * the CAs a controller trusts exactly as it does an issued identity.
 */
export async function clientCertificate (ca: TestCa, init: ClientCertInit = {}): Promise<{ cert: string, key: string }> {
  const issuer = new x509.X509Certificate(ca.cert)
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(ca.key), ALG, false, ['sign'])
  const pair = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const usage = init.usage ?? 'client'
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: webcrypto.getRandomValues(new Uint8Array(8)).reduce((s, b) => s + (b & 0x7f).toString(16).padStart(2, '0'), ''),
    subject: init.subject ?? 'CN=test',
    issuer: issuer.subject,
    notBefore: init.notBefore ?? new Date(Date.now() - 3_600_000),
    notAfter: init.notAfter ?? new Date(Date.now() + 86_400_000),
    signingAlgorithm: ALG,
    publicKey: pair.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ...(usage === 'none' ? [] : [new x509.ExtendedKeyUsageExtension([usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth])]),
      ...(init.sans != null ? [new x509.SubjectAlternativeNameExtension(init.sans)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(issuer, false)
    ]
  })
  return { cert: cert.toString('pem'), key: await exportPkcs8(pair.privateKey) }
}

async function exportPkcs8 (key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY')
}
