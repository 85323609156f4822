/**
 * The route client (capmesh/client) against real controllers over real
 * HTTPS: its local route() answers as `/route` at the controller it follows
 * (same candidates, same 404/503), it sees a registration made at another
 * controller, it fails over when its controller stops, it resumes its
 * stream without a snapshot after a disconnect, and empty-push protection
 * keeps routing to a worker whose removal only one (cut-off) controller
 * reports, until another controller confirms it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent } from '../../src/agent/index.ts'
import { routeClient, type RouteClient, type RouteClientInit } from '../../src/client/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { RouteQuery } from '../../src/wire/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
const clients: RouteClient[] = []
const agents: WorkerAgent[] = []
beforeEach(async () => { bed = await testBed('route-client') })
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close()
  for (const a of agents.splice(0)) a.abandon()
  await bed.cleanup()
})

/** Nobody heartbeats most workers here: they stay healthy for the whole test. */
const PATIENT = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100 }

async function client (controllers: Controller[], extra: Partial<RouteClientInit> = {}): Promise<RouteClient> {
  const c = routeClient({ controllers: controllers.map(x => x.url), tls: await bed.identity('client', 'routes'), reconnectBaseMs: 50, ...extra })
  clients.push(c)
  await c.start()
  return c
}

const register = async (c: Controller, id: string, caps: Array<Record<string, unknown>>): Promise<void> => {
  const res = await bed.client.json('POST', `${c.url}/register`, { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: caps })
  expect(res.status).toBe(200)
}

/** What `n` routes for `q` can answer: the set of workers, or the error status. */
function localAnswers (rc: RouteClient, q: RouteQuery, n: number): string {
  const ids = new Set<string>()
  for (let i = 0; i < n; i++) {
    try {
      ids.add(rc.route({ ...q }).worker_id)
    } catch (err) {
      return `error ${(err as { status: number }).status}`
    }
  }
  return [...ids].sort().join(',')
}
async function remoteAnswers (c: Controller, q: RouteQuery, n: number): Promise<string> {
  const ids = new Set<string>()
  for (let i = 0; i < n; i++) {
    const res = await bed.client.json('POST', `${c.url}/route`, q)
    if (res.status !== 200) return `error ${res.status}`
    ids.add(res.body.worker_id)
  }
  return [...ids].sort().join(',')
}

