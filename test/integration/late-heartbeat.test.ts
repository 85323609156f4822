/**
 * A heartbeat sent before a failover and delivered after it. The agent left
 * controller x (its heartbeats there were late) and registered at y with a
 * higher incarnation; the request still travelling to x arrives when x
 * already knows the worker belongs to y. Adopting it then would pull the
 * worker back to x while it heartbeats y (and y would adopt it back): the
 * heartbeat carries its incarnation, and x answers 409 superseded instead.
 *
 * Real in-process controllers in a libp2p mesh, real HTTPS with the project
 * CA, a real agent, and a TCP proxy that delays what it forwards.
 */
import { connect, createServer, type Socket } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent, type WorkerAgentInit } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { SupersededError } from '../../src/errors.ts'
import type { Capability } from '../../src/registry/index.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
const agents: WorkerAgent[] = []
const proxies: Array<{ close: () => Promise<void> }> = []
const unhandled: unknown[] = []
const onUnhandled = (err: unknown): void => { unhandled.push(err) }

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  bed = await testBed('late-heartbeat')
})
afterAll(async () => {
  await bed.cleanup()
  process.off('unhandledRejection', onUnhandled)
})
afterEach(async () => {
  for (const p of proxies.splice(0)) await p.close()
  for (const a of agents.splice(0)) await a.stop()
  expect(unhandled, 'unhandled rejections').toEqual([])
})

