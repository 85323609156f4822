/**
 * Worker agent, draining and shutdown, against a real in-process mesh of
 * three controllers over HTTPS: `drain()` keeps the worker listed as
 * `draining` everywhere and out of every controller's routes (also across
 * heartbeats and a failover); `stop()` deregisters it (404 at /route) and
 * stops heartbeating.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { Capability } from '../../src/registry/index.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let mesh: Controller[]
const agents: WorkerAgent[] = []

beforeEach(async () => {
  bed = await testBed('agent-drain')
  mesh = await startMesh(3)
})
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop()
  await bed.cleanup()
})

describe('drain and stop', () => {
  it('drain(): listed as draining at every controller, never routed to, across heartbeats', async () => {
    const [d0, d1] = mesh
    const a = agent('dr1', [d0.url, d1.url], d0.config.id)
    const b = agent('dr2', [d0.url, d1.url], d1.config.id)
    await Promise.all([a.start(), b.start()])
    for (const c of mesh) {
      for (const id of ['dr1', 'dr2']) await eventually(async () => (await route(c, `cap-${id}`)).status === 200, `${id} routable at ${c.config.id}`)
    }
    // A controller prefers the workers attached to it: d0 routes `shared` to dr1 while it is not draining.
    expect((await route(d0, 'shared')).body.worker_id).toBe('dr1')

    const draining: Array<{ controller: string | null }> = []
    a.on('draining', e => { draining.push(e) })
    await a.drain()
    expect(draining).toEqual([{ controller: d0.url }])
    expect(a.state).toBe('draining')
    expect(await stateAt(d0, 'dr1')).toBe('draining')
    for (const c of mesh) await eventually(async () => await stateAt(c, 'dr1') === 'draining', `dr1 draining at ${c.config.id}`)

    // Heartbeats go on (they carry the draining status): it stays draining, still listed, not routed to.
    const beats = a.counters.heartbeats.ok
    await eventually(() => a.counters.heartbeats.ok >= beats + 3, 'three more heartbeats')
    for (const c of mesh) {
      expect(await stateAt(c, 'dr1')).toBe('draining')
      for (let i = 0; i < 6; i++) {
        const r = await route(c, 'shared')
        expect(r.status).toBe(200)
        expect(r.body.worker_id).toBe('dr2')
      }
      const own = await route(c, 'cap-dr1')
      expect(own.status).toBe(503)
      expect(own.body.code).toBe('CAPMESH_ERR_NO_HEALTHY_WORKER')
    }
  })

  it('stop(): deregistered (404 at /route everywhere), event stopped, no more heartbeats', async () => {
    const [d0, d1] = mesh
    const a = agent('st1', [d0.url, d1.url], d0.config.id)
    await a.start()
    for (const c of mesh) await eventually(async () => (await route(c, 'cap-st1')).status === 200, `st1 routable at ${c.config.id}`)

    let stopped = 0
    a.on('stopped', () => { stopped++ })
    await a.stop()
    expect(stopped).toBe(1)
    expect(a.state).toBe('stopped')
    // Deregistered before stop() resolved: gone at its controller at once, not after a stale timeout.
    const gone = await route(d0, 'cap-st1')
    expect(gone.status).toBe(404)
    expect(gone.body.code).toBe('CAPMESH_ERR_NO_WORKER')
    for (const c of mesh) {
      await eventually(async () => (await route(c, 'cap-st1')).status === 404, `st1 gone at ${c.config.id}`)
      expect(await stateAt(c, 'st1')).toBeUndefined()
    }
    const beats = a.counters.heartbeats.ok + a.counters.heartbeats.failed
    await new Promise(resolve => setTimeout(resolve, 3 * 200))
    expect(a.counters.heartbeats.ok + a.counters.heartbeats.failed).toBe(beats)
    await a.stop()
    expect(stopped).toBe(1)
  })

  it('stop() while its controller is down deregisters at another one: gone everywhere at once, not after the owner returns', async () => {
    const [d0, d1, d2] = mesh
    // Heartbeats every 5 s: the agent is still attached to d0 when it stops.
    const a = agent('st2', [d0.url, d1.url, d2.url], d0.config.id, 5_000)
    await a.start()
    for (const c of mesh) await eventually(async () => (await route(c, 'cap-st2')).status === 200, `st2 routable at ${c.config.id}`)
    const d0Url = d0.url
    await d0.stop()
    expect(a.controller?.url).toBe(d0Url)
    await a.stop()
    // Removed at once by the controller that took the deregistration, while d0 is not yet counted as
    // gone anywhere (which takes a stale window and would also drop d0's entries).
    expect([d1, d2].some(c => c.core.registry.get('st2') == null)).toBe(true)
    expect([d1, d2].map(c => c.core.membership.get('d0')?.status)).not.toContain('gone')
    for (const c of [d1, d2]) {
      await eventually(async () => (await route(c, 'cap-st2')).status === 404, `st2 gone at ${c.config.id}`, 3_000)
      expect(await stateAt(c, 'st2')).toBeUndefined()
    }
  })

  it('a draining worker stays draining when it fails over to another controller', async () => {
    const [d0, d1, d2] = mesh
    const d0Url = d0.url
    const a = agent('dr3', [d0.url, d1.url, d2.url], d0.config.id)
    const b = agent('dr4', [d1.url, d2.url], d1.config.id)
    await Promise.all([a.start(), b.start()])
    await a.drain()
    await d0.stop()
    await eventually(() => a.counters.failovers === 1, 'dr3 failed over')
    expect(a.controller?.url).not.toBe(d0Url)
    expect(a.state).toBe('draining')
    for (const c of [d1, d2]) {
      await eventually(async () => {
        const r = (await get(c, '/workers')).body.workers.find((w: { worker_id: string }) => w.worker_id === 'dr3')
        return r?.controller_id === a.controller?.id && r?.state === 'draining'
      }, `dr3 draining at ${c.config.id} under its new controller`)
      for (let i = 0; i < 4; i++) expect((await route(c, 'shared')).body.worker_id).toBe('dr4')
    }
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

/** Worker `id` offers `shared` and its own `cap-<id>`. */
function agent (id: string, urls: string[], affinity: string, heartbeatIntervalMs = 200): WorkerAgent {
  const a = workerAgent({
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/${id}`,
    capabilities: [cap('shared'), cap(`cap-${id}`)],
    controllers: urls,
    tls: bed.tls,
    heartbeatIntervalMs,
    affinity
  })
  a.on('error', () => {})
  agents.push(a)
  return a
}

async function get (c: Controller, path: string): Promise<{ status: number, body: any }> {
  return await bed.client.json('GET', c.url + path)
}

async function route (c: Controller, capability: string): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', `${c.url}/route`, { verb: 'invoke', capability })
}

async function stateAt (c: Controller, workerId: string): Promise<string | undefined> {
  const res = await get(c, '/workers')
  expect(res.status).toBe(200)
  return res.body.workers.find((w: { worker_id: string }) => w.worker_id === workerId)?.state
}

async function startMesh (n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: 'd0' })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `d${i}`, bootstrap: [cs[0].p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), `a full mesh of ${n} controllers`, 15_000)
  return cs
}
