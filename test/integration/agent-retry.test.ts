/**
 * Worker agent, registration: retries with exponential back-off, quarantine
 * of a failing controller, every kind of broken controller (down, hanging,
 * garbage, wrong CA) and permanent rejections. Real in-process controllers
 * and small fake controllers — node:https servers with a certificate issued
 * by the project's own CA, so the agent verifies TLS as usual — that answer
 * however a test needs. No test may leave an unhandled rejection behind.
 */
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent, type WorkerAgentInit } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { NoControllerError, RegistrationRejectedError } from '../../src/errors.ts'
import type { Capability } from '../../src/registry/index.ts'
import { ensureTls, type TlsMaterial } from '../../src/tls/index.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let c0: Controller
let fakeTls: TlsMaterial
let otherCaTls: TlsMaterial
const agents: WorkerAgent[] = []
const servers: Array<{ close: () => Promise<void> }> = []
const unhandled: unknown[] = []
const onUnhandled = (err: unknown): void => { unhandled.push(err) }

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled)
  process.on('uncaughtException', onUnhandled)
  bed = await testBed('agent-retry')
  c0 = await bed.start({ id: 'c0' })
  fakeTls = await ensureTls({ dir: bed.tlsDir, name: 'fake' })
  // A second, unrelated CA: its certificates must be refused.
  otherCaTls = await ensureTls({ dir: join(bed.root, 'other-ca'), name: 'other' })
})
afterAll(async () => {
  await bed.cleanup()
  process.off('unhandledRejection', onUnhandled)
  process.off('uncaughtException', onUnhandled)
})
afterEach(async () => {
  // Servers first: connections still hanging on a black hole are reset, so no agent waits on one.
  for (const s of servers.splice(0)) await s.close()
  for (const a of agents.splice(0)) await a.stop()
  expect(unhandled, 'unhandled rejections or exceptions').toEqual([])
})

describe('retries with back-off', () => {
  it('a controller answering 503 twice: two retries, then registered there', async () => {
    const fake = await fakeController('fake', n => n <= 2 ? { status: 503, body: { error: 'busy' } } : 'ok')
    const a = agent('r1', [fake.url], { retryBaseMs: 200 })
    await a.start()
    expect(a.controller).toEqual({ url: fake.url, id: 'fake' })
    expect(a.counters.retries).toBe(2)
    expect(a.counters.registrations).toEqual({ ok: 1, failed: 0, rejected: 0 })
    expect(fake.registers).toHaveLength(3)
    const [g1, g2] = gaps(fake.registers)
    // Exponential: the second wait is drawn from twice the range of the first.
    expect(g1).toBeGreaterThanOrEqual(200 - 2)
    expect(g2).toBeGreaterThanOrEqual(400 - 2)
    expect(g2).toBeGreaterThan(g1)
  })

  it('the waits grow exponentially over the default three retries', async () => {
    const fake = await fakeController('fake', n => n <= 3 ? { status: 502, body: { error: 'bad gateway' } } : 'ok')
    const a = agent('r2', [fake.url], { retryBaseMs: 100 })
    await a.start()
    expect(a.counters.retries).toBe(3)
    expect(fake.registers).toHaveLength(4)
    const [g1, g2, g3] = gaps(fake.registers)
    // Each wait is base * 2^k * (1..2): at least the doubled base, and the third at least twice the first.
    expect(g1).toBeGreaterThanOrEqual(100 - 2)
    expect(g2).toBeGreaterThanOrEqual(200 - 2)
    expect(g3).toBeGreaterThanOrEqual(400 - 2)
    expect(g3).toBeGreaterThan(1.5 * g1)
  })

  it('a controller that always fails is given up after the retries, quarantined, and skipped at the next failover', async () => {
    const q0 = await bed.start({ id: 'q0' })
    const q1 = await bed.start({ id: 'q1' })
    const bad = await fakeController('bad', () => ({ status: 503, body: { error: 'unavailable' } }))
    // Affinity makes the failing controller the first choice, so the agent must try it and move on.
    const a = agent('r3', [bad.url, q0.url, q1.url], { affinity: 'bad', retries: 2, retryBaseMs: 20 })
    const failovers: Array<{ from: string, to: string }> = []
    a.on('failover', f => { failovers.push(f) })
    await a.start()
    expect(bad.registers).toHaveLength(3)
    expect(a.counters.registrations).toEqual({ ok: 1, failed: 1, rejected: 0 })
    expect(a.counters.retries).toBe(2)
    const first = a.controller!
    expect(['q0', 'q1']).toContain(first.id)

    // The controller in use dies: the agent fails over to the other good one, not back to the
    // quarantined affinity controller, which sees no further registration attempt.
    const [dying, survivor] = first.id === 'q0' ? [q0, q1] : [q1, q0]
    const dyingUrl = dying.url
    await dying.stop()
    await eventually(() => failovers.length === 1, 'a failover')
    expect(failovers[0]).toMatchObject({ from: dyingUrl, to: survivor.url })
    expect(a.controller?.url).toBe(survivor.url)
    expect(bad.registers).toHaveLength(3)
  })
})

