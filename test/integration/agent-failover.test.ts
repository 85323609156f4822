/**
 * Worker agent, failover: real controllers (an in-process mesh of three, and
 * `capmesh controller` child processes for restarts on the same port) and
 * real agents over HTTPS with the project CA.
 *
 * - The controller a worker is attached to stops: the worker fails over and
 *   is routable from every surviving controller with a newer incarnation.
 * - Every controller is gone: the agent is detached, keeps trying, and
 *   attaches again when a controller comes back.
 * - A controller restarts with an empty data dir on the same port: the
 *   agent gets `worker_not_registered` and re-registers at the next heartbeat.
 */
import { rmSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent, type WorkerAgentInit } from '../../src/agent/index.ts'
import { spawnController, type ChildController } from '../../src/launch/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { NoControllerError } from '../../src/errors.ts'
import type { Capability } from '../../src/registry/index.ts'
import { freePort, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
const agents: WorkerAgent[] = []
const controllers: Controller[] = []
const children: ChildController[] = []
const proxies: Array<{ close: () => Promise<void> }> = []
const unhandled: unknown[] = []
const onUnhandled = (err: unknown): void => { unhandled.push(err) }

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  bed = await testBed('agent-failover')
})
afterAll(async () => {
  await bed.cleanup()
  process.off('unhandledRejection', onUnhandled)
})
afterEach(async () => {
  // Proxies first: a frozen one would hold up the agents' final deregistration.
  for (const p of proxies.splice(0)) await p.close()
  for (const a of agents.splice(0)) await a.stop()
  for (const c of controllers.splice(0)) await c.stop()
  for (const ch of children.splice(0)) await ch.stop()
  expect(unhandled, 'unhandled rejections').toEqual([])
})

