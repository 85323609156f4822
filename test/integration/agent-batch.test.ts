/**
 * registerBatch: many workers from one process with bounded concurrency.
 * 1,000 workers against a real in-process mesh of three controllers (all of
 * them visible at every controller), a batch with a few invalid workers
 * (those fail with the controller's reason, the rest succeed), and the
 * concurrency bound itself, observed at a fake controller (project CA) that
 * counts registrations in flight.
 */
import { createServer as createHttpsServer } from 'node:https'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { registerBatch, type BatchResult, type WorkerAgent, type WorkerAgentInit } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { RegistrationRejectedError } from '../../src/errors.ts'
import type { Capability } from '../../src/registry/index.ts'
import { ensureTls } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'
import { eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let live: WorkerAgent[] = []
const closers: Array<() => Promise<void>> = []

beforeEach(async () => { bed = await testBed('agent-batch') })
afterEach(async () => {
  await stopAll(live.splice(0))
  for (const close of closers.splice(0)) await close()
  await bed.cleanup()
})

// Registrations are checked here, not liveness: slow timeouts so 1,000 workers heartbeat rarely.
const SLOW = { heartbeatIntervalMs: 1000, unhealthyAfterMs: 15_000, staleAfterMs: 30_000 }
type Spec = Omit<WorkerAgentInit, 'client' | 'ranking' | 'ca'>

describe('registerBatch', () => {
  it('1,000 workers, 16 at a time, against a mesh of three: every one registered and listed at every controller', async () => {
    const mesh = await startMesh(3)
    const urls = mesh.map(c => c.url)
    const workers: Spec[] = Array.from({ length: 1000 }, (_, i) => spec(`b${String(i).padStart(4, '0')}`, urls))
    const results = await registerBatch(workers, { concurrency: 16, tls: bed.tls })
    live = okAgents(results)
    expect(results).toHaveLength(1000)
    expect(results.map(r => r.workerId)).toEqual(workers.map(w => w.workerId))
    expect(results.filter(r => !r.ok)).toEqual([])
    expect(live.every(a => a.state === 'attached')).toBe(true)

    const expected = new Set(workers.map(w => w.workerId))
    for (const c of mesh) {
      await eventually(async () => {
        const res = await bed.client.json('GET', `${c.url}/workers?limit=10000`)
        const ids = new Set<string>(res.body.workers.map((w: { worker_id: string }) => w.worker_id))
        return res.body.total === 1000 && [...expected].every(id => ids.has(id))
      }, `all 1,000 workers listed at ${c.config.id}`, 20_000)
    }
    // Spot-check routing from every controller.
    for (const c of mesh) {
      for (const id of ['b0000', 'b0500', 'b0999']) {
        const r = await bed.client.json('POST', `${c.url}/route`, { verb: 'invoke', capability: `cap-${id}` })
        expect(r.status).toBe(200)
        expect(r.body.worker_id).toBe(id)
      }
    }

    await stopAll(live.splice(0))
    for (const c of mesh) {
      await eventually(async () => (await bed.client.json('GET', `${c.url}/workers`)).body.total === 0, `every worker deregistered at ${c.config.id}`, 20_000)
    }
  })

  it('a batch with a few invalid workers: those are rejected with the controller\'s reason, the others registered', async () => {
    const c = await bed.start({ id: 'solo', ...SLOW })
    const workers: Spec[] = Array.from({ length: 40 }, (_, i) => spec(`v${i}`, [c.url]))
    workers[3] = { ...workers[3], workerId: 'has space' }
    workers[17] = { ...workers[17], capabilities: [{ ...cap('cap-v17'), max_concurrency: 0 }] }
    workers[31] = { ...workers[31], workerUrl: 'ftp://127.0.0.1/v31' }
    const results = await registerBatch(workers, { concurrency: 8, tls: bed.tls })
    live = okAgents(results)
    expect(results.map(r => r.workerId)).toEqual(workers.map(w => w.workerId))
    const failed = results.map((r, i) => [i, r] as const).filter(([, r]) => !r.ok)
    expect(failed.map(([i]) => i)).toEqual([3, 17, 31])
    for (const [, r] of failed) {
      const err = (r as { error: Error }).error as RegistrationRejectedError
      expect(err).toBeInstanceOf(RegistrationRejectedError)
      expect(err.code).toBe('CAPMESH_ERR_REJECTED')
      expect(err.httpStatus).toBe(400)
      expect(err.reason).toMatchObject({ code: 'CAPMESH_ERR_VALIDATION' })
    }
    expect(live).toHaveLength(37)
    const res = await bed.client.json('GET', `${c.url}/workers?limit=100`)
    expect(res.body.total).toBe(37)
  })

  it('never has more registrations in flight than `concurrency`', async () => {
    const fake = await slowFakeController(200)
    // A client with plenty of connections, so only the batch itself can bound what is in flight.
    const client = httpsClient({ ...bed.tls, connections: 64 })
    closers.push(async () => { await client.close() })
    const workers = (n: number, p: string): Spec[] => Array.from({ length: n }, (_, i) => spec(`${p}${i}`, [fake.url]))

    const four = await registerBatch(workers(24, 'q'), { concurrency: 4, client })
    live.push(...okAgents(four))
    expect(four.every(r => r.ok)).toBe(true)
    expect(fake.maxInFlight).toBe(4)

    fake.maxInFlight = 0
    const sixteen = await registerBatch(workers(48, 's'), { concurrency: 16, client })
    live.push(...okAgents(sixteen))
    expect(sixteen.every(r => r.ok)).toBe(true)
    expect(fake.maxInFlight).toBeGreaterThan(4)
    expect(fake.maxInFlight).toBeLessThanOrEqual(16)
  })
})

// ----------------------------------------------------------------- helpers

function cap (name: string): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
}

