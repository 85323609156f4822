/**
 * `npm run bench:footprint` — what an idle mesh costs in memory: three
 * controllers (child processes, `capmesh controller`, one mesh, no workers
 * registered but the demo worker) and one demo worker (`capmesh worker`,
 * the agent serving its capability over HTTPS). After `--settle`, prints
 * each process's resident set (VmRSS) and peak (VmHWM) from /proc.
 *
 * `--cli` runs another checkout's `bin/capmesh.js` instead of this one's, so
 * two versions can be compared in the same run, on the same machine:
 *
 *   npm run bench:footprint
 *   npm run bench:footprint -- --cli /path/to/other/checkout/bin/capmesh.js
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnController, spawnWorker, type ChildController, type ChildWorker } from '../../src/launch/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { scriptArgs } from '../args.ts'

const { values } = scriptArgs({
  script: 'bench:footprint',
  summary: `Resident memory of an idle 3-controller mesh and one demo worker (capmesh worker), each its
own process, read from /proc once they settled.`,
  options: {
    cli: { type: 'string', value: 'FILE', description: 'the capmesh script to run (default: this checkout\'s bin/capmesh.js)' },
    settle: { type: 'string', value: 'D', default: '10s', description: 'wait this long after the worker attached before reading' }
  }
})
const SETTLE_MS = parseDuration(values.settle, '--settle')

function status (pid: number): { rss: number, peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) / 1024
  return { rss: kb('VmRSS'), peak: kb('VmHWM') }
}

const root = mkdtempSync(join(tmpdir(), 'capmesh-footprint-'))
const tlsDir = join(root, 'tls')
await ensureTls({ dir: tlsDir })
// The worker's certificates (to serve, and its identity) exist already, as on a deployed host (the
// demo worker issues its own only when they are missing, loading the certificate generator for that).
await ensureTls({ dir: tlsDir, hosts: ['127.0.0.1'], name: 'worker-w1' })
await issueIdentity({ dir: tlsDir, role: 'worker', name: 'w1' })
const controllers: ChildController[] = []
let worker: ChildWorker | null = null
try {
  for (const id of ['a', 'b', 'c']) {
    const bootstrap = controllers.flatMap(c => ['--bootstrap', c.p2p[0]])
    controllers.push(await spawnController({
      id,
      cli: values.cli,
      args: ['--id', id, '--https-port', '0', '--p2p-port', '0', '--data-dir', join(root, id), '--tls-dir', tlsDir, ...bootstrap]
    }))
  }
  worker = await spawnWorker({
    id: 'w1',
    cli: values.cli,
    args: ['--capability', 'invoke:echo', '--controllers', controllers.map(c => c.url).join(','), '--tls-dir', tlsDir, '--heartbeat-interval', '1s']
  })
  await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
  console.log(`bench:footprint  ${new Date().toISOString()}  load ${loadavg().map(l => l.toFixed(2)).join(' ')}  cli ${values.cli ?? 'this checkout'}`)
  for (const c of controllers) {
    const s = status(c.pid)
    console.log(`  controller ${c.id}   RSS ${s.rss.toFixed(0).padStart(4)} MB   peak ${s.peak.toFixed(0).padStart(4)} MB`)
  }
  const w = status(worker.pid)
  console.log(`  worker w1      RSS ${w.rss.toFixed(0).padStart(4)} MB   peak ${w.peak.toFixed(0).padStart(4)} MB`)
} finally {
  await worker?.stop()
  await Promise.all(controllers.map(async c => { await c.stop() }))
  rmSync(root, { recursive: true, force: true })
}
