/**
 * The demo worker CLI end to end: `capmesh worker` as a child process (its
 * own HTTPS endpoint with a certificate from the project CA, attached
 * through the agent) against real in-process controllers; `capmesh route
 * --invoke` as a child process calls it through a controller; the worker
 * logs its failover; SIGTERM drains and deregisters it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { spawnWorker, type ChildWorker } from '../../src/launch/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { capmesh } from '../helpers/cli.ts'
import { scrape } from '../helpers/metrics.ts'

let bed: TestBed
const workers: ChildWorker[] = []
const controllers: Controller[] = []

beforeAll(async () => { bed = await testBed('agent-cli') })
afterAll(async () => { await bed.cleanup() })
afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop()
  for (const c of controllers.splice(0)) await c.stop()
})

describe('capmesh worker / capmesh route --invoke', () => {
  it('a worker started from the CLI serves its capability through a controller, and SIGTERM deregisters it', async () => {
    const c = await start('cli0')
    const lines: string[] = []
    const w = await worker('cli-w1', ['--capability', 'invoke:upper@1.0.0', '--controllers', c.url], lines)
    expect(w.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(lines.some(l => l.includes('[cli-w1] attached to cli0') && l.includes('(start'))).toBe(true)

    const out = await capmesh(['route', '--verb', 'invoke', '--capability', 'upper', '--controller', c.url, '--tls-dir', bed.tlsDir, '--invoke', 'hello mesh'])
    expect(out.code).toBe(0)
    const [routed, invoked] = jsonDocuments(out.stdout)
    expect(routed).toMatchObject({ worker_id: 'cli-w1', worker_url: w.url, controller_id: 'cli0', state: 'healthy' })
    expect(invoked).toEqual({ worker_id: 'cli-w1', capability: 'upper', result: 'HELLO MESH' })

    await w.stop()
    expect(w.process.exitCode).toBe(0)
    // Deregistered on the way out, not merely expired later.
    const gone = await bed.client.json('POST', `${c.url}/route`, { verb: 'invoke', capability: 'upper' })
    expect(gone.status).toBe(404)
    const after = await capmesh(['route', '--verb', 'invoke', '--capability', 'upper', '--controller', c.url, '--tls-dir', bed.tlsDir])
    expect(after.code).toBe(1)
    expect(jsonDocuments(after.stdout)[0]).toMatchObject({ error: 'no_worker_available' })
  })

  it('the worker logs its failover in one line, counts it at its /metrics, and stays invokable through the other controller', async () => {
    const a = await start('cli-a')
    const b = await start('cli-b')
    const aUrl = a.url
    const lines: string[] = []
    const w = await worker('cli-w2', ['--capability', 'invoke:reverse', '--controllers', `${a.url},${b.url}`, '--affinity', 'cli-a'], lines)
    expect(lines.some(l => l.includes('[cli-w2] attached to cli-a'))).toBe(true)

    await a.stop()
    const failover = await eventually(() => lines.find(l => l.includes('[cli-w2] FAILOVER')), 'a FAILOVER line')
    expect(failover).toContain(`${aUrl} -> ${b.url}`)
    // The worker's own /metrics (its HTTPS server, the mesh's CA): the agent's state and counters.
    const m = await eventually(async () => {
      const s = await scrape(bed.client, w.url)
      return s.sum('capmesh_agent_heartbeats_total', { result: 'ok' }) > 0 && s.sum('capmesh_agent_state', { state: 'attached' }) === 1 ? s : null
    }, 'the worker to heartbeat b')
    expect(m!.sum('capmesh_agent_failovers_total')).toBe(1)
    expect(m!.samples.find(x => x.name === 'capmesh_agent_info')?.labels).toEqual({ worker_id: 'cli-w2', controller_id: 'cli-b' })
    expect(m!.sum('capmesh_agent_registrations_total', { result: 'ok' })).toBeGreaterThanOrEqual(2)
    expect(m!.sum('capmesh_agent_heartbeats_total', { result: 'failed' })).toBeGreaterThanOrEqual(2)
    expect(m!.sum('capmesh_agent_incarnation')).toBeGreaterThanOrEqual(2)
    const out = await capmesh(['route', '--verb', 'invoke', '--capability', 'reverse', '--controller', b.url, '--tls-dir', bed.tlsDir, '--invoke', 'abc'])
    expect(out.code).toBe(0)
    expect(jsonDocuments(out.stdout)[1]).toMatchObject({ worker_id: 'cli-w2', result: 'cba' })
  })
})

// ----------------------------------------------------------------- helpers

async function start (id: string): Promise<Controller> {
  const c = await bed.start({ id })
  controllers.push(c)
  return c
}

async function worker (id: string, args: string[], lines: string[]): Promise<ChildWorker> {
  // The controllers expect a heartbeat every 200 ms (local preset).
  const w = await spawnWorker({ id, args: [...args, '--tls-dir', bed.tlsDir, '--heartbeat-interval', '200ms'], onLine: l => { lines.push(l) } })
  workers.push(w)
  return w
}

/** `capmesh route` prints pretty-printed JSON documents one after the other. */
function jsonDocuments (text: string): any[] {
  return text.split(/\n(?=\{)/).filter(s => s.trim().length > 0).map(s => JSON.parse(s))
}
