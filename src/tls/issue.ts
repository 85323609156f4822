/**
 * Making certificates: the local CA, the server certificates and the
 * identity (client) certificates it signs, with
 * @peculiar/x509 over WebCrypto (ECDSA P-256). Loaded only when something
 * must be made (tls.ts).
 */
// @peculiar/x509's dependency injection (tsyringe) needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import { isIP } from 'node:net'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const
const DAY = 86_400_000

/** A new self-signed CA certificate and its key (PEM), valid ten years. */
export async function createCa (): Promise<{ cert: string, key: string }> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=capmesh local development CA ${new Date(now).toISOString().slice(0, 10)}`,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) }
}

/** Issues a server (and client) certificate for `hosts`, signed by the CA. */
export async function issue (caPem: string, caKeyPem: string, hosts: string[], validityDays = 825): Promise<{ cert: string, key: string }> {
  const ca = new x509.X509Certificate(caPem)
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(caKeyPem), ALG, false, ['sign'])
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const now = Date.now()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${hosts.find(h => isIP(h) === 0 && h !== 'localhost') ?? hosts[0]}`,
    issuer: ca.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + validityDays * DAY),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(hosts.map(h => ({ type: isIP(h) !== 0 ? 'ip' as const : 'dns' as const, value: h }))),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey) }
}

/**
 * Issues a client certificate carrying an identity: the URI SAN `uri` (a
 * SPIFFE id), subject CN=`commonName`, ExtendedKeyUsage clientAuth only (it
 * cannot serve HTTPS), signed by the CA.
 */
export async function issueClient (caPem: string, caKeyPem: string, init: { uri: string, commonName: string, validityDays: number }): Promise<{ cert: string, key: string, notAfter: Date }> {
  const ca = new x509.X509Certificate(caPem)
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(caKeyPem), ALG, false, ['sign'])
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const now = Date.now()
  const notAfter = new Date(now + init.validityDays * DAY)
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${init.commonName}`, // issued names are [A-Za-z0-9._-]: nothing to escape
    issuer: ca.subject,
    // An hour back, not a day: an identity should not predate its issuing by much.
    notBefore: new Date(now - 3_600_000),
    notAfter,
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: init.uri }]),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  return { cert: cert.toString('pem'), key: await exportKey(keys.privateKey), notAfter }
}

async function exportKey (key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key)
  return x509.PemConverter.encode(der, 'PRIVATE KEY')
}

function serial (): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16))
  b[0] &= 0x7f // positive INTEGER
  return Buffer.from(b).toString('hex')
}
