/**
 * `npm start` and `capmesh local`: a mesh on loopback in one command.
 * Controllers run as real child processes (`capmesh controller --config`),
 * share one CA, and find each other through their bootstrap lists; demo
 * workers (`capmesh worker`: real agents serving HTTPS) attach to different
 * controllers. The
 * demo then proves the point: it routes through a controller the worker is
 * *not* attached to, and prints the curl to do the same. Ctrl-C stops all.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { readConfigFile } from '../config.ts'
import { MESH_KEY_FILE } from '../constants.ts'
import { ensureMeshKey } from '../gossip/index.ts'
import { ensureTls, issueIdentity } from '../tls/index.ts'
import { httpsClient } from '../utils/https-client.ts'
import { spawnController, spawnWorker, type ChildController, type ChildWorker } from '../launch/index.ts'
import { stopOnSignal } from './signals.ts'

export interface MeshRunInit {
  /** Config files of the controllers to start. */
  configs: string[]
  /** Demo workers to attach, spread over the controllers. @default 2 per controller, at most 3 */
  workers?: number
  /** Keep running until Ctrl-C. @default true */
  wait?: boolean
}

interface DemoWorker {
  id: string
  cap: string
  controller: ChildController
  child: ChildWorker
}

const CAPS = ['echo', 'upper', 'reverse']

