/**
 * tls — the project's own local CA and the certificates it signs, so every
 * controller, worker and test speaks verified HTTPS (never an insecure flag),
 * and identity certificates (a SPIFFE id as URI SAN, client authentication
 * only) for mutual TLS.
 *
 * @example
 * const tls = await ensureTls({ dir: '.capmesh/tls', hosts: ['127.0.0.1'] })
 * https.createServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false })
 * // clients: new undici.Agent({ connect: { ca: tls.ca } })
 *
 * const w1 = await issueIdentity({ dir: '.capmesh/tls', role: 'worker', name: 'w1' })
 * // w1.id === 'spiffe://capmesh.local/worker/w1'; present w1.cert / w1.key as the client certificate
 */
export { ensureTls, issueIdentity, loadTlsFiles, readCa, uncovered } from './tls.ts'
export type { EnsureTlsInit, IssueIdentityInit, IssuedIdentity, TlsMaterial } from './tls.ts'
