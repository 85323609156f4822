/**
 * A table of malformed requests over real HTTPS. Each gets its own 4xx with
 * a JSON body: validation problems name the bad field in `details[].field`
 * (`body/...`, `querystring/...`), other failures carry a stable `code`.
 * After the table the registry is exactly as before and the controller still
 * answers. Then: the body limit comes from the config, /state/import rejects
 * garbage without changing anything, and deeply nested free-form JSON must
 * not break the controller.
 */
import * as Y from 'yjs'
import { randomBytes } from 'node:crypto'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capability, testBed, type TestBed } from '../helpers/controllers.ts'
import type { Controller } from '../../src/controller/index.ts'

let bed: TestBed
let agent: Agent

beforeAll(async () => {
  bed = await testBed('malformed')
  agent = new Agent({ connect: { ca: bed.ca, cert: bed.tls.cert, key: bed.tls.key } })
})
afterAll(async () => {
  await agent.close()
  await bed.cleanup()
})

interface Raw { status: number, headers: Record<string, unknown>, body: any }

/** Sends exactly `body` with exactly `contentType` (or none), so malformed bytes reach the server as they are. */
async function raw (base: string, method: 'GET' | 'POST', path: string, body?: string | Buffer, contentType?: string): Promise<Raw> {
  const headers: Record<string, string> = {}
  if (contentType != null) headers['content-type'] = contentType
  const res = await request(base + path, { method, dispatcher: agent, headers, body })
  const text = await res.body.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch {}
  return { status: res.statusCode, headers: res.headers, body: parsed }
}

const JSON_CT = 'application/json'
const worker = (extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ worker_id: 'bad-w', worker_url: 'https://127.0.0.1:7001', capabilities: [capability('echo')], ...extra })
const withCap = (extra: Record<string, unknown>): Record<string, unknown> => worker({ capabilities: [capability('echo', extra)] })
const without = (obj: Record<string, unknown>, key: string): Record<string, unknown> => {
  const { [key]: _, ...rest } = obj
  return rest
}
const routeQ = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ verb: 'invoke', capability: 'echo', ...extra })

interface Case {
  name: string
  method?: 'GET' | 'POST'
  path: string
  /** An object is sent as JSON; a string or Buffer as is. */
  body?: unknown
  contentType?: string
  status: number
  code: string
  /** The field `details[]` must name (validation errors). */
  field?: string
}

const deepArrays = '['.repeat(20_000) + ']'.repeat(20_000)