/** Writes configs for an N-controller loopback mesh (`capmesh local`) and returns their paths. */
export function generateLocalConfigs (n: number, opts: { root: string, httpsBase: number, p2pBase: number }): string[] {
  const dir = resolve(opts.root, `local-${n}`)
  mkdirSync(dir, { recursive: true })
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`)
  return ids.map((id, i) => {
    const file = join(dir, `${id}.json`)
    // Each joins through up to three others: enough to find the rest through their digests.
    const peers = [1, 2, 3].map(k => (i + k) % n).filter((j, k, all) => j !== i && all.indexOf(j) === k)
    writeFileSync(file, JSON.stringify({
      id,
      host: '127.0.0.1',
      httpsPort: opts.httpsBase + i,
      p2pPort: opts.p2pBase + i,
      dataDir: join(dir, id),
      tlsDir: resolve(opts.root, 'tls'),
      bootstrap: peers.map(j => `/ip4/127.0.0.1/tcp/${opts.p2pBase + j}`),
      heartbeatInterval: '2s',
      unhealthyAfter: '6s',
      staleAfter: '12s',
      logLevel: 'info'
    }, null, 2) + '\n')
    return file
  })
}

export async function runMesh (init: MeshRunInit): Promise<{ controllers: ChildController[], stop: () => Promise<void> }> {
  const configs = init.configs.map(f => ({ file: f, cfg: readConfigFile(f) }))
  const tlsDirs = new Set(configs.map(c => resolve(c.cfg.tlsDir ?? join(c.cfg.dataDir ?? '.capmesh', 'tls'))))
  if (tlsDirs.size !== 1) throw new Error('the demo expects every controller to share one TLS dir')
  const tlsDir = [...tlsDirs][0]
  // Create the shared CA and mesh key once, before the controllers race for them, and the identities
  // the demo and its printed commands call with: an operator (status, state) and a client (route, curl).
  const tls = await ensureTls({ dir: tlsDir })
  const operator = await ensureIdentity(tlsDir, 'operator')
  const clientId = await ensureIdentity(tlsDir, 'client')
  const meshKeys = new Set(configs.map(c => resolve(c.cfg.meshKey ?? join(tlsDir, MESH_KEY_FILE))))
  for (const k of meshKeys) ensureMeshKey(k)
  const controllers: ChildController[] = []
  const stopAll = async (): Promise<void> => { await Promise.all(controllers.map(async c => { await c.stop() })) }
  try {
    await Promise.all(configs.map(async ({ file, cfg }) => {
      const id = cfg.id ?? file
      const c = await spawnController({ id, args: ['--config', file], onLog: line => { printLog(id, line) } })
      controllers.push(c)
    }))
  } catch (err) {
    await stopAll()
    throw err
  }
  controllers.sort((a, b) => a.id < b.id ? -1 : 1)
  const client = httpsClient({ ca: tls.ca, cert: operator.cert, key: operator.key, timeoutMs: 5000 })

  await waitFor(async () => {
    const meshes = await Promise.all(controllers.map(async c => (await client.json('GET', `${c.url}/mesh`)).body))
    return meshes.every(m => (m.connected_peers as number) >= controllers.length - 1)
  }, 20_000)
  console.log(`\nmesh formed: ${controllers.length} controllers, every one connected to every other`)

  const n = init.workers ?? Math.min(3, controllers.length * 2)
  const all = controllers.map(c => c.url).join(',')
  const workers: DemoWorker[] = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const controller = controllers[i % controllers.length]
    const cap = CAPS[i % CAPS.length]
    const id = `demo-${cap}-${i + 1}`
    // Affinity pins each demo worker to a different controller; the full list is its failover list.
    const child = await spawnWorker({
      id,
      args: ['--capability', `invoke:${cap}@1.0.0`, '--controllers', all, '--tls-dir', tlsDir, '--heartbeat-interval', '1s', '--affinity', controller.id],
      onLine: line => { console.log(line) }
    })
    return { id, cap, controller, child }
  }))
  console.log(`started ${workers.length} demo workers (real agents), attached to ${[...new Set(workers.map(w => w.controller.id))].join(', ')}`)

  // Route through a controller the first worker is NOT attached to.
  const w = workers.find(x => x.cap === 'upper') ?? workers[0]
  if (w == null) {
    console.log('no demo workers requested; the mesh is running. Ctrl-C stops it.')
    if (init.wait !== false) stopOnSignal(stopAll)
    return { controllers, stop: stopAll }
  }
  const via = controllers.find(c => c.id !== w.controller.id) ?? w.controller
  const cap = w.cap
  const t0 = performance.now()
  const routed = await waitFor(async () => {
    const r = await client.json('POST', `${via.url}/route`, { verb: 'invoke', capability: cap })
    return r.status === 200 ? r.body : null
  }, 10_000)
  console.log(`\n${cap} is attached to ${w.controller.id}; ${via.id} routed to it after ${Math.round(performance.now() - t0)} ms:\n  ${JSON.stringify(routed)}`)
  console.log(`
capmesh local mesh running
${controllers.map(c => `  ${c.id.padEnd(4)} ${c.url}   p2p ${c.p2p[0]}   pid ${c.pid}`).join('\n')}
  CA   ${tls.caPath}
  mesh key ${[...meshKeys].join(', ')}

Route via ${via.id} (the worker is attached to ${w.controller.id}):
  # as the client identity ${clientId.id}: every caller presents one
  curl --cacert ${tls.caPath} --cert ${clientId.certPath} --key ${clientId.keyPath} -X POST ${via.url}/route -H 'content-type: application/json' -d '{"verb":"invoke","capability":"${cap}"}'
Route and call the worker:
  npx capmesh route --verb invoke --capability ${cap} --controller ${via.url} --tls-dir ${tlsDir} --invoke "hello mesh"
Watch a failover: kill controller ${w.controller.id} (kill ${w.controller.pid}) and route again via ${via.id}.
More:
  npx capmesh status ${controllers.map(c => `--controller ${c.url}`).join(' ')} --tls-dir ${tlsDir}
  curl --cacert ${tls.caPath} --cert ${clientId.certPath} --key ${clientId.keyPath} ${controllers[0].url}/workers
  curl --cacert ${tls.caPath} --cert ${operator.certPath} --key ${operator.keyPath} ${controllers[0].url}/mesh
  curl --cacert ${tls.caPath} --cert ${operator.certPath} --key ${operator.keyPath} ${controllers[0].url}/metrics
Every caller needs an identity: issue more with npx capmesh certs issue --dir ${tlsDir} --role worker|client|operator|metrics --name NAME
  npx capmesh route --verb invoke --capability echo --controller ${controllers.at(-1)!.url} --tls-dir ${tlsDir}

Ctrl-C stops everything.`)

  const stop = async (): Promise<void> => {
    await Promise.all(workers.map(async x => { await x.child.stop() }))
    await client.close()
    await stopAll()
  }
  if (init.wait !== false) stopOnSignal(stop)
  return { controllers, stop }
}

async function waitFor<T> (check: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < end) {
    try {
      const v = await check()
      if (v != null && v !== false) return v
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timed out${last != null ? `: ${String(last)}` : ''}`)
}

const SHOWN = new Set(['controller a is alive', 'created a local development CA'])

/** One readable line per interesting controller log event (the rest stays quiet). */
function printLog (id: string, line: Record<string, unknown> | string): void {
  if (typeof line === 'string') {
    console.log(`[${id}] ${line}`)
    return
  }
  const msg = String(line.msg ?? '')
  const level = Number(line.level ?? 30)
  if (level >= 40 || msg.startsWith('controller ') || SHOWN.has(msg)) console.log(`[${id}] ${msg}`)
}

/** The identity `<dir>/<role>.pem` named after its role, issued by the local CA if missing. */
async function ensureIdentity (dir: string, role: 'operator' | 'client'): Promise<{ id: string, cert: string, key: string, certPath: string, keyPath: string }> {
  const certPath = join(dir, `${role}.pem`)
  const keyPath = join(dir, `${role}-key.pem`)
  if (existsSync(certPath) && existsSync(keyPath)) return { id: `spiffe://capmesh.local/${role}/${role}`, cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), certPath, keyPath }
  const issued = await issueIdentity({ dir, role, name: role })
  return { id: issued.id, cert: issued.cert, key: issued.key, certPath: issued.certPath, keyPath: issued.keyPath }
}