describe('an overloaded controller is not made worse', () => {
  it('a heartbeat answered late counts as failed but is not aborted, and no second one is sent while it is in flight', async () => {
    // Answers heartbeats after 2.5 intervals. Aborting them would close the connection each time,
    // and every worker reconnecting (a TLS handshake each) is what sinks a loaded controller.
    const slow = await fakeController('slow', () => 'ok', { heartbeatDelayMs: 500 })
    const a = agent('o1', [slow.url], { heartbeatIntervalMs: 200, failureThreshold: 1000, attemptTimeoutMs: 2000 })
    await a.start()
    await eventually(() => a.counters.heartbeats.failed >= 4, 'four late heartbeats')
    expect(slow.heartbeats.aborted).toBe(0)
    expect(slow.heartbeats.maxInFlight).toBe(1)
    // One request spans about three beats: far fewer requests than beats.
    expect(slow.heartbeats.received).toBeLessThan(a.counters.heartbeats.failed)
    expect(a.controller?.id).toBe('slow')
  })

  it('a late heartbeat still counts towards failover: a hung controller is left after failureThreshold intervals', async () => {
    const slow = await fakeController('slow', () => 'ok', { heartbeatDelayMs: 60_000 })
    const a = agent('o2', [slow.url, c0.url], { affinity: 'slow', heartbeatIntervalMs: 200, failureThreshold: 2, attemptTimeoutMs: 5000 })
    // Recorded from events: on a loaded machine the failover may already be done when start() returns.
    const attached: Array<string | null> = []
    a.on('attached', e => { attached.push(e.controllerId) })
    await a.start()
    expect(attached[0]).toBe('slow')
    await eventually(() => a.controller?.id === 'c0', 'failed over to c0')
    expect(a.counters.failovers).toBe(1)
    expect(slow.heartbeats.received).toBe(1)
  })

  it('detached: attach rounds back off (one to eight intervals), then attach as soon as a controller takes the worker', async () => {
    let refuse = true
    const busy = await fakeController('busy', () => refuse ? { status: 503, body: { error: 'overloaded' } } : 'ok')
    const a = agent('o3', [busy.url], { heartbeatIntervalMs: 100, retries: 0 })
    await expect(a.start()).rejects.toBeInstanceOf(NoControllerError)
    const t0 = performance.now()
    await new Promise(resolve => setTimeout(resolve, 3000))
    const rounds = busy.registers.filter(t => t > t0).length
    // One round per interval would be ~30; the back-off reaches 400-800 ms after three rounds.
    expect(rounds).toBeGreaterThanOrEqual(2)
    expect(rounds).toBeLessThanOrEqual(12)
    expect(a.state).toBe('detached')
    refuse = false
    await eventually(() => a.state === 'attached', 'attached once the controller accepts')
    expect(a.controller).toEqual({ url: busy.url, id: 'busy' })
  })
})