function spec (id: string, controllers: string[]): Spec {
  return {
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/${id}`,
    capabilities: [cap(`cap-${id}`)],
    controllers,
    heartbeatIntervalMs: 3000
  }
}

function okAgents (results: BatchResult[]): WorkerAgent[] {
  return results.flatMap(r => r.ok ? [r.agent] : [])
}

async function stopAll (agents: WorkerAgent[]): Promise<void> {
  for (let i = 0; i < agents.length; i += 64) await Promise.all(agents.slice(i, i + 64).map(async a => { await a.stop() }))
}

async function startMesh (n: number): Promise<Controller[]> {
  const cs: Controller[] = [await bed.start({ id: 'm0', ...SLOW })]
  for (let i = 1; i < n; i++) cs.push(await bed.start({ id: `m${i}`, bootstrap: [cs[0].p2p.multiaddrs[0]], ...SLOW }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), `a full mesh of ${n} controllers`, 15_000)
  return cs
}

/** A fake controller (project CA) that answers /register after `delayMs` and records the most registrations in flight at once. */
async function slowFakeController (delayMs: number): Promise<{ url: string, maxInFlight: number }> {
  const tls = await ensureTls({ dir: bed.tlsDir, name: 'fake-batch' })
  const state = { url: '', maxInFlight: 0 }
  let inFlight = 0
  const server = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    let raw = ''
    req.on('data', (d: Buffer) => { raw += d.toString() })
    req.on('end', () => {
      const body = raw.length > 0 ? JSON.parse(raw) as Record<string, unknown> : {}
      const send = (payload: unknown): void => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(payload))
      }
      if (req.url === '/health') return send({ status: 'ok', controller_id: 'fake-batch' })
      if (req.url === '/register') {
        inFlight++
        state.maxInFlight = Math.max(state.maxInFlight, inFlight)
        setTimeout(() => {
          inFlight--
          send({ status: 'registered', worker_id: body.worker_id, incarnation: body.incarnation, controller_id: 'fake-batch' })
        }, delayMs)
        return
      }
      if (req.url === '/heartbeat') return send({ status: 'acknowledged', timestamp: new Date().toISOString(), state: 'healthy' })
      if (req.url === '/deregister') return send({ status: 'deregistered', worker_id: body.worker_id, known: true })
      res.writeHead(404).end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  state.url = `https://127.0.0.1:${(server.address() as { port: number }).port}`
  closers.push(async () => {
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  })
  return state
}
