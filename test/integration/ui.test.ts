/**
 * GET /ui, the dashboard, over real HTTPS with the project CA: who may open
 * it (clients and operators; nobody without an identity, not workers or
 * metrics scrapers), what it serves (its fixed list of files, each with a
 * policy that keeps the page to its own origin, and /ui/mesh matching its
 * schema), and that no path under /ui — `..` however encoded — reaches a
 * file outside that list (404; 400 for a malformed escape, 414 for a
 * name beyond the router's parameter length). The page itself, in Chromium: dashboard.browser.test.ts.
 */
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import { Compile } from 'typebox/compile'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import type { Role } from '../../src/identity/index.ts'
import { DashboardMeshReply } from '../../src/wire/index.ts'
import { eventually, testBed, type CallerTls, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let a: Controller
let b: Controller

beforeAll(async () => {
  bed = await testBed('ui')
  a = await bed.start({ id: 'a' })
  b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
})
afterAll(async () => { await bed.cleanup() })

interface Raw { status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }

/**
 * A GET of `path` exactly as written (node's https sends the request target
 * verbatim: no `..` resolved, no percent-escape touched), as `tls`'s identity
 * or none.
 */
async function get (path: string, tls: Partial<CallerTls> = {}): Promise<Raw> {
  const { hostname, port } = new URL(a.url)
  return await new Promise((resolve, reject) => {
    const req = httpsRequest({ host: hostname, port, path, method: 'GET', ca: bed.ca, cert: tls.cert, key: tls.key, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

const as = async (role: Role): Promise<CallerTls> => await bed.identity(role, `ui-${role}`)
const PAGES = ['/ui', '/ui/mesh', '/ui/dashboard.js', '/ui/dashboard.css', '/ui/icon.svg', '/ui/chart.umd.min.js']

describe('GET /ui: who may open it', () => {
  it('no identity: 401; a worker or metrics identity: 403; a client or an operator: 200 — for the page, its files and /ui/mesh', async () => {
    for (const path of PAGES) {
      const none = await get(path)
      expect(none.status, `${path} without an identity`).toBe(401)
      expect(JSON.parse(none.body.toString()).reason).toBe('credentials_missing')
      for (const role of ['worker', 'metrics'] as const) {
        const r = await get(path, await as(role))
        expect(r.status, `${path} as a ${role}`).toBe(403)
        expect(JSON.parse(r.body.toString()).reason).toBe('role_not_allowed')
      }
      for (const role of ['client', 'operator'] as const) {
        expect((await get(path, await as(role))).status, `${path} as a ${role}`).toBe(200)
      }
    }
  })
})

describe('GET /ui: what it serves', () => {
  it('the page loads only its own files, each served with its type and a same-origin content policy', async () => {
    const client = await as('client')
    const page = await get('/ui', client)
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8')
    const csp = String(page.headers['content-security-policy'])
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("connect-src 'self'")
    expect(page.headers['x-content-type-options']).toBe('nosniff')
    const html = page.body.toString()
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map(m => m[1])
    expect(refs.sort()).toEqual(['/ui/chart.umd.min.js', '/ui/dashboard.css', '/ui/dashboard.js', '/ui/icon.svg'])
    const types: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' }
    for (const ref of refs) {
      const r = await get(ref, client)
      expect(r.status, ref).toBe(200)
      expect(r.headers['content-type'], ref).toBe(types[ref.split('.').pop()!])
      expect(r.body.length, ref).toBeGreaterThan(100)
    }
    // Chart.js is the package's own build, served from node_modules: nothing is fetched from a CDN.
    const chart = await get('/ui/chart.umd.min.js', client)
    expect(chart.body.toString()).toContain('Chart')
    expect(html).not.toMatch(/https?:\/\//)
  })

  it('/ui/mesh: the controllers, their registry hashes and this controller\'s links, as its schema says', async () => {
    const check = Compile(DashboardMeshReply)
    const mesh = await eventually(async () => {
      const r = await get('/ui/mesh', await as('client'))
      const body = JSON.parse(r.body.toString())
      return r.status === 200 && body.controllers.some((c: any) => c.controller_id === 'b' && c.status === 'alive' && c.link?.connected === true && c.registry_hash === body.registry_hash) ? body : null
    }, 'b alive, linked and agreeing in a\'s /ui/mesh')
    expect(check.Check(mesh), JSON.stringify([...check.Errors(mesh)].slice(0, 3))).toBe(true)
    expect(mesh.controller_id).toBe('a')
    expect(mesh.controllers[0]).toMatchObject({ controller_id: 'a', self: true, status: 'alive', link: null, registry_hash: a.view.registryHash() })
    expect(Math.abs(Date.parse(mesh.now) - Date.now())).toBeLessThan(60_000)
    // A client's share: no peer ids, addresses, keys or allow list.
    const text = JSON.stringify(mesh)
    expect(text).not.toContain(b.p2p.peerId)
    expect(text).not.toContain('mesh_key')
    expect(text).not.toContain('admission')
  })
})

describe('GET /ui: path traversal', () => {
  it('no path under /ui, however encoded, serves anything but the dashboard\'s own files: 404 (400, 414), never a file from elsewhere', async () => {
    const client = await as('client')
    const secrets = [
      readFileSync('/etc/passwd', 'utf8').slice(0, 40),
      readFileSync(join(bed.tlsDir, 'ca-key.pem'), 'utf8').slice(0, 60),
      '"name": "capmesh"',
      'export function uiRoutes'
    ]
    const attempts = [
      '/ui/../../etc/passwd', '/ui/../../../../../../etc/passwd', '/ui/..%2f..%2f..%2fetc%2fpasswd', '/ui/..%2F..%2F..%2Fetc%2Fpasswd',
      '/ui/%2e%2e/%2e%2e/etc/passwd', '/ui/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/ui/%252e%252e%252fetc%252fpasswd', '/ui/..%5c..%5cetc%5cpasswd',
      '/ui/..\\..\\etc\\passwd', '/ui/....//....//etc/passwd', '/ui/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd', '/ui/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd',
      '/ui/%2fetc%2fpasswd', '/ui//etc/passwd', '/ui/%00', '/ui/dashboard.js%00.html', '/ui/dashboard.js/../../../package.json',
      '/ui/..', '/ui/.', '/ui/%2e', '/ui/%2e%2e', '/ui/../package.json', '/ui/..%2fpackage.json', '/ui/..%2f..%2fpackage.json',
      '/ui/..%2fapi%2froutes%2fui.ts', '/ui/..%2f..%2ftls%2fca-key.pem', '/ui/package.json', '/ui/ui.ts', '/ui/__proto__', '/ui/constructor',
      '/ui/index.html/', '/ui/DASHBOARD.JS', '/ui/dashboard.js.map', '/ui/chart.umd.min.js.map', `/ui/${'..%2f'.repeat(200)}etc%2fpasswd`
    ]
    for (const path of attempts) {
      const r = await get(path, client)
      expect([400, 404, 414], `${path} → ${r.status}`).toContain(r.status)
      const body = r.body.toString()
      for (const s of secrets) expect(body, `${path} leaked a file`).not.toContain(s)
    }
    // And the controller is none the worse for it; `/ui/` is the page.
    expect((await get('/ui/dashboard.js', client)).status).toBe(200)
    const slash = await get('/ui/', client)
    expect(slash.status).toBe(200)
    expect(slash.body.equals((await get('/ui', client)).body)).toBe(true)
  })
})