describe('broken controllers: the agent moves on and never crashes', () => {
  it('a port with nothing listening', async () => {
    const url = await deadUrl()
    const alone = agent('d1', [url], { retries: 1, retryBaseMs: 10 })
    const err = await alone.start().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NoControllerError)
    expect((err as NoControllerError).code).toBe('CAPMESH_ERR_NO_CONTROLLER')
    expect((err as NoControllerError).failures.map(f => f.controller)).toEqual([url])
    expect(alone.state).toBe('detached')

    const a = agent('d2', [url, c0.url], { retries: 1, retryBaseMs: 10 })
    await a.start()
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })
  })

  it('a server that accepts TCP and never answers (not even the TLS handshake)', async () => {
    const hang = await tcpBlackHole()
    const alone = agent('h1', [hang.url], { retries: 1, retryBaseMs: 10, attemptTimeoutMs: 300 })
    const err = await alone.start().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NoControllerError)
    expect(hang.connections).toBeGreaterThanOrEqual(2)

    const a = agent('h2', [hang.url, c0.url], { retries: 1, retryBaseMs: 10, attemptTimeoutMs: 300 })
    await a.start()
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })
  })

  it('with the default 30 s attempt timeout, a black-hole controller in the list does not hold up start() beyond the 5 s probe cap', async () => {
    const hang = await tcpBlackHole()
    // Probing measures closeness with at most min(attemptTimeoutMs, 5 s) per /health round trip; this controller
    // never completes the TLS handshake, so the other one must be chosen once that cap has passed.
    const a = agent('h4', [hang.url, c0.url], { heartbeatIntervalMs: 1000 })
    const started = a.start()
    const outcome = await Promise.race([
      started.then(() => 'attached', (err: Error) => `failed: ${err.name}`),
      new Promise<string>(resolve => setTimeout(() => { resolve('still probing after 10 s (2x the probe cap)') }, 10_000))
    ])
    if (outcome !== 'attached') {
      // Let the pending probe fail now rather than after the 30 s connect timeout, so cleanup is quick.
      await hang.close()
      await started.catch(() => {})
    }
    expect(outcome).toBe('attached')
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })
  })

  it('a controller that answers /health but hangs on /register: each attempt times out, then the next controller', async () => {
    const fake = await fakeController('hang', () => 'hang')
    const a = agent('h3', [fake.url, c0.url], { affinity: 'hang', retries: 2, retryBaseMs: 10, attemptTimeoutMs: 500 })
    await a.start()
    // Each attempt opens a new connection (the timed-out one is dropped); on a loaded machine an attempt may
    // time out before its request even arrives, so the fake sees at most, not exactly, three.
    expect(fake.registers.length).toBeGreaterThanOrEqual(1)
    expect(fake.registers.length).toBeLessThanOrEqual(3)
    expect(a.counters.retries).toBe(2)
    expect(a.counters.registrations).toEqual({ ok: 1, failed: 1, rejected: 0 })
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })
  })

  it('a controller answering garbage (non-JSON 200, or JSON of the wrong shape)', async () => {
    const html = await fakeController('html', () => ({ status: 200, raw: '<html>it works</html>', contentType: 'text/html' }))
    const a = agent('g1', [html.url, c0.url], { affinity: 'html', retries: 1, retryBaseMs: 10 })
    await a.start()
    expect(html.registers).toHaveLength(2)
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })

    const odd = await fakeController('odd', () => ({ status: 200, body: { ok: true } }))
    const b = agent('g2', [odd.url, c0.url], { affinity: 'odd', retries: 1, retryBaseMs: 10 })
    await b.start()
    expect(odd.registers).toHaveLength(2)
    expect(b.controller).toEqual({ url: c0.url, id: 'c0' })
    expect(b.counters.registrations.failed).toBe(1)
  })

  it('a server whose certificate comes from a different CA: TLS is refused, no request is ever sent', async () => {
    const other = await otherCaServer()
    const alone = agent('t1', [other.url], { retries: 1, retryBaseMs: 10 })
    const err = await alone.start().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NoControllerError)
    expect(other.connections).toBeGreaterThan(0)
    expect(other.requests).toBe(0)

    const a = agent('t2', [other.url, c0.url], { retries: 1, retryBaseMs: 10 })
    await a.start()
    expect(a.controller).toEqual({ url: c0.url, id: 'c0' })
    expect(other.requests).toBe(0)
  })
})

