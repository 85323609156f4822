import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ControllerView } from '../../core/index.ts'
import { DashboardMeshReply, ErrorBody, type DashboardController } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** Where the dashboard's own files are (src/ui/). */
const UI_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../ui')

/**
 * Chart.js's self-contained browser build: it is not in the package's
 * "exports", it sits beside the main entry (as the simulation report
 * inlines it, src/sim/report.ts).
 */
const chartJsPath = (): string => join(dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.min.js')

/**
 * The dashboard's files, by the name under /ui/ that serves each: a fixed
 * list, read once when the API is built. A request names one of these keys
 * or gets a 404: no path from a request ever reaches the file system.
 */
const ASSETS: ReadonlyArray<{ name: string, path: () => string, type: string }> = [
  { name: 'index.html', path: () => join(UI_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  { name: 'dashboard.css', path: () => join(UI_DIR, 'dashboard.css'), type: 'text/css; charset=utf-8' },
  { name: 'dashboard.js', path: () => join(UI_DIR, 'dashboard.js'), type: 'text/javascript; charset=utf-8' },
  { name: 'icon.svg', path: () => join(UI_DIR, 'icon.svg'), type: 'image/svg+xml' },
  { name: 'chart.umd.min.js', path: chartJsPath, type: 'text/javascript; charset=utf-8' }
]

/**
 * Only this origin's own files and its own `/watch` and `/ui/mesh`: the
 * page loads nothing from anywhere else (it works offline), runs no inline
 * script, and cannot be framed.
 */
const HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  // Small files that change with the controller's version: revalidated, never served stale.
  'cache-control': 'no-cache'
}

/**
 * GET /ui — the live dashboard (src/ui/): the mesh, workers by capability
 * and state, the `/watch` feed, propagation latency and failovers as they
 * happen. `GET /ui/<file>` serves the dashboard's files from a fixed list;
 * `GET /ui/mesh` is its view of the mesh (a client's share of `/health` and
 * `/mesh`: no peer ids, keys or allow list), polled by the page. Clients
 * and operators may open it; the browser presents a client certificate
 * (or a proxy in front of it a bearer token).
 */
export function uiRoutes (app: Api, { view }: ApiComponents): void {
  const files = new Map(ASSETS.map(a => [a.name, { body: readFileSync(a.path()), type: a.type }]))
  const config = { access: ['client' as const] }
  const serve = (name: string): { body: Buffer, type: string } | undefined => files.get(name)

  app.get('/ui', { config, schema: { hide: true } }, async (_req, reply) => {
    const f = serve('index.html')!
    return await reply.headers(HEADERS).type(f.type).send(f.body)
  })

  app.get('/ui/mesh', {
    config,
    schema: { summary: 'The mesh as the dashboard shows it (controllers, links, registry hashes, self-preservation)', response: { 200: DashboardMeshReply } }
  }, async (_req, reply) => {
    void reply.header('cache-control', 'no-store')
    return dashboardMesh(view)
  })

  app.get<{ Params: { file: string } }>('/ui/:file', { config, schema: { hide: true, response: { 404: ErrorBody } } }, async (req, reply) => {
    // A lookup in the fixed list, nothing else: '..', '../../etc/passwd' (however encoded), '__proto__' are not in it.
    // `/ui/` is the page too (people type it).
    const f = serve(req.params.file === '' ? 'index.html' : req.params.file)
    if (f == null) {
      return await reply.code(404).send({ error: 'not_found', code: 'CAPMESH_ERR_NOT_FOUND', message: 'no such dashboard file' })
    }
    return await reply.headers(HEADERS).type(f.type).send(f.body)
  })
}

/** What `GET /ui/mesh` answers: this controller first, then the others by id. */
export function dashboardMesh (view: ControllerView): DashboardMeshReply {
  const mesh = view.mesh()
  const health = view.health()
  const links = new Map<string, DashboardController['link']>()
  for (const p of mesh.peers) {
    if (p.controller_id == null) continue
    // One peer id per controller, but a restarted one may be listed twice: a connected entry wins.
    if (links.get(p.controller_id)?.connected === true) continue
    links.set(p.controller_id, { connected: p.connected, in_sync: p.in_sync, last_sync_ms: p.last_sync_ms, sync_state: p.sync_state })
  }
  const self: DashboardController = {
    controller_id: mesh.controller_id,
    self: true,
    status: 'alive',
    last_heard_ms_ago: null,
    registry_hash: mesh.registry_hash,
    self_preservation: mesh.self_preservation.workers || mesh.self_preservation.peers,
    link: null
  }
  const others = Object.entries(mesh.owners)
    .filter(([id]) => id !== mesh.controller_id)
    .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    .map(([id, m]): DashboardController => ({
      controller_id: id,
      self: false,
      status: m.status,
      last_heard_ms_ago: m.last_heard_ms_ago,
      registry_hash: m.registry_hash,
      self_preservation: m.self_preservation,
      link: links.get(id) ?? null
    }))
  return {
    controller_id: mesh.controller_id,
    now: new Date().toISOString(),
    status: health.status,
    registry_hash: mesh.registry_hash,
    self_preservation: mesh.self_preservation,
    workers: health.workers,
    config: health.config,
    controllers: [self, ...others]
  }
}
