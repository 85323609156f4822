/**
 * Route client benchmark: what answering route() from a local copy buys,
 * measured in the same run against `/route` over HTTPS, and how stale the
 * copy is — the time from a registration at one controller to the copy of a
 * client that follows another.
 *
 *   npm run bench:route-client
 *   npm run bench:route-client -- --workers 10000 --routes 500000 --registrations 500
 *
 * Two controllers in this process (production defaults, loopback, a mesh of
 * two), --workers healthy workers registered at `a` over --capabilities
 * capabilities, and a route client (capmesh/client) following `b`:
 *
 * 1. local `route()` p50/p99 (each call timed; queries cycle through the
 *    capabilities) — the client's copy, routing's own Router;
 * 2. `POST /route` at `b` over HTTPS keep-alive, one request at a time on
 *    one connection (the latency one caller sees), same queries;
 * 3. --registrations registrations at `a` over HTTPS, one every --gap: from
 *    the request leaving to the worker in the client's copy (a's gossip to b,
 *    b's change log, b's SSE stream, the client's parser and index).
 *
 * Everything listens on 127.0.0.1 and is stopped before the script exits.
 * Flags: `npm run bench:route-client -- --help`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { routeClient, type RouteClient } from '../../src/client/index.ts'
import { resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { ensureTls, issueIdentity } from '../../src/tls/index.ts'
import { parseDuration } from '../../src/utils/duration.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import type { Capability, RouteQuery } from '../../src/wire/index.ts'
import { scriptArgs } from '../args.ts'

const HOST = '127.0.0.1'

const { values } = scriptArgs({
  script: 'bench:route-client',
  summary: `The route client (capmesh/client): local route() p50/p99 against POST /route over HTTPS in the
same run, and the time from a registration at one controller to the copy of a client following
another. Two controllers in this process, --workers workers at the first, the client follows the
second.`,
  options: {
    workers: { type: 'string', value: 'N', default: '1000', description: 'workers registered before measuring' },
    capabilities: { type: 'string', value: 'N', default: '10', description: 'capabilities they are spread over (queries cycle through them)' },
    routes: { type: 'string', value: 'N', default: '200000', description: 'local route() calls timed' },
    'http-routes': { type: 'string', value: 'N', default: '5000', description: 'POST /route requests timed (one at a time, one connection)' },
    registrations: { type: 'string', value: 'N', default: '200', description: 'registrations timed to the client\'s copy' },
    gap: { type: 'string', value: 'D', default: '20ms', description: 'pause between two timed registrations' }
  }
})

const int = (name: keyof typeof values): number => {
  const n = Number(values[name])
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`bench:route-client: --${name} must be a positive integer\n`)
    process.exit(2)
  }
  return n
}
const opts = {
  workers: int('workers'),
  capabilities: int('capabilities'),
  routes: int('routes'),
  httpRoutes: int('http-routes'),
  registrations: int('registrations'),
  gapMs: parseDuration(values.gap, '--gap')
}

const cap = (name: string): Capability => ({ name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 64 })

/** p50, p99 and max of `xs` (ms), sorted in place. */
function quantiles (xs: Float64Array | number[]): { p50: number, p99: number, max: number, mean: number } {
  const s = Float64Array.from(xs).sort()
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { p50: q(0.5), p99: q(0.99), max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length }
}
const us = (ms: number): string => `${(ms * 1000).toFixed(ms < 0.01 ? 2 : 1)} µs`
const msf = (ms: number): string => `${ms.toFixed(2)} ms`