describe('permanent rejections', () => {
  it('an invalid worker id: rejected at once with the controller\'s reason, no retry, no other controller tried', async () => {
    const spare = await fakeController('spare', () => 'ok')
    const a = agent('bad id', [c0.url, spare.url], { affinity: 'c0' })
    const errors: Error[] = []
    a.on('error', e => { errors.push(e) })
    const err = await a.start().catch((e: unknown) => e) as RegistrationRejectedError
    expect(err).toBeInstanceOf(RegistrationRejectedError)
    expect(err.name).toBe('RegistrationRejectedError')
    expect(err.code).toBe('CAPMESH_ERR_REJECTED')
    expect(err.controller).toBe(c0.url)
    expect(err.httpStatus).toBe(400)
    expect(err.reason).toMatchObject({ error: 'validation_failed', code: 'CAPMESH_ERR_VALIDATION' })
    expect((err.reason as { details: Array<{ field: string }> }).details.map(d => d.field)).toContain('body/worker_id')
    expect(errors).toEqual([err])
    expect(a.counters.retries).toBe(0)
    expect(a.counters.registrations).toEqual({ ok: 0, failed: 0, rejected: 1 })
    expect(spare.registers).toHaveLength(0)
    expect(a.controller).toBeNull()
  })

  it('an invalid capability: rejected with the field the controller names', async () => {
    const a = workerAgent({
      workerId: 'p2',
      workerUrl: 'https://127.0.0.1:7000/p2',
      capabilities: [{ ...cap('cap-p2'), max_concurrency: 0 }],
      controllers: [c0.url],
      tls: bed.tls
    })
    agents.push(a)
    a.on('error', () => {})
    const err = await a.start().catch((e: unknown) => e) as RegistrationRejectedError
    expect(err).toBeInstanceOf(RegistrationRejectedError)
    expect(err.code).toBe('CAPMESH_ERR_REJECTED')
    expect((err.reason as { details: Array<{ field: string }> }).details.map(d => d.field)).toContain('body/capabilities/0/max_concurrency')
    expect(a.counters.retries).toBe(0)
    const listed = await bed.client.json('GET', `${c0.url}/workers`)
    expect(listed.body.workers.map((w: { worker_id: string }) => w.worker_id)).not.toContain('p2')
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

function agent (id: string, controllers: string[], extra: Partial<WorkerAgentInit> = {}): WorkerAgent {
  const a = workerAgent({
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/w`,
    capabilities: [cap(`cap-${id.replace(/\s/g, '_')}`)],
    controllers,
    tls: bed.tls,
    heartbeatIntervalMs: 100,
    ...extra
  })
  // The agent reports failures as 'error' events too; these tests read them from start()'s rejection.
  a.on('error', () => {})
  agents.push(a)
  return a
}

function gaps (times: number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i])
}

type Answer = 'ok' | 'hang' | { status: number, body?: unknown, raw?: string, contentType?: string }

interface FakeController {
  url: string
  /** Arrival time (performance.now()) of every /register. */
  registers: number[]
  /** Heartbeats received, closed by the client before the answer, and the most at once. */
  heartbeats: { received: number, aborted: number, inFlight: number, maxInFlight: number }
  close: () => Promise<void>
}

/**
 * A fake controller speaking the wire contract over HTTPS (certificate from
 * the project CA): /health says `id`; /register answers `answer(n)` for the
 * n-th attempt ('ok' = a proper registration); heartbeats and deregistrations
 * are acknowledged.
 */
async function fakeController (id: string, answer: (n: number) => Answer, opts: { heartbeatDelayMs?: number } = {}): Promise<FakeController> {
  const registers: number[] = []
  const heartbeats = { received: 0, aborted: 0, inFlight: 0, maxInFlight: 0 }
  const hanging = new Set<import('node:http').ServerResponse>()
  const server: HttpsServer = createHttpsServer({ cert: fakeTls.cert, key: fakeTls.key }, (req, res) => {
    let raw = ''
    req.on('data', (d: Buffer) => { raw += d.toString() })
    req.on('end', () => {
      const body = raw.length > 0 ? JSON.parse(raw) as Record<string, unknown> : {}
      const send = (status: number, payload: unknown, type = 'application/json'): void => {
        res.writeHead(status, { 'content-type': type })
        res.end(typeof payload === 'string' ? payload : JSON.stringify(payload))
      }
      switch (req.url) {
        case '/health': return send(200, { status: 'ok', controller_id: id })
        case '/register': {
          registers.push(performance.now())
          const a = answer(registers.length)
          if (a === 'hang') { hanging.add(res); return }
          if (a === 'ok') return send(200, { status: 'registered', worker_id: body.worker_id, incarnation: body.incarnation ?? 1, controller_id: id })
          return send(a.status, a.raw ?? a.body, a.contentType)
        }
        case '/heartbeat': {
          heartbeats.received++
          heartbeats.maxInFlight = Math.max(heartbeats.maxInFlight, ++heartbeats.inFlight)
          let answered = false
          res.on('close', () => { heartbeats.inFlight--; if (!answered) heartbeats.aborted++ })
          const reply = (): void => { answered = true; send(200, { status: 'acknowledged', timestamp: new Date().toISOString(), state: 'healthy' }) }
          if (opts.heartbeatDelayMs == null) return reply()
          hanging.add(res)
          setTimeout(() => { hanging.delete(res); if (!res.destroyed) reply() }, opts.heartbeatDelayMs)
          return
        }
        case '/deregister': return send(200, { status: 'deregistered', worker_id: body.worker_id, known: true })
        default: return send(404, { error: 'not_found' })
      }
    })
  })
  const sockets = trackSockets(server)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const fake = {
    url: `https://127.0.0.1:${portOf(server)}`,
    registers,
    heartbeats,
    close: async () => {
      for (const r of hanging) r.destroy()
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
  servers.push(fake)
  return fake
}

/** Accepts TCP connections and never writes a byte. */
async function tcpBlackHole (): Promise<{ url: string, connections: number, close: () => Promise<void> }> {
  const sockets = new Set<Socket>()
  const state = { url: '', connections: 0, close: async () => {} }
  const server: TcpServer = createTcpServer(s => {
    state.connections++
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.url = `https://127.0.0.1:${portOf(server)}`
  let closed = false
  state.close = async () => {
    for (const s of sockets) s.destroy()
    if (closed) return
    closed = true
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  }
  servers.push(state)
  return state
}

/** A server that would answer like a controller, but with a certificate from another CA. */
async function otherCaServer (): Promise<{ url: string, connections: number, requests: number }> {
  const state = { url: '', connections: 0, requests: 0 }
  const server = createHttpsServer({ cert: otherCaTls.cert, key: otherCaTls.key }, (_req, res) => {
    state.requests++
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ status: 'registered', controller_id: 'impostor' }))
  })
  server.on('connection', () => { state.connections++ })
  server.on('tlsClientError', () => {})
  const sockets = trackSockets(server)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.url = `https://127.0.0.1:${portOf(server)}`
  servers.push({
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  })
  return state
}

/** Every raw TCP socket of `server`, TLS handshake done or not, so close() never waits on one. */
function trackSockets (server: HttpsServer): Set<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return sockets
}

/** A loopback URL where nothing listens (a port that was just free). */
async function deadUrl (): Promise<string> {
  const s = createTcpServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = portOf(s)
  await new Promise<void>(resolve => s.close(() => { resolve() }))
  return `https://127.0.0.1:${port}`
}

function portOf (server: { address: () => unknown }): number {
  const addr = server.address() as { port: number } | null
  return addr?.port ?? 0
}
