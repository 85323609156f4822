/**
 * Worker agent, closest controller: real in-process controllers (a mesh of
 * three, the project's CA) and real agents over HTTPS. Latency is added by
 * a small TCP proxy on 127.0.0.1 that delays every chunk in both
 * directions; the controllers' certificates cover 127.0.0.1, so the agent
 * verifies TLS through the proxy exactly as it would directly.
 *
 * Covers: the lower-latency controller wins whatever the list order;
 * `affinity` wins over closeness when that controller is reachable and is
 * ignored when it is not; periodic re-probing moves to a clearly closer
 * controller, and hysteresis keeps an agent in place between two similar
 * ones.
 */
import { createServer, connect, type Server, type Socket } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent, type WorkerAgentInit } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { Capability } from '../../src/registry/index.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let mesh: Controller[]
const agents: WorkerAgent[] = []
const proxies: LatencyProxy[] = []

beforeAll(async () => {
  bed = await testBed('agent-closest')
  mesh = await startMesh(3)
})
afterAll(async () => { await bed.cleanup() })
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop()
  for (const p of proxies.splice(0)) await p.close()
})

describe('closest controller', () => {
  it('attaches to the lower-latency controller, whatever its place in the list', async () => {
    const [c0, c1] = mesh
    const slowC0 = await latencyProxy(c0.url, 30)
    const slowC1 = await latencyProxy(c1.url, 30)

    const a = agent('near-1', [slowC0.url, c1.url])
    const attached: Array<{ controller: string, controllerId: string | null, reason: string }> = []
    a.on('attached', e => { attached.push(e) })
    await a.start()
    expect(a.controller).toEqual({ url: c1.url, id: 'c1' })
    expect(attached).toHaveLength(1)
    expect(attached[0]).toMatchObject({ controller: c1.url, controllerId: 'c1', reason: 'start' })

    // The same with the roles swapped: it is the latency that decides, not which controller it is.
    const b = agent('near-2', [slowC1.url, c0.url])
    await b.start()
    expect(b.controller).toEqual({ url: c0.url, id: 'c0' })

    // Attached means registered there (owner) and routable through the mesh.
    for (const c of mesh) {
      await eventually(async () => (await route(c, 'near-1')).body.controller_id === 'c1', `near-1 routable at ${c.config.id}`)
      await eventually(async () => (await route(c, 'near-2')).body.controller_id === 'c0', `near-2 routable at ${c.config.id}`)
    }
  })

  it('affinity: attaches to the preferred controller even when it is slower, and ignores it when it is unreachable', async () => {
    const [c0, c1] = mesh
    const slowC0 = await latencyProxy(c0.url, 30)
    const a = agent('aff-1', [c1.url, slowC0.url], { affinity: 'c0' })
    await a.start()
    expect(a.controller).toEqual({ url: slowC0.url, id: 'c0' })
    await eventually(async () => (await route(c1, 'aff-1')).body.controller_id === 'c0', 'aff-1 routable at c1, owned by c0')

    // The preferred controller cannot be reached (its proxy resets every connection): the closest one is used.
    const deadC0 = await latencyProxy(c0.url, 0)
    deadC0.down = true
    const b = agent('aff-2', [deadC0.url, c1.url], { affinity: 'c0' })
    await b.start()
    expect(b.controller).toEqual({ url: c1.url, id: 'c1' })
    expect(deadC0.connections).toBeGreaterThan(0)
  })

  it('re-probing moves to a controller that has become clearly closer, once', async () => {
    const [, c1, c2] = mesh
    const slowC1 = await latencyProxy(c1.url, 50)
    const fastC2 = await latencyProxy(c2.url, 0)
    fastC2.down = true
    const a = agent('mover', [slowC1.url, fastC2.url], { reprobeIntervalMs: 100 })
    const moves: Array<{ controller: string, reason: string }> = []
    a.on('attached', e => { if (e.reason === 'move') moves.push(e) })
    await a.start()
    expect(a.controller?.id).toBe('c1')
    const before = (await route(c1, 'mover')).body
    expect(before.controller_id).toBe('c1')

    fastC2.down = false
    await eventually(() => a.controller?.url === fastC2.url, 'the agent moved to the closer controller')
    expect(a.counters.moves).toBe(1)
    expect(moves).toEqual([expect.objectContaining({ controller: fastC2.url, reason: 'move' })])
    for (const c of mesh) {
      await eventually(async () => {
        const r = (await route(c, 'mover')).body
        return r.controller_id === 'c2' && r.incarnation > before.incarnation
      }, `mover owned by c2 with a newer incarnation at ${c.config.id}`)
    }

    // Several more probes of both: it stays.
    const seen = slowC1.chunksIn
    await eventually(() => slowC1.chunksIn >= seen + 12, 'more re-probes of the slow controller')
    expect(a.counters.moves).toBe(1)
    expect(a.controller?.url).toBe(fastC2.url)
  })

  it('hysteresis: between two controllers of similar latency it never moves', async () => {
    const [, c1, c2] = mesh
    // Same added delay on both: which one measures faster changes from probe to probe (jitter).
    // 40 ms per chunk keeps the hysteresis margin (half the RTT) well above a loaded machine's jitter.
    const p1 = await latencyProxy(c1.url, 40)
    const p2 = await latencyProxy(c2.url, 40)
    const a = agent('steady', [p1.url, p2.url], { reprobeIntervalMs: 50 })
    await a.start()
    const first = a.controller
    expect(first).not.toBeNull()
    const other = first!.url === p1.url ? p2 : p1
    const seen = other.chunksIn
    // Only probes go to the other controller: wait for several rounds of them.
    await eventually(() => other.chunksIn >= seen + 24, 'several re-probes', 15_000)
    expect(a.counters.moves).toBe(0)
    expect(a.controller).toEqual(first)
    expect(a.state).toBe('attached')
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

/** An agent for worker `id` (capability `cap-<id>`), stopped after the test. */
function agent (id: string, controllers: string[], extra: Partial<WorkerAgentInit> = {}): WorkerAgent {
  const a = workerAgent({
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/${id}`,
    capabilities: [cap(`cap-${id}`)],
    controllers,
    tls: bed.tls,
    heartbeatIntervalMs: 200,
    ...extra
  })
  agents.push(a)
  return a
}

async function route (c: Controller, workerId: string): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', `${c.url}/route`, { verb: 'invoke', capability: `cap-${workerId}` })
}

async function startMesh (n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: 'c0' })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `c${i}`, bootstrap: [cs[0].p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), `a full mesh of ${n} controllers`, 15_000)
  return cs
}

interface LatencyProxy {
  /** https://127.0.0.1:<proxy port> */
  url: string
  /** When true, every new connection is reset at once (the controller looks down). */
  down: boolean
  /** Connections accepted (including reset ones). */
  connections: number
  /** Chunks received from clients (requests, TLS records). */
  chunksIn: number
  close: () => Promise<void>
}

/** A TCP proxy on 127.0.0.1 to `target` that delays every chunk by `delayMs` in each direction. */
async function latencyProxy (target: string, delayMs: number): Promise<LatencyProxy> {
  const { hostname, port } = new URL(target)
  const sockets = new Set<Socket>()
  const relay = (from: Socket, to: Socket, onChunk: () => void): void => {
    // Same delay for every chunk: Node fires equal-duration timers in order, so the byte stream stays intact.
    from.on('data', d => {
      onChunk()
      setTimeout(() => { if (!to.destroyed) to.write(d) }, delayMs)
    })
    from.on('end', () => { setTimeout(() => { to.end() }, delayMs) })
    from.on('error', () => { to.destroy() })
    from.on('close', () => { sockets.delete(from) })
  }
  const state: LatencyProxy = { url: '', down: false, connections: 0, chunksIn: 0, close: async () => {} }
  const server: Server = createServer(client => {
    state.connections++
    if (state.down) {
      client.resetAndDestroy()
      return
    }
    const upstream = connect(Number(port), hostname)
    sockets.add(client)
    sockets.add(upstream)
    relay(client, upstream, () => { state.chunksIn++ })
    relay(upstream, client, () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  state.url = `https://127.0.0.1:${typeof addr === 'object' && addr != null ? addr.port : 0}`
  state.close = async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  }
  proxies.push(state)
  return state
}
