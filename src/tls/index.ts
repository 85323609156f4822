/**
 * tls — the project's own local CA and the certificates it signs, so every
 * controller, worker and test speaks verified HTTPS (never an insecure flag).
 *
 * @example
 * const tls = await ensureTls({ dir: '.capmesh/tls', hosts: ['127.0.0.1'] })
 * https.createServer({ cert: tls.cert, key: tls.key })
 * // clients: new undici.Agent({ connect: { ca: tls.ca } })
 */
export { ensureTls, loadTlsFiles, readCa, uncovered } from './tls.ts'
export type { EnsureTlsInit, TlsMaterial } from './tls.ts'