describe('failover', () => {
  it('killing the controller workers are attached to: they attach elsewhere and are routable from every survivor, newer incarnation', async () => {
    const [x, y, z] = await startMesh('k', 3)
    const xUrl = x.url
    const moved = ['f1', 'f2', 'f3'].map(id => agent(id, [x.url, y.url, z.url], { affinity: x.config.id }))
    const bystander = agent('f4', [x.url, y.url, z.url], { affinity: y.config.id })
    const failovers = new Map<string, Array<{ from: string, to: string, incarnation: number }>>()
    const failedBeats = new Map<string, number[]>()
    for (const a of [...moved, bystander]) {
      failovers.set(a.workerId, [])
      failedBeats.set(a.workerId, [])
      a.on('failover', f => { failovers.get(a.workerId)!.push(f) })
      a.on('heartbeat_failed', f => { failedBeats.get(a.workerId)!.push(f.consecutive) })
    }
    await Promise.all([...moved, bystander].map(async a => { await a.start() }))

    const before = new Map<string, number>()
    for (const a of moved) {
      expect(a.controller?.id).toBe(x.config.id)
      for (const c of [x, y, z]) {
        const r = await eventually(async () => {
          const res = await route(c, a.workerId)
          return res.status === 200 && res.body.controller_id === x.config.id ? res.body : null
        }, `${a.workerId} routable at ${c.config.id} before the kill`)
        before.set(a.workerId, r.incarnation)
      }
    }

    await x.stop()

    for (const a of moved) {
      await eventually(() => failovers.get(a.workerId)!.length === 1, `${a.workerId} failed over`)
      const f = failovers.get(a.workerId)![0]
      expect(f.from).toBe(xUrl)
      expect([y.url, z.url]).toContain(f.to)
      expect(a.controller?.url).toBe(f.to)
      expect(a.counters.failovers).toBe(1)
      // It took the threshold of consecutive failures (default 2) to move.
      expect(failedBeats.get(a.workerId)!.slice(0, 2)).toEqual([1, 2])
      for (const c of [y, z]) {
        const r = await eventually(async () => {
          const res = await route(c, a.workerId)
          return res.status === 200 && res.body.controller_id === a.controller?.id ? res.body : null
        }, `${a.workerId} routable at ${c.config.id} through its new controller`)
        expect(r.state).toBe('healthy')
        expect(r.incarnation).toBeGreaterThan(before.get(a.workerId)!)
        expect(r.incarnation).toBe(a.incarnation)
      }
    }
    expect(bystander.counters.failovers).toBe(0)
    expect(bystander.controller?.id).toBe(y.config.id)
  })

  it('every controller gone: detached, keeps trying at each heartbeat, attaches again when one comes back', async () => {
    const only = await start('solo-a')
    const port = only.port
    const a = agent('f5', [only.url], { retries: 1, retryBaseMs: 10 })
    const errors: Error[] = []
    const attached: string[] = []
    a.on('error', e => { errors.push(e) })
    a.on('attached', e => { attached.push(e.reason) })
    await a.start()
    expect(attached).toEqual(['start'])

    await only.stop()
    await eventually(() => a.state === 'detached', 'the agent is detached')
    expect(a.controller).toBeNull()
    expect(errors.length).toBeGreaterThan(0)
    expect(errors.every(e => e instanceof NoControllerError)).toBe(true)

    // A controller comes back at the same address (new id, empty data dir): the agent finds it by itself.
    const back = await start('solo-b', { httpsPort: port })
    await eventually(() => a.state === 'attached', 'attached again')
    expect(attached.at(-1)).toBe('retry')
    expect(a.controller).toEqual({ url: back.url, id: 'solo-b' })
    const r = await route(back, 'f5')
    expect(r.status).toBe(200)
    expect(r.body).toMatchObject({ worker_id: 'f5', controller_id: 'solo-b', state: 'healthy' })
  })

  it('a controller restarted with an empty data dir on the same port: worker_not_registered, re-registered at the next heartbeat', async () => {
    const port = await freePort()
    const dataDir = join(bed.root, 'restarted')
    const args = [
      '--id', 'restarted', '--host', '127.0.0.1', '--https-port', String(port), '--p2p-port', '0',
      '--data-dir', dataDir, '--tls-dir', bed.tlsDir,
      '--heartbeat-interval', '200ms', '--unhealthy-after', '1s', '--stale-after', '3s', '--log-level', 'info'
    ]
    const first = await child(args)
    expect(first.url).toBe(`https://127.0.0.1:${port}`)
    // A high failure threshold keeps the agent on this controller while it is down: the re-register path, not failover.
    const a = agent('f6', [first.url], { failureThreshold: 1_000 })
    const events: string[] = []
    a.on('heartbeat_failed', () => { events.push('heartbeat_failed') })
    a.on('reregistered', () => { events.push('reregistered') })
    await a.start()
    const before = await route({ url: first.url }, 'f6')
    expect(before.body).toMatchObject({ worker_id: 'f6', controller_id: 'restarted', state: 'healthy' })

    process.kill(first.pid, 'SIGKILL')
    await new Promise<void>(resolve => first.process.once('exit', () => { resolve() }))
    rmSync(dataDir, { recursive: true, force: true })
    await eventually(() => events.includes('heartbeat_failed'), 'heartbeats fail while the controller is down')

    const second = await child(args)
    expect(second.url).toBe(first.url)
    const mark = events.length
    await eventually(() => events.includes('reregistered'), 're-registered')
    // Back and listening before this mark: the very next heartbeat found it and re-registered
    // (at most one heartbeat that was already failing when it came up is counted after the mark).
    expect(events.slice(mark).filter(e => e === 'heartbeat_failed').length).toBeLessThanOrEqual(1)
    expect(a.counters.reregistrations).toBe(1)
    expect(a.counters.failovers).toBe(0)
    const after = await route({ url: second.url }, 'f6')
    expect(after.status).toBe(200)
    expect(after.body).toMatchObject({ worker_id: 'f6', controller_id: 'restarted', state: 'healthy' })
    expect(after.body.incarnation).toBe(a.incarnation)
  })

  it('a controller that freezes (accepts connections, never answers): fails over within a few heartbeats', async () => {
    const [x, y] = await startMesh('fr', 2)
    const front = await freezableProxy(x.url)
    // Default attempt timeout (30 s): a heartbeat must still give up after about one interval.
    const a = agent('f7', [front.url, y.url], { affinity: x.config.id })
    const failovers: Array<{ from: string, to: string }> = []
    a.on('failover', f => { failovers.push(f) })
    await a.start()
    expect(a.controller?.url).toBe(front.url)

    front.frozen = true
    // Expected after ~3 heartbeat intervals (0.6 s); 10 s is 50 intervals, a third of the connect timeout.
    await eventually(() => failovers.length === 1, 'a failover away from the frozen controller', 10_000)
    expect(failovers[0]).toEqual({ from: front.url, to: y.url, incarnation: a.incarnation })
    const r = await route(y, 'f7')
    expect(r.body).toMatchObject({ worker_id: 'f7', controller_id: y.config.id, state: 'healthy' })
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

function agent (id: string, urls: string[], extra: Partial<WorkerAgentInit> = {}): WorkerAgent {
  const a = workerAgent({
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/${id}`,
    capabilities: [cap(`cap-${id}`)],
    controllers: urls,
    tls: bed.tls,
    heartbeatIntervalMs: 200,
    ...extra
  })
  a.on('error', () => {})
  agents.push(a)
  return a
}

async function route (c: { url: string }, workerId: string): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', `${c.url}/route`, { verb: 'invoke', capability: `cap-${workerId}` })
}

async function start (id: string, extra: Parameters<TestBed['start']>[0] = {}): Promise<Controller> {
  const c = await bed.start({ id, ...extra })
  controllers.push(c)
  return c
}

async function startMesh (prefix: string, n: number): Promise<Controller[]> {
  const cs: Controller[] = [await start(`${prefix}0`)]
  for (let i = 1; i < n; i++) cs.push(await start(`${prefix}${i}`, { bootstrap: [cs[0].p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), `a full mesh of ${n} controllers`, 15_000)
  return cs
}

async function child (args: string[]): Promise<ChildController> {
  const c = await spawnController({ id: 'restarted', args })
  children.push(c)
  return c
}

/**
 * A TCP proxy on 127.0.0.1 to `target`. Once `frozen`, it forwards nothing
 * more on open connections and accepts new ones without ever answering
 * (what a client sees of a partitioned or SIGSTOPped server).
 */
async function freezableProxy (target: string): Promise<{ url: string, frozen: boolean, close: () => Promise<void> }> {
  const { hostname, port } = new URL(target)
  const sockets = new Set<Socket>()
  const state = { url: '', frozen: false, close: async () => {} }
  const track = (s: Socket): Socket => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
    return s
  }
  const server = createServer(client => {
    track(client)
    if (state.frozen) return
    const upstream = track(connect(Number(port), hostname))
    client.on('data', d => { if (!state.frozen) upstream.write(d) })
    upstream.on('data', d => { if (!state.frozen) client.write(d) })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => { if (!state.frozen) client.destroy() })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`
  state.close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  }
  proxies.push(state)
  return state
}