async function main (): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'capmesh-bench-rc-'))
  const stops: Array<() => Promise<void>> = []
  try {
    const tlsDir = join(root, 'tls')
    const tls = await ensureTls({ dir: tlsDir, hosts: [HOST] })
    const op = await issueIdentity({ dir: tlsDir, role: 'operator', name: 'bench' })
    const cl = await issueIdentity({ dir: tlsDir, role: 'client', name: 'bench-routes' })
    const start = async (id: string, bootstrap: string[]): Promise<Controller> => {
      // Production defaults (30 s heartbeats and so on), as `capmesh controller` runs.
      const config = resolveControllerConfig({ id, host: HOST, httpsPort: 0, p2pPort: 0, dataDir: join(root, id), tlsDir, bootstrap, logLevel: 'silent' })
      const c = new Controller({ config })
      await c.start()
      stops.push(async () => { await c.stop() })
      return c
    }
    const a = await start('a', [])
    const b = await start('b', [a.p2p.multiaddrs[0]])
    const until = async (check: () => boolean, what: string, timeoutMs = 60_000): Promise<void> => {
      const end = performance.now() + timeoutMs
      while (!check()) {
        if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
        await new Promise(resolve => setTimeout(resolve, 10))
      }
    }
    await until(() => b.view.members().a?.status === 'alive', 'b to hear a')
    const caps = Array.from({ length: opts.capabilities }, (_, i) => `cap-${i}`)
    for (let i = 0; i < opts.workers; i++) {
      a.view.register({ worker_id: `w${i}`, worker_url: `https://${HOST}:7000/w${i}`, capabilities: [cap(caps[i % caps.length])] }, null)
      if (i % 500 === 499) await new Promise(resolve => setImmediate(resolve))
    }
    await until(() => b.view.stateCounts().healthy === opts.workers, `b to route ${opts.workers} healthy workers`)

    const t0 = performance.now()
    const rc: RouteClient = routeClient({ controllers: [b.url, a.url], tls: { ca: tls.ca, cert: cl.cert, key: cl.key } })
    stops.push(async () => { await rc.close() })
    await rc.start()
    const startMs = performance.now() - t0
    await until(() => rc.workers().length === opts.workers, 'the client\'s copy')
    console.log(`${opts.workers} workers over ${opts.capabilities} capabilities at a; route client following b: first snapshot in ${startMs.toFixed(0)} ms`)
    const queries: RouteQuery[] = caps.map(c => ({ verb: 'invoke', capability: c }))

    // 1. Local route(): warm up, then time every call.
    for (let i = 0; i < 20_000; i++) rc.route(queries[i % queries.length])
    const local = new Float64Array(opts.routes)
    const l0 = performance.now()
    for (let i = 0; i < opts.routes; i++) {
      const s = performance.now()
      rc.route(queries[i % queries.length])
      local[i] = performance.now() - s
    }
    const localSeconds = (performance.now() - l0) / 1000
    const lq = quantiles(local)

    // 2. POST /route at b, one at a time on one keep-alive connection.
    const http = httpsClient({ ca: tls.ca, cert: cl.cert, key: cl.key, connections: 1, timeoutMs: 10_000 })
    stops.push(async () => { await http.close() })
    for (let i = 0; i < 500; i++) await http.json('POST', `${b.url}/route`, queries[i % queries.length])
    const remote = new Float64Array(opts.httpRoutes)
    for (let i = 0; i < opts.httpRoutes; i++) {
      const s = performance.now()
      const res = await http.json('POST', `${b.url}/route`, queries[i % queries.length])
      remote[i] = performance.now() - s
      if (res.status !== 200) throw new Error(`/route answered ${res.status}: ${JSON.stringify(res.body)}`)
    }
    const rq = quantiles(remote)

    // 3. Registration at a → the copy of the client following b.
    const opClient = httpsClient({ ca: tls.ca, cert: op.cert, key: op.key, connections: 1, timeoutMs: 10_000 })
    stops.push(async () => { await opClient.close() })
    const seen = new Map<string, number>()
    rc.on('change', e => { if (e.event === 'worker_added') seen.set(e.data.worker.worker_id, performance.now()) })
    const lags: number[] = []
    const acks: number[] = []
    for (let i = 0; i < opts.registrations; i++) {
      const id = `late-${i}`
      const s = performance.now()
      const res = await opClient.json('POST', `${a.url}/register`, { worker_id: id, worker_url: `https://${HOST}:7000/${id}`, capabilities: [cap(caps[i % caps.length])] })
      if (res.status !== 200) throw new Error(`/register answered ${res.status}`)
      acks.push(performance.now() - s)
      await until(() => seen.has(id), `${id} in the client's copy`, 10_000)
      lags.push(seen.get(id)! - s)
      await new Promise(resolve => setTimeout(resolve, opts.gapMs))
    }
    const gq = quantiles(lags)
    const aq = quantiles(acks)

    console.log('\n=== route client benchmark ===')
    console.log(`node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map(l => l.toFixed(2)).join(' ')}, ${new Date().toISOString()}\n`)
    console.log('| what | calls | p50 | p99 | max |')
    console.log('|:--|--:|--:|--:|--:|')
    console.log(`| local route() (route client) | ${opts.routes} | ${us(lq.p50)} | ${us(lq.p99)} | ${us(lq.max)} |`)
    console.log(`| POST /route at b (HTTPS keep-alive, sequential) | ${opts.httpRoutes} | ${msf(rq.p50)} | ${msf(rq.p99)} | ${msf(rq.max)} |`)
    console.log(`| registration at a → client following b | ${opts.registrations} | ${msf(gq.p50)} | ${msf(gq.p99)} | ${msf(gq.max)} |`)
    console.log(`| (POST /register at a answered) | ${opts.registrations} | ${msf(aq.p50)} | ${msf(aq.p99)} | ${msf(aq.max)} |`)
    console.log(`\nlocal route(): ${(opts.routes / localSeconds / 1e6).toFixed(2)} M calls/s timed one by one (performance.now() around each call included); ` +
      `${(rq.p50 / lq.p50).toFixed(0)}× faster than /route at the median`)
    console.log(`client: ${rc.counters.snapshots} snapshot(s), ${rc.counters.events} events, ${rc.counters.connects} stream(s)`)
  } finally {
    for (const stop of stops.reverse()) await stop().catch(err => { console.error('cleanup:', err) })
    rmSync(root, { recursive: true, force: true })
  }
}

main().catch(err => {
  console.error(err)
  process.exitCode = 1
})