describe('route client', () => {
  it('answers route() as /route does at the controller it follows, and sees what is registered at another', async () => {
    const a = await bed.start({ id: 'a', ...PATIENT })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]], ...PATIENT })
    await eventually(() => a.view.members().b?.status === 'alive' && b.view.members().a?.status === 'alive', 'a and b alive to each other')
    await register(a, 'a1', [capability('echo'), capability('gpu', { requires_gpu: true })])
    await register(a, 'a2', [capability('echo', { version: '2.0.0', cost_tokens_per_invocation: 9 })])
    await register(a, 'a3', [capability('slo', { slo: { latency_p95_ms: 50 } })])
    await register(b, 'b1', [capability('echo', { cost_tokens_per_invocation: 1 }), capability('slo', { slo: { latency_p95_ms: 500 } })])
    await register(b, 'b2', [capability('gpu', { requires_gpu: false })])
    await register(a, 'd1', [capability('drained')])
    await bed.client.json('POST', `${a.url}/drain`, { worker_id: 'd1' })
    await eventually(() => a.view.workers({ limit: 100, offset: 0 }).total === 6 && a.view.members().b != null, 'every worker at a')
    await eventually(async () => (await remoteAnswers(a, { verb: 'invoke', capability: 'echo', affinity: 'b' }, 1)) === 'b1', 'b1 routable at a')

    const rc = await client([a, b])
    expect(rc.controller.id).toBe('a')
    await eventually(() => rc.workers().length === 6, 'the client to hold every worker')
    const queries: RouteQuery[] = [
      { verb: 'invoke', capability: 'echo' },
      { verb: 'invoke', capability: 'echo', version: '2.0.0' },
      { verb: 'invoke', capability: 'echo', budget_tokens: 5 },
      { verb: 'invoke', capability: 'echo', affinity: 'b' },
      { verb: 'invoke', capability: 'echo', strategy: 'least_loaded' },
      { verb: 'invoke', capability: 'gpu', requires_gpu: true },
      { verb: 'invoke', capability: 'gpu' },
      { verb: 'invoke', capability: 'slo', slo_constraints: { latency_p95_ms: 100 } },
      { verb: 'invoke', capability: 'slo', affinity: 'b' },
      { verb: 'invoke', capability: 'echo', version: '9.9.9' },
      { verb: 'invoke', capability: 'drained' },
      { verb: 'invoke', capability: 'nobody' },
      { verb: 'other', capability: 'echo' }
    ]
    for (const q of queries) {
      expect(localAnswers(rc, q, 8), JSON.stringify(q)).toBe(await remoteAnswers(a, q, 8))
    }
    // Registered at b, seen by the client following a.
    await register(b, 'b3', [capability('late')])
    await eventually(() => rc.workers().some(w => w.worker_id === 'b3'), 'b3 in the client')
    expect(rc.route({ verb: 'invoke', capability: 'late' })).toMatchObject({ worker_id: 'b3', controller_id: 'b' })
  })

  it('fails over to the next controller when its controller stops, and keeps answering meanwhile', async () => {
    const a = await bed.start({ id: 'a', ...PATIENT })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]], ...PATIENT })
    await eventually(() => a.view.members().b?.status === 'alive', 'a and b linked')
    await register(b, 'w1', [capability('echo')])
    await eventually(() => a.view.workers({ limit: 10, offset: 0 }).total === 1, 'w1 at a')
    const rc = await client([a, b])
    const failovers: string[] = []
    rc.on('failover', f => failovers.push(`${f.from} > ${f.to}`))
    expect(rc.controller.id).toBe('a')
    const [aUrl, bUrl] = [a.url, b.url]
    await a.stop()
    // The copy still answers while no stream is open.
    expect(rc.route({ verb: 'invoke', capability: 'echo' }).worker_id).toBe('w1')
    await eventually(() => rc.controller.id === 'b' && rc.connected, 'the client to follow b', 15_000)
    expect(failovers).toEqual([`${aUrl} > ${bUrl}`])
    await register(b, 'w2', [capability('echo2')])
    await eventually(() => rc.workers().some(w => w.worker_id === 'w2'), 'w2 through b')
    expect(rc.counters.snapshots).toBe(2)
  })

  it('resumes its stream after each disconnect from the last event it saw: no snapshot, nothing lost', async () => {
    // The controller's keepalive is rarer than the client's idle timeout: the client drops and reopens its stream whenever it hears nothing for 300 ms.
    const a = await bed.start({ id: 'a', ...PATIENT, watchKeepaliveMs: 60_000 })
    const rc = await client([a], { idleTimeoutMs: 300 })
    const opened: Array<string | null> = []
    rc.on('connected', c => opened.push(c.cursor))
    for (let i = 0; i < 6; i++) {
      await register(a, `w${i}`, [capability('echo')])
      await new Promise(resolve => setTimeout(resolve, 400))
    }
    await eventually(() => rc.workers().length === 6, 'every worker in the client')
    expect(rc.counters.snapshots).toBe(1)
    expect(opened.length).toBeGreaterThanOrEqual(3)
    expect(opened.every(c => c != null)).toBe(true)
    expect(rc.counters.resumes).toBeGreaterThanOrEqual(3)
    expect(rc.cursor).toBe(`${a.view.changes().epoch}-${a.view.changes().index}`)
  })

  it('empty-push protection: a drop to zero reported by a cut-off controller is held while another controller disagrees, applied once one confirms it', async () => {
    const a = await bed.start({ id: 'a' })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(() => a.view.members().b?.status === 'alive', 'a and b linked')
    const agent = workerAgent({
      workerId: 'w1', workerUrl: 'https://127.0.0.1:7000/w1', capabilities: [capability('echo') as never],
      controllers: [b.url], tls: await bed.identity('worker', 'w1'), heartbeatIntervalMs: 100, reprobeIntervalMs: 0
    })
    agents.push(agent)
    await agent.start()
    await eventually(() => a.view.workers({ limit: 10, offset: 0 }).workers.some(w => w.worker_id === 'w1' && w.state === 'healthy'), 'w1 healthy at a')
    const rc = await client([a, b], { confirmIntervalMs: 200 })
    const log: string[] = []
    rc.on('hold', h => log.push(`hold ${h.workerId}`))
    rc.on('release', r => log.push(`release ${r.workerId} ${r.reason}`))
    expect(rc.route({ verb: 'invoke', capability: 'echo' }).worker_id).toBe('w1')

    // a loses b: w1 turns unhealthy at a, the only worker of echo. b still hears w1.
    await faultsOf(a).block([b.p2p.peerId])
    await faultsOf(b).block([a.p2p.peerId])
    await eventually(() => log.includes('hold w1'), 'the drop to be held', 10_000)
    await eventually(() => rc.counters.confirmations >= 2, 'b to be asked twice')
    expect(rc.route({ verb: 'invoke', capability: 'echo' }).worker_id).toBe('w1')
    expect(rc.held().map(h => h.workerId)).toEqual(['w1'])
    expect(log).toEqual(['hold w1'])

    // The worker really goes: b agrees now, the drop is applied.
    agents.splice(agents.indexOf(agent), 1)
    agent.abandon()
    await bed.client.json('POST', `${b.url}/deregister`, { worker_id: 'w1' })
    await eventually(() => log.includes('release w1 confirmed'), 'b to confirm the drop', 10_000)
    // a lists w1 as unhealthy (503), or has dropped b's entries after the stale window (404): either way, not routable.
    expect(() => rc.route({ verb: 'invoke', capability: 'echo' })).toThrow(expect.objectContaining({ name: expect.stringMatching(/^No(Healthy)?WorkerError$/) }))
  })

  it('empty-push protection with one controller: a held drop waits for a fresh snapshot, and a worker that comes back releases it', async () => {
    const a = await bed.start({ id: 'a', ...PATIENT })
    await register(a, 'w1', [capability('echo')])
    await register(a, 'w2', [capability('other')])
    const rc = await client([a], { confirmIntervalMs: 200 })
    const log: string[] = []
    rc.on('hold', h => log.push(`hold ${h.workerId}`))
    rc.on('release', r => log.push(`release ${r.workerId} ${r.reason}`))
    // A drain that comes back: held, then released by the next event about w1.
    await bed.client.json('POST', `${a.url}/drain`, { worker_id: 'w2' })
    await bed.client.json('POST', `${a.url}/heartbeat`, { worker_id: 'w2', status: 'ready' })
    await eventually(() => log.includes('release w2 restored') || log.includes('release w2 snapshot'), 'w2 back')
    expect(rc.route({ verb: 'invoke', capability: 'other' }).worker_id).toBe('w2')
    // A real removal: no other controller to ask, so a fresh snapshot confirms it.
    await bed.client.json('POST', `${a.url}/deregister`, { worker_id: 'w1' })
    await eventually(() => log.includes('release w1 snapshot'), 'the snapshot to release it', 10_000)
    expect(() => rc.route({ verb: 'invoke', capability: 'echo' })).toThrow(expect.objectContaining({ name: 'NoWorkerError' }))
    expect(rc.counters.snapshots).toBeGreaterThanOrEqual(2)
  })
})
