/**
 * Tracing across the mesh, end to end: three real controllers (in-process,
 * real libp2p, real HTTPS) export their spans with the OTLP/HTTP exporter to
 * a real receiver this test starts (HTTPS, the project CA's server
 * certificate: the exporter verifies it against the mesh CA). A registration
 * at `a` carrying a W3C traceparent is a span of that trace at `a`, and its
 * arrival at `b` and `c` are `capmesh.apply` spans of the same trace,
 * children of a's span. A garbage traceparent is ignored: the request is
 * served and starts a trace of its own. The worker agent and the CLI carry
 * their caller's context.
 */
import { randomBytes } from 'node:crypto'
import { ROOT_CONTEXT, context, propagation, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WorkerAgent } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import { exportState, Registry } from '../../src/registry/index.ts'
import { ensureTls } from '../../src/tls/index.ts'
import { otlpSink, type OtlpSink, type ReceivedSpan } from '../../simulations/otlp-sink.ts'
import { capmesh } from '../helpers/cli.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

const SERVER = 2
const CONSUMER = 5

let bed: TestBed
let sink: OtlpSink
let a: Controller, b: Controller, c: Controller
const savedEnv = { ...process.env }

beforeAll(async () => {
  // Export within 50 ms instead of the batch processor's 5 s.
  process.env.OTEL_BSP_SCHEDULE_DELAY = '50'
  bed = await testBed('tracing')
  const server = await ensureTls({ dir: bed.tlsDir })
  sink = await otlpSink({ cert: server.cert, key: server.key, keep: true })
  // Heartbeats: one in two gets a span (c only receives this test's heartbeats, so which ones is known).
  // Workers registered here stay routable without heartbeats for the length of the file (the CLI takes seconds to start).
  const traced = { otlpEndpoint: sink.url, traceHeartbeats: 2, heartbeatIntervalMs: 5000, unhealthyAfterMs: 30_000, staleAfterMs: 60_000 }
  a = await bed.start({ id: 'a', ...traced })
  b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]], ...traced })
  c = await bed.start({ id: 'c', bootstrap: [a.p2p.multiaddrs[0]], ...traced })
  const all = [a, b, c]
  await eventually(() => all.every(x => all.every(o => o === x || x.p2p.connectedPeers().includes(o.p2p.peerId))), 'a full mesh of 3', 15_000)
})

afterAll(async () => {
  await bed?.cleanup()
  await sink?.close()
  process.env = savedEnv
})

const hex = (bytes: number): string => randomBytes(bytes).toString('hex')
const traceparent = (traceId: string, spanId: string): string => `00-${traceId}-${spanId}-01`

function workerBody (id: string): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
}

const post = async (x: Controller, path: string, body: unknown, headers: Record<string, string> = {}) => await bed.client.json('POST', x.url + path, body, { headers })

/** Waits for spans matching `match` until `count` have arrived. */
async function spans (what: string, match: (s: ReceivedSpan) => boolean, count = 1): Promise<ReceivedSpan[]> {
  return await eventually(() => {
    const got = sink.spans.filter(match)
    return got.length >= count ? got : false
  }, what, 10_000) as ReceivedSpan[]
}