const CASES: Case[] = [
  // --- missing fields
  { name: 'register without worker_id', path: '/register', body: without(worker(), 'worker_id'), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'register without worker_url', path: '/register', body: without(worker(), 'worker_url'), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'register without capabilities', path: '/register', body: without(worker(), 'capabilities'), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities' },
  { name: 'capability without verb', path: '/register', body: worker({ capabilities: [without(capability('echo'), 'verb')] }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/verb' },
  { name: 'capability without max_concurrency', path: '/register', body: worker({ capabilities: [capability('ok'), without(capability('echo'), 'max_concurrency')] }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/1/max_concurrency' },
  { name: 'heartbeat without worker_id', path: '/heartbeat', body: { load: 1 }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'deregister without worker_id', path: '/deregister', body: {}, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'drain without worker_id', path: '/drain', body: {}, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'route without verb', path: '/route', body: without(routeQ(), 'verb'), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/verb' },
  { name: 'route without capability', path: '/route', body: without(routeQ(), 'capability'), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capability' },
  { name: 'GET /route without verb', method: 'GET', path: '/route?capability=echo', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/verb' },
  { name: 'GET /route without capability', method: 'GET', path: '/route?verb=invoke', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/capability' },

  // --- wrong types, never coerced
  { name: 'requires_gpu "true" in a capability', path: '/register', body: withCap({ requires_gpu: 'true' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/requires_gpu' },
  { name: 'requires_gpu "true" in a route query', path: '/route', body: routeQ({ requires_gpu: 'true' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/requires_gpu' },
  { name: 'max_concurrency "4"', path: '/register', body: withCap({ max_concurrency: '4' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/max_concurrency' },
  { name: 'max_concurrency 0', path: '/register', body: withCap({ max_concurrency: 0 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/max_concurrency' },
  { name: 'max_concurrency 1.5', path: '/register', body: withCap({ max_concurrency: 1.5 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/max_concurrency' },
  { name: 'input_schema a string', path: '/register', body: withCap({ input_schema: '{"type":"object"}' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/input_schema' },
  { name: 'slo.latency_p95_ms a string', path: '/register', body: withCap({ slo: { latency_p95_ms: '50' } }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/slo/latency_p95_ms' },
  { name: 'cost_tokens_per_invocation negative', path: '/register', body: withCap({ cost_tokens_per_invocation: -1 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/cost_tokens_per_invocation' },
  { name: 'worker_id a number', path: '/register', body: worker({ worker_id: 42 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'capabilities an object', path: '/register', body: worker({ capabilities: capability('echo') }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities' },
  { name: 'incarnation "3"', path: '/register', body: worker({ incarnation: '3' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'incarnation negative', path: '/register', body: worker({ incarnation: -1 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'heartbeat load "3"', path: '/heartbeat', body: { worker_id: 'w', load: '3' }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/load' },
  { name: 'heartbeat load negative', path: '/heartbeat', body: { worker_id: 'w', load: -1 }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/load' },
  { name: 'heartbeat unknown status', path: '/heartbeat', body: { worker_id: 'w', status: 'sleeping' }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/status' },
  { name: 'heartbeat incarnation negative', path: '/heartbeat', body: { worker_id: 'w', incarnation: -1 }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'heartbeat incarnation 1.5', path: '/heartbeat', body: { worker_id: 'w', incarnation: 1.5 }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'heartbeat incarnation "2"', path: '/heartbeat', body: { worker_id: 'w', incarnation: '2' }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'heartbeat incarnation past 2^53', path: '/heartbeat', body: { worker_id: 'w', incarnation: 2 ** 60 }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/incarnation' },
  { name: 'deregister worker_id an array', path: '/deregister', body: { worker_id: ['w'] }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'route budget_tokens "10"', path: '/route', body: routeQ({ budget_tokens: '10' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/budget_tokens' },
  { name: 'route budget_tokens negative', path: '/route', body: routeQ({ budget_tokens: -5 }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/budget_tokens' },
  { name: 'route slo_constraints.latency_p95_ms "100"', path: '/route', body: routeQ({ slo_constraints: { latency_p95_ms: '100' } }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/slo_constraints/latency_p95_ms' },
  { name: 'route empty idempotency_key', path: '/route', body: routeQ({ idempotency_key: '' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/idempotency_key' },
  { name: 'route bad strategy', path: '/route', body: routeQ({ strategy: 'fastest' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/strategy' },
  { name: 'GET /route bad strategy', method: 'GET', path: '/route?verb=invoke&capability=echo&strategy=fastest', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/strategy' },
  { name: 'GET /route requires_gpu=yes', method: 'GET', path: '/route?verb=invoke&capability=echo&requires_gpu=yes', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/requires_gpu' },
  { name: 'GET /route budget_tokens=abc', method: 'GET', path: '/route?verb=invoke&capability=echo&budget_tokens=abc', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/budget_tokens' },
  { name: 'GET /route unknown parameter', method: 'GET', path: '/route?verb=invoke&capability=echo&colour=blue', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/colour' },
  { name: 'GET /workers unknown state', method: 'GET', path: '/workers?state=dead', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/state' },
  { name: 'GET /workers limit=abc', method: 'GET', path: '/workers?limit=abc', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/limit' },
  { name: 'GET /workers limit above the maximum page', method: 'GET', path: '/workers?limit=20000', status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'querystring/limit' },

  // --- bad values
  { name: 'worker_url not a URL', path: '/register', body: worker({ worker_url: 'not a url' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'worker_url ftp://', path: '/register', body: worker({ worker_url: 'ftp://127.0.0.1/x' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'worker_url without a host', path: '/register', body: worker({ worker_url: 'https://' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'worker_url with a space', path: '/register', body: worker({ worker_url: 'https://127.0.0.1:7001/a b' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'worker_url too long', path: '/register', body: worker({ worker_url: 'https://h/' + 'x'.repeat(5000) }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_url' },
  { name: 'worker_id with spaces', path: '/register', body: worker({ worker_id: 'my worker' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'worker_id empty', path: '/register', body: worker({ worker_id: '' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'worker_id with a newline', path: '/heartbeat', body: { worker_id: 'w\nx' }, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'worker_id too long', path: '/register', body: worker({ worker_id: 'w'.repeat(300) }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/worker_id' },
  { name: 'empty capabilities', path: '/register', body: worker({ capabilities: [] }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities' },
  { name: 'capability with an empty name', path: '/register', body: withCap({ name: '' }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/name' },

  // --- huge arrays and deep nesting
  { name: '1000 capabilities', path: '/register', body: worker({ capabilities: Array.from({ length: 1000 }, (_, i) => capability(`c${i}`)) }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities' },
  { name: '10000 required_capabilities', path: '/register', body: withCap({ required_capabilities: Array.from({ length: 10_000 }, (_, i) => `r${i}`) }), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body/capabilities/0/required_capabilities' },
  { name: 'a body that is a huge array', path: '/register', body: Array.from({ length: 40_000 }, (_, i) => i), status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body' },
  { name: 'a body of 20000 nested arrays', path: '/register', body: deepArrays, contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body' },
  { name: 'route with 20000 nested arrays', path: '/route', body: deepArrays, contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body' },

  // --- not JSON, wrong media type, too large, prototype pollution
  { name: 'invalid JSON', path: '/register', body: '{"worker_id": "w1", ', contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },
  { name: 'JSON with a trailing comma', path: '/heartbeat', body: '{"worker_id": "w1",}', contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },
  { name: 'empty JSON body', path: '/heartbeat', body: '', contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },
  { name: 'JSON null', path: '/heartbeat', body: 'null', contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION', field: 'body' },
  { name: 'no content type', path: '/register', body: JSON.stringify(worker()), status: 415, code: 'CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'text/plain', path: '/register', body: JSON.stringify(worker()), contentType: 'text/plain', status: 415, code: 'CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'form-urlencoded (curl -d default)', path: '/heartbeat', body: 'worker_id=w1', contentType: 'application/x-www-form-urlencoded', status: 415, code: 'CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'application/xml', path: '/route', body: '<route/>', contentType: 'application/xml', status: 415, code: 'CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'body over the 256 KiB default limit', path: '/register', body: JSON.stringify(worker({ pad: 'x'.repeat(300 * 1024) })), contentType: JSON_CT, status: 413, code: 'CAPMESH_ERR_BODY_TOO_LARGE' },
  { name: '__proto__ at the top level', path: '/register', body: `{"__proto__":{"polluted":true},${JSON.stringify(worker()).slice(1)}`, contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },
  { name: '__proto__ inside a capability', path: '/register', body: JSON.stringify(worker()).replace('"input_schema":{', '"input_schema":{"__proto__":{"polluted":true},'), contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },
  { name: 'constructor.prototype', path: '/route', body: '{"verb":"invoke","capability":"echo","constructor":{"prototype":{"polluted":true}}}', contentType: JSON_CT, status: 400, code: 'CAPMESH_ERR_VALIDATION' },

  // --- unknown endpoints
  { name: 'unknown endpoint', method: 'GET', path: '/nope', status: 404, code: 'CAPMESH_ERR_NOT_FOUND' },
  { name: 'unknown sub-path', path: '/register/now', body: worker(), status: 404, code: 'CAPMESH_ERR_NOT_FOUND' },
  { name: 'GET on a POST-only endpoint', method: 'GET', path: '/register', status: 404, code: 'CAPMESH_ERR_NOT_FOUND' }
]

describe('a table of malformed requests', () => {
  let c: Controller
  let before: { total: number, update: string }

  const snapshot = async (): Promise<{ total: number, update: string }> => {
    const workers = await bed.client.json('GET', c.url + '/workers')
    const exported = await bed.client.json('GET', c.url + '/state/export')
    expect(workers.status).toBe(200)
    expect(exported.status).toBe(200)
    return { total: workers.body.total, update: exported.body.update }
  }

  beforeAll(async () => {
    // Long timeouts: nothing may change during the table except through a bad request.
    c = await bed.start({ heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 })
    for (const id of ['w1', 'w2']) {
      const res = await bed.client.json('POST', c.url + '/register', worker({ worker_id: id }))
      expect(res.status).toBe(200)
    }
    before = await snapshot()
    expect(before.total).toBe(2)
  })

  it.each(CASES.map(k => [k.name, k] as const))('%s', async (_name, k) => {
    const body = k.body === undefined ? undefined : typeof k.body === 'string' ? k.body : JSON.stringify(k.body)
    const contentType = k.contentType ?? (typeof k.body === 'object' && k.body !== null ? JSON_CT : undefined)
    const res = await raw(c.url, k.method ?? 'POST', k.path, body, contentType)
    expect(res.status).toBe(k.status)
    expect(String(res.headers['content-type'])).toContain('application/json')
    expect(res.body.code).toBe(k.code)
    expect(typeof res.body.error).toBe('string')
    if (k.field != null) {
      expect(Array.isArray(res.body.details)).toBe(true)
      expect(res.body.details.map((d: { field: string }) => d.field)).toContain(k.field)
    }
  })

  it('changed nothing: same workers, same registry document, still answering', async () => {
    expect(await snapshot()).toEqual(before)
    const health = await bed.client.json('GET', c.url + '/health')
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ status: 'ok', workers: { total: 2, healthy: 2 } })
    const routed = await bed.client.json('POST', c.url + '/route', routeQ())
    expect(routed.status).toBe(200)
    // The controller runs in this process: a pollution attempt would show up here.
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('body limits come from the config', () => {
  it('a body over bodyLimit is 413; one under it is accepted; /state/import has its own limit', async () => {
    // The source first: the importing controller admits (and so trusts the seals of) the controllers listed when it starts.
    const source = await bed.start()
    const c = await bed.start({ bodyLimit: 8 * 1024, importBodyLimit: 64 * 1024, heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 })
    const big = await raw(c.url, 'POST', '/register', JSON.stringify(worker({ worker_id: 'big', pad: 'x'.repeat(9 * 1024) })), JSON_CT)
    expect(big.status).toBe(413)
    expect(big.body.code).toBe('CAPMESH_ERR_BODY_TOO_LARGE')
    const fits = await raw(c.url, 'POST', '/register', JSON.stringify(worker({ worker_id: 'fits', pad: 'x'.repeat(6 * 1024) })), JSON_CT)
    expect(fits.status).toBe(200)

    // An export bigger than bodyLimit still imports (its limit is importBodyLimit)...
    for (let i = 0; i < 40; i++) {
      const res = await bed.client.json('POST', source.url + '/register', worker({ worker_id: `s${i}` }))
      expect(res.status).toBe(200)
    }
    const doc = (await bed.client.json('GET', source.url + '/state/export')).body
    expect(JSON.stringify(doc).length).toBeGreaterThan(8 * 1024)
    const imported = await bed.client.json('POST', c.url + '/state/import', doc)
    expect(imported.status).toBe(200)
    expect(imported.body).toMatchObject({ status: 'imported', added: 40, workers: 41 })
    // ... and one over importBodyLimit (as base64: 4/3 of it) is 413, in either form.
    const huge = await raw(c.url, 'POST', '/state/import', JSON.stringify({ ...doc, update: 'A'.repeat(100 * 1024) }), JSON_CT)
    expect(huge.status).toBe(413)
    expect(huge.body.code).toBe('CAPMESH_ERR_BODY_TOO_LARGE')
    expect((await bed.client.json('GET', c.url + '/workers')).body.total).toBe(41)
  })
})

describe('POST /state/import with garbage', () => {
  const b64 = (u: Uint8Array): string => Buffer.from(u).toString('base64')
  const yjsUpdate = (build: (doc: Y.Doc) => void): string => {
    const doc = new Y.Doc()
    build(doc)
    return b64(Y.encodeStateAsUpdate(doc))
  }
  const validEntry = { worker_id: 'x1', worker_url: 'https://127.0.0.1:7001', capabilities: [capability('echo')], incarnation: 1, owner: 'evil', registered_at: 1 }

  const GARBAGE: Array<{ name: string, doc: (base: Record<string, unknown>) => unknown, code: string, field?: string }> = [
    { name: 'an empty object', doc: () => ({}), code: 'CAPMESH_ERR_VALIDATION', field: 'body/format' },
    { name: 'a foreign format', doc: base => ({ ...base, format: 'other-state' }), code: 'CAPMESH_ERR_VALIDATION', field: 'body/format' },
    { name: 'an unknown version', doc: base => ({ ...base, version: 2 }), code: 'CAPMESH_ERR_VALIDATION', field: 'body/version' },
    { name: 'an update that is not base64', doc: base => ({ ...base, update: '!!! not base64 !!!' }), code: 'CAPMESH_ERR_VALIDATION', field: 'body/update' },
    { name: 'an update that is a number', doc: base => ({ ...base, update: 12345 }), code: 'CAPMESH_ERR_VALIDATION', field: 'body/update' },
    { name: 'base64 of random bytes', doc: base => ({ ...base, update: b64(randomBytes(512)) }), code: 'CAPMESH_ERR_INVALID_STATE' },
    { name: 'an empty update', doc: base => ({ ...base, update: '' }), code: 'CAPMESH_ERR_INVALID_STATE' },
    { name: 'a Yjs update with a foreign root type', doc: base => ({ ...base, update: yjsUpdate(d => { d.getText('evil').insert(0, 'hello') }) }), code: 'CAPMESH_ERR_INVALID_STATE' },
    { name: 'a Yjs update with a foreign root map', doc: base => ({ ...base, update: yjsUpdate(d => { d.getMap('other').set('k', 1) }) }), code: 'CAPMESH_ERR_INVALID_STATE' },
    { name: 'a Yjs update with a bad segment key', doc: base => ({ ...base, update: yjsUpdate(d => { d.getMap('segments').set('no slash', new Y.Map()) }) }), code: 'CAPMESH_ERR_INVALID_STATE' },
    { name: 'a Yjs update with text in a segment slot', doc: base => ({ ...base, update: yjsUpdate(d => { d.getMap('segments').set('evil/0000000001.ab', new Y.Text('x')) }) }), code: 'CAPMESH_ERR_INVALID_STATE' },
    {
      name: 'a Yjs update with a malformed entry',
      doc: base => ({ ...base, update: yjsUpdate(d => { const seg = new Y.Map(); d.getMap('segments').set('evil/0000000001.ab', seg); seg.set('x1', { ...validEntry, capabilities: [] }) }) }),
      code: 'CAPMESH_ERR_INVALID_STATE'
    },
    {
      name: 'a Yjs update with an entry stored under another worker id',
      doc: base => ({ ...base, update: yjsUpdate(d => { const seg = new Y.Map(); d.getMap('segments').set('evil/0000000001.ab', seg); seg.set('x2', validEntry) }) }),
      code: 'CAPMESH_ERR_INVALID_STATE'
    }
  ]

  let c: Controller
  let base: Record<string, unknown>
  let before: string

  beforeAll(async () => {
    c = await bed.start({ heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 })
    expect((await bed.client.json('POST', c.url + '/register', worker({ worker_id: 'keep' }))).status).toBe(200)
    base = (await bed.client.json('GET', c.url + '/state/export')).body
    before = base.update as string
  })

  it.each(GARBAGE.map(g => [g.name, g] as const))('rejects %s with 400 and changes nothing', async (_name, g) => {
    const res = await bed.client.json('POST', c.url + '/state/import', g.doc(base))
    expect(res.status).toBe(400)
    expect(res.body.code).toBe(g.code)
    if (g.field != null) expect(res.body.details.map((d: { field: string }) => d.field)).toContain(g.field)
    const after = await bed.client.json('GET', c.url + '/state/export')
    expect(after.body.update).toBe(before)
    const workers = await bed.client.json('GET', c.url + '/workers')
    expect(workers.body.workers.map((w: any) => w.worker_id)).toEqual(['keep'])
  })

  it('still accepts a valid document afterwards', async () => {
    const res = await bed.client.json('POST', c.url + '/state/import', base)
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ status: 'imported', added: 0, workers: 1 })
    expect((await bed.client.json('GET', c.url + '/health')).body.status).toBe('ok')
  })
})

describe('deeply nested JSON in free-form capability fields', () => {
  // input_schema, output_schema, constraints and extra capability fields are free-form JSON,
  // stored in the registry document and served back by /workers and /state/export.
  it('is rejected with 400 before it reaches the registry, and the controller keeps serving', async () => {
    const c = await bed.start({ heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 })
    expect((await bed.client.json('POST', c.url + '/register', worker({ worker_id: 'keep' }))).status).toBe(200)
    for (const depth of [5_000, 20_000]) {
      const nested = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
      const body = JSON.stringify(worker({ worker_id: `deep-${depth}` })).replace('"input_schema":{"type":"object"}', `"input_schema":${nested}`)
      const res = await raw(c.url, 'POST', '/register', body, JSON_CT)
      expect(res.status, `depth ${depth}`).toBe(400)
      expect(res.body.code).toBe('CAPMESH_ERR_VALIDATION')
    }
    const workers = await bed.client.json('GET', c.url + '/workers')
    expect(workers.status).toBe(200)
    expect(workers.body.workers.map((w: any) => w.worker_id)).toEqual(['keep'])
    expect((await bed.client.json('GET', c.url + '/state/export')).status).toBe(200)
    expect((await bed.client.json('GET', c.url + '/health')).body.status).toBe('ok')
  })
})
