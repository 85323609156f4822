// The container health check: exits 0 when a capmesh controller (or demo worker) answers
// GET /health over HTTPS with 200, its certificate verified against the mesh's CA; 1 otherwise.
// Plain JavaScript with no imports from capmesh, so it starts in a few tens of milliseconds.
//   CAPMESH_HEALTH_URL  default https://127.0.0.1:9000/health (the certificate must cover the host)
//   CAPMESH_CA          default /tls/ca.pem
//   CAPMESH_HEALTH_CERT, CAPMESH_HEALTH_KEY   a client certificate and key to present (PEM files),
//                       for a controller started with --health-auth required (e.g. a metrics
//                       identity from `capmesh certs issue --role metrics`); /health is open by default
import { readFileSync } from 'node:fs'
import { get } from 'node:https'

const url = process.env.CAPMESH_HEALTH_URL ?? 'https://127.0.0.1:9000/health'
const tls = {}
try {
  tls.ca = readFileSync(process.env.CAPMESH_CA ?? '/tls/ca.pem')
  if (process.env.CAPMESH_HEALTH_CERT != null) {
    tls.cert = readFileSync(process.env.CAPMESH_HEALTH_CERT)
    tls.key = readFileSync(process.env.CAPMESH_HEALTH_KEY ?? process.env.CAPMESH_HEALTH_CERT.replace(/\.pem$/, '-key.pem'))
  }
} catch (err) {
  console.error(`healthcheck: ${err.message}`)
  process.exit(1)
}
const req = get(url, { ...tls, timeout: 4000 }, res => {
  res.resume()
  if (res.statusCode !== 200) console.error(`healthcheck: ${url} answered HTTP ${res.statusCode}`)
  process.exit(res.statusCode === 200 ? 0 : 1)
})
req.on('timeout', () => { req.destroy(new Error('no answer within 4 s')) })
req.on('error', err => {
  console.error(`healthcheck: ${url}: ${err.message}`)
  process.exit(1)
})