describe('tracing across the mesh (OTLP/HTTP to a real receiver over HTTPS)', () => {
  it('a registration at a with a traceparent is one trace: its span at a, and an apply span at b and at c, children of it', async () => {
    const traceId = hex(16)
    const callerSpan = hex(8)
    const res = await post(a, '/register', workerBody('t-reg'), { traceparent: traceparent(traceId, callerSpan), tracestate: 'vendor=1' })
    expect(res.status).toBe(200)

    const [reg] = await spans('the register span of a', s => s.traceId === traceId && s.name === 'POST /register')
    expect(reg).toMatchObject({ service: 'capmesh-controller', instance: 'a', kind: SERVER, parentSpanId: callerSpan })
    expect(reg.attributes).toMatchObject({ 'capmesh.controller.id': 'a', 'capmesh.worker_id': 't-reg', 'http.response.status_code': 200 })
    expect(reg.attributes['capmesh.worker_ids']).toEqual(['t-reg'])

    const applies = await spans('apply spans from b and c', s => s.traceId === traceId && s.name === 'capmesh.apply', 2)
    expect(applies.map(s => s.instance).sort()).toEqual(['b', 'c'])
    for (const s of applies) {
      expect(s).toMatchObject({ kind: CONSUMER, parentSpanId: reg.spanId, service: 'capmesh-controller' })
      expect(s.attributes).toMatchObject({ 'capmesh.controller.id': s.instance, 'capmesh.from': 'a', 'capmesh.worker_ids': ['t-reg'] })
      // When it reached each replica: after the registration started at a.
      expect(s.startMs).toBeGreaterThanOrEqual(reg.startMs)
    }
    // Exactly one apply per replica: the update travelled once to each.
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(sink.spans.filter(s => s.traceId === traceId && s.name === 'capmesh.apply')).toHaveLength(2)
  })

  it.each([
    ['not a traceparent at all', 'garbage'],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-${'1'.repeat(16)}-01`],
    ['an all-zero span id', `00-${'1'.repeat(32)}-${'0'.repeat(16)}-01`],
    ['version ff', `ff-${'1'.repeat(32)}-${'1'.repeat(16)}-01`],
    ['upper-case hex', `00-${'A'.repeat(32)}-${'B'.repeat(16)}-01`],
    ['a truncated header', `00-${'1'.repeat(31)}-${'1'.repeat(16)}-01`]
  ])('a garbage traceparent (%s) is ignored: the registration is served and starts a new trace that reaches b and c', async (_what, header) => {
    const id = `t-bad-${hex(3)}`
    const res = await post(a, '/register', workerBody(id), { traceparent: header, tracestate: '%%%' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'registered', worker_id: id })
    const [reg] = await spans('the register span', s => s.name === 'POST /register' && s.attributes['capmesh.worker_id'] === id)
    expect(reg.parentSpanId).toBeNull()
    expect(header).not.toContain(reg.traceId)
    const applies = await spans('apply spans in the new trace', s => s.traceId === reg.traceId && s.name === 'capmesh.apply', 2)
    expect(applies.map(s => s.instance).sort()).toEqual(['b', 'c'])
  })

  it('route, drain and deregister are spans of the caller\'s trace; deregistering reaches b and c in it too', async () => {
    await post(b, '/register', workerBody('t-ops'))
    await eventually(async () => (await post(b, '/route', { verb: 'invoke', capability: 'cap-t-ops' })).status === 200, 't-ops routable at b')
    const traceId = hex(16)
    const parent = hex(8)
    const headers = { traceparent: traceparent(traceId, parent) }
    expect((await post(b, '/route', { verb: 'invoke', capability: 'cap-t-ops' }, headers)).status).toBe(200)
    expect((await post(b, '/drain', { worker_id: 't-ops' }, headers)).status).toBe(200)
    expect((await post(b, '/deregister', { worker_id: 't-ops' }, headers)).status).toBe(200)
    const got = await spans('route, drain and deregister spans at b', s => s.traceId === traceId && s.kind === SERVER && s.instance === 'b', 3)
    expect(got.map(s => s.name).sort()).toEqual(['POST /deregister', 'POST /drain', 'POST /route'])
    for (const s of got) expect(s.parentSpanId).toBe(parent)
    const dereg = got.find(s => s.name === 'POST /deregister')!
    const applies = await spans('the deregistration applied at a and c', s => s.traceId === traceId && s.name === 'capmesh.apply' && s.parentSpanId === dereg.spanId, 2)
    expect(applies.map(s => s.instance).sort()).toEqual(['a', 'c'])
  })

  it('heartbeats are sampled: one in --trace-heartbeats gets a span', async () => {
    await post(c, '/register', workerBody('t-hb'))
    const ids = Array.from({ length: 4 }, () => hex(16))
    for (const t of ids) {
      const res = await post(c, '/heartbeat', { worker_id: 't-hb' }, { traceparent: traceparent(t, hex(8)) })
      expect(res.body).toMatchObject({ status: 'acknowledged' })
    }
    // The 1st and 3rd heartbeats c ever received (one in two).
    await spans('two heartbeat spans', s => s.name === 'POST /heartbeat' && ids.includes(s.traceId), 2)
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(sink.spans.filter(s => s.name === 'POST /heartbeat' && ids.includes(s.traceId)).map(s => s.traceId)).toEqual([ids[0], ids[2]])
  })

  it('the worker agent carries its caller\'s context: the registration it makes joins the caller\'s trace, at every controller', async () => {
    // What a worker application with an OpenTelemetry SDK has: a global propagator (the agent uses only the API).
    propagation.setGlobalPropagator(new W3CTraceContextPropagator())
    const traceId = hex(16)
    const parent = hex(8)
    const ctx = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: parent, traceFlags: 1, isRemote: true })
    const agent = new WorkerAgent({
      workerId: 't-agent',
      workerUrl: 'https://127.0.0.1:7000/t-agent',
      capabilities: [capability('cap-t-agent') as never],
      controllers: [a.url],
      client: bed.client,
      heartbeatIntervalMs: 200,
      reprobeIntervalMs: 0
    })
    try {
      await context.with(ctx, async () => { await agent.start() })
      const [reg] = await spans('the agent\'s registration at a', s => s.traceId === traceId && s.name === 'POST /register')
      // No SDK here: the agent's own span is a no-op carrying the caller's context.
      expect(reg).toMatchObject({ instance: 'a', parentSpanId: parent })
      const applies = await spans('its apply at b and c', s => s.traceId === traceId && s.name === 'capmesh.apply', 2)
      expect(applies.map(s => s.instance).sort()).toEqual(['b', 'c'])
      // Its heartbeats are not in the caller's trace (they run in the root context).
      await eventually(() => agent.counters.heartbeats.ok >= 2, 'two heartbeats')
      await new Promise(resolve => setTimeout(resolve, 200))
      expect(sink.spans.filter(s => s.traceId === traceId && s.name === 'POST /heartbeat')).toEqual([])
    } finally {
      await agent.stop()
      propagation.disable()
    }
  })

  it('the CLI carries TRACEPARENT on, and with OTEL_* set its command is a span the controller\'s span is a child of', async () => {
    await post(a, '/register', workerBody('t-cli'))
    await eventually(async () => (await post(c, '/route', { verb: 'invoke', capability: 'cap-t-cli' })).status === 200, 't-cli routable at c')
    const traceId = hex(16)
    const parent = hex(8)
    const out = await capmesh(['route', '--verb', 'invoke', '--capability', 'cap-t-cli', '--controller', c.url, '--tls-dir', bed.tlsDir], 30_000, {
      TRACEPARENT: traceparent(traceId, parent),
      OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
      OTEL_EXPORTER_OTLP_CERTIFICATE: a.ca.path
    })
    expect(out.code, out.stdout + out.stderr).toBe(0)
    const [cli] = await spans('the CLI\'s span', s => s.traceId === traceId && s.service === 'capmesh-cli')
    expect(cli).toMatchObject({ name: 'capmesh route', parentSpanId: parent })
    const [route] = await spans('c\'s route span', s => s.traceId === traceId && s.name === 'POST /route')
    expect(route).toMatchObject({ instance: 'c', parentSpanId: cli.spanId })

    // No exporter configured: the CLI makes no span and passes TRACEPARENT on unchanged.
    const bare = hex(16)
    const caller = hex(8)
    const again = await capmesh(['route', '--verb', 'invoke', '--capability', 'cap-t-cli', '--controller', c.url, '--tls-dir', bed.tlsDir], 30_000, { TRACEPARENT: traceparent(bare, caller) })
    expect(again.code, again.stdout + again.stderr).toBe(0)
    const [direct] = await spans('c\'s route span, child of TRACEPARENT', s => s.traceId === bare && s.name === 'POST /route')
    expect(direct).toMatchObject({ instance: 'c', parentSpanId: caller })
    expect(sink.spans.filter(s => s.traceId === bare && s.service === 'capmesh-cli')).toEqual([])
  })

  // Last: it leaves 6,000 workers in every registry.
  it('a write too big for a gossip message travels by sync: the sync apply at b and at c links to it', async () => {
    // A registry of ~1.5 MB (owned by a controller that is not here), imported at a: more than a
    // gossip message carries, so a sends a sync hint with the import's trace context, and b and c pull it.
    const bulk = new Registry({ controllerId: 'bulk' })
    for (let i = 0; i < 6000; i++) {
      bulk.register({ worker_id: `bulk-${i}`, worker_url: `https://127.0.0.1:7000/${'x'.repeat(100)}/${i}`, capabilities: [capability(`cap-bulk-${i % 50}`) as never] })
    }
    const doc = exportState(bulk)
    expect(Buffer.from(doc.update, 'base64').length).toBeGreaterThan(1024 * 1024)
    const traceId = hex(16)
    const res = await bed.client.json('POST', `${a.url}/state/import`, doc, { headers: { traceparent: traceparent(traceId, hex(8)) } })
    expect(res.status).toBe(200)
    const [imp] = await spans('the import span at a', s => s.traceId === traceId && s.name === 'POST /state/import')
    expect(imp.instance).toBe('a')
    const syncs = await spans('sync applies at b and c linked to the import', s => s.name === 'capmesh.sync.apply' && s.links.some(l => l.spanId === imp.spanId), 2)
    expect(syncs.map(s => s.instance).sort()).toEqual(['b', 'c'])
    for (const s of syncs) {
      expect(s.links).toContainEqual({ traceId, spanId: imp.spanId })
      expect(s.attributes).toMatchObject({ 'capmesh.changed': true })
    }
    // Not an apply of the gossip kind: the update itself never travelled by gossip.
    expect(sink.spans.filter(s => s.traceId === traceId && s.name === 'capmesh.apply')).toEqual([])
  })
})