describe('a heartbeat from an older attachment', () => {
  it('is answered 409 superseded and changes nothing (a drain too); without an incarnation (the platform\'s workers) it still moves the worker', async () => {
    const [x, y] = await mesh('s', 2)
    const w = 'late-1'
    expect((await post(x, '/register', registration(w, 1))).body).toMatchObject({ status: 'registered', incarnation: 1 })
    // The worker fails over to y, which every controller learns by gossip.
    expect((await post(y, '/register', registration(w, 2))).body).toMatchObject({ status: 'registered', incarnation: 2 })
    await eventually(() => x.core.registry.get(w)?.owner === y.config.id, 'x to learn that y owns the worker')
    const hashBefore = x.core.registryHash

    const late = await post(x, '/heartbeat', { worker_id: w, incarnation: 1 })
    expect(late.status).toBe(409)
    expect(late.body).toMatchObject({ error: 'superseded', code: 'CAPMESH_ERR_SUPERSEDED', worker_id: w, incarnation: 2, controller_id: y.config.id })
    // No adopt: nothing written (an adopt is a synchronous local write), no liveness entry made up.
    expect(x.core.registryHash).toBe(hashBefore)
    expect(x.core.registry.get(w)).toMatchObject({ owner: y.config.id, incarnation: 2 })
    expect(x.core.liveness.get(w)).toBeUndefined()
    // A drain from the old attachment is refused the same way.
    const lateDrain = await post(x, '/drain', { worker_id: w, incarnation: 1 })
    expect(lateDrain.status).toBe(409)
    expect(lateDrain.body).toMatchObject({ error: 'superseded', controller_id: y.config.id, incarnation: 2 })
    expect(x.core.registryHash).toBe(hashBefore)

    // The wire contract without `incarnation`: a heartbeat at another controller is a move.
    expect((await post(x, '/heartbeat', { worker_id: w })).body).toMatchObject({ status: 'acknowledged' })
    expect(x.core.registry.get(w)).toMatchObject({ owner: x.config.id, incarnation: 3 })
    await eventually(() => y.core.registry.get(w)?.owner === x.config.id, 'y to learn that x adopted the worker')
    // A heartbeat with an incarnation above the registry's is a move too, and keeps the worker's number.
    expect((await post(y, '/heartbeat', { worker_id: w, incarnation: 7 })).body).toMatchObject({ status: 'acknowledged' })
    expect(y.core.registry.get(w)).toMatchObject({ owner: y.config.id, incarnation: 7 })
  })

  it('end to end: the agent fails over away from a slow link, and its delayed heartbeat does not pull it back', async () => {
    const [x, y] = await mesh('e', 2)
    const link = await delayingProxy(x.url)
    // Watch what x does with each heartbeat (the real method runs; this only records).
    const seen: Array<{ incarnation?: number, outcome: string }> = []
    const real = x.core.heartbeat.bind(x.core)
    x.core.heartbeat = req => {
      try {
        const reply = real(req)
        seen.push({ incarnation: req.incarnation, outcome: 'status' in reply ? reply.status : 'not registered' })
        return reply
      } catch (err) {
        seen.push({ incarnation: req.incarnation, outcome: err instanceof SupersededError ? 'superseded' : String(err) })
        throw err
      }
    }
    const a = agent('late-2', [link.url, y.url], { affinity: x.config.id, failureThreshold: 3 })
    await a.start()
    expect(a.controller?.url).toBe(link.url)
    const first = a.incarnation
    await eventually(() => seen.some(s => s.outcome === 'acknowledged'), 'a heartbeat acknowledged by x')

    // What the agent sends on the link now takes 3 s to arrive: the next heartbeat answers late, three
    // late beats (0.6 s) move the worker to y, and that request, still on its way, reaches x after that.
    link.delayMs = 3_000
    await eventually(() => a.controller?.url === y.url, 'the failover to y')
    expect(a.incarnation).toBeGreaterThan(first)
    await eventually(() => x.core.registry.get('late-2')?.owner === y.config.id, 'x to learn of the failover')
    const mark = seen.length
    const delayed = await eventually(() => seen.slice(mark).find(s => s.incarnation === first), 'the delayed heartbeat to reach x', 15_000)

    expect(delayed?.outcome).toBe('superseded')
    expect(x.core.registry.get('late-2')).toMatchObject({ owner: y.config.id, incarnation: a.incarnation })
    expect(y.core.registry.get('late-2')).toMatchObject({ owner: y.config.id, incarnation: a.incarnation })
    expect(a.controller?.url).toBe(y.url)
    expect(a.counters.failovers).toBe(1)
    expect(a.counters.reregistrations).toBe(0)
    const r = await bed.client.json('POST', `${x.url}/route`, { verb: 'invoke', capability: 'cap-late-2' })
    expect(r.body).toMatchObject({ worker_id: 'late-2', controller_id: y.config.id })
  })

  it('an agent told its own attachment is superseded (the same worker id attached elsewhere, newer) registers again and wins', async () => {
    const [x, y] = await mesh('d', 2)
    const a = agent('late-3', [x.url, y.url], { affinity: x.config.id })
    const again: Array<{ controller: string, incarnation: number }> = []
    a.on('reregistered', e => { again.push(e) })
    await a.start()
    expect(a.controller?.url).toBe(x.url)
    // Someone registers the same id at y with a higher incarnation (an operator's mistake, a clone).
    const other = a.incarnation + 5
    expect((await post(y, '/register', registration('late-3', other))).body).toMatchObject({ status: 'registered', incarnation: other })
    await eventually(() => again.length > 0, 'the agent to register again')
    expect(again[0].controller).toBe(x.url)
    expect(again[0].incarnation).toBeGreaterThan(other)
    await eventually(() => [x, y].every(c => c.core.registry.get('late-3')?.owner === x.config.id), 'x to own the worker everywhere again')
    expect(a.controller?.url).toBe(x.url)
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

/** A real agent for worker `id` (capability `cap-<id>`), 200 ms heartbeats; stopped after the test. */
function agent (id: string, urls: string[], extra: Partial<WorkerAgentInit> = {}): WorkerAgent {
  const a = workerAgent({ workerId: id, workerUrl: `https://127.0.0.1:7000/${id}`, capabilities: [cap(`cap-${id}`)], controllers: urls, tls: bed.tls, heartbeatIntervalMs: 200, ...extra })
  a.on('error', () => {})
  agents.push(a)
  return a
}

function registration (id: string, incarnation: number): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap(`cap-${id}`)], incarnation }
}

async function post (c: Controller, path: string, body: unknown): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', `${c.url}${path}`, body)
}

async function mesh (prefix: string, n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: `${prefix}0` })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `${prefix}${i}`, bootstrap: [cs[0].p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), `a full mesh of ${n} controllers`, 15_000)
  return cs
}

/**
 * A TCP proxy on 127.0.0.1 to `target` that forwards every chunk from the
 * client, in order, `delayMs` after it arrived (0 at first): a congested
 * uplink. Answers come back at once.
 */
async function delayingProxy (target: string): Promise<{ url: string, delayMs: number, close: () => Promise<void> }> {
  const { hostname, port } = new URL(target)
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()
  const state = { url: '', delayMs: 0, close: async () => {} }
  const track = (s: Socket): Socket => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    return s
  }
  const forward = (to: Socket, d: Buffer): void => {
    if (state.delayMs === 0) { to.write(d); return }
    const t = setTimeout(() => { timers.delete(t); if (!to.destroyed) to.write(d) }, state.delayMs)
    timers.add(t)
  }
  const server = createServer(client => {
    track(client)
    const upstream = track(connect(Number(port), hostname))
    client.on('data', d => { forward(upstream, d) })
    upstream.on('data', d => { client.write(d) })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`
  state.close = async () => {
    for (const t of timers) clearTimeout(t)
    for (const s of sockets) s.destroy()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  }
  proxies.push(state)
  return state
}
