/**
 * GET /watch over real HTTPS with a real SSE client (undici, parsed by
 * src/utils/sse.ts): a snapshot then every change in order; resuming after a
 * disconnect loses nothing and repeats nothing; a cursor the change log no
 * longer holds (or from another epoch) gets a snapshot first; filters; bad
 * cursors are 400s; the watcher cap is a 503 with Retry-After; a watch of
 * one controller across a partition heal sees the other side go and come
 * back, with what was registered there meanwhile. Every event's data is
 * checked against its schema in src/wire/api.ts.
 */
import { Compile } from 'typebox/compile'
import { Agent, request } from 'undici'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import { WATCH_EVENT_SCHEMAS } from '../../src/wire/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'
import { openWatch, type Received, type SseStream } from '../helpers/sse.ts'

let bed: TestBed
const streams: SseStream[] = []
beforeEach(async () => { bed = await testBed('watch') })
afterEach(async () => {
  for (const s of streams.splice(0)) s.close()
  await bed.cleanup()
})

const checks = Object.fromEntries(Object.entries(WATCH_EVENT_SCHEMAS).map(([name, schema]) => [name, Compile(schema)]))

async function watch (c: Controller, query = '', headers: Record<string, string> = {}): Promise<SseStream> {
  const s = await openWatch(bed.client, c.url, query, headers)
  streams.push(s)
  return s
}

const body = (id: string, cap = `cap-${id}`): Record<string, unknown> => ({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(cap)] })
const register = async (c: Controller, id: string, cap?: string): Promise<void> => {
  expect((await bed.client.json('POST', `${c.url}/register`, body(id, cap))).status).toBe(200)
}
const deregister = async (c: Controller, id: string): Promise<void> => {
  expect((await bed.client.json('POST', `${c.url}/deregister`, { worker_id: id })).status).toBe(200)
}
const indexOf = (e: Received): number => Number(e.id!.split('-')[1])
/** What happened to which worker, in order (snapshots and controller events left out). */
const story = (events: Received[]): string[] => events.filter(e => e.event.startsWith('worker_')).map(e => `${e.event} ${e.data.worker?.worker_id ?? e.data.worker_id}${e.event === 'worker_state' ? ` ${e.data.from}>${e.data.to}` : ''}`)

/** What the stream says now: each worker's state, from its snapshot and every event after it. */
function fold (events: Received[]): Map<string, string> {
  const out = new Map<string, string>()
  for (const e of events) {
    if (e.event === 'snapshot') {
      out.clear()
      for (const w of e.data.workers) out.set(w.worker_id, w.state)
    } else if (e.event === 'worker_added' || e.event === 'worker_updated') out.set(e.data.worker.worker_id, e.data.worker.state)
    else if (e.event === 'worker_state') out.set(e.data.worker_id, e.data.to)
    else if (e.event === 'worker_removed') out.delete(e.data.worker_id)
  }
  return out
}

/** Every event is valid by its schema and ids grow within one epoch. */
function expectWellFormed (events: Received[]): void {
  let last = -1
  for (const e of events) {
    const check = checks[e.event]
    expect(check, `a schema for ${e.event}`).toBeDefined()
    expect(check.Check(e.data), `${e.event} ${JSON.stringify(e.data).slice(0, 300)}`).toBe(true)
    if (e.id == null) continue
    expect(e.id).toMatch(/^[0-9a-z]+-\d+$/)
    if (e.event !== 'snapshot') expect(indexOf(e)).toBeGreaterThan(last)
    last = indexOf(e)
  }
}

describe('GET /watch', () => {
  it('starts with a snapshot, then every change in order, each with an id', async () => {
    const a = await bed.start({ id: 'a' })
    await register(a, 'w1')
    const s = await watch(a)
    expect(s.status).toBe(200)
    expect(String(s.headers['content-type'])).toMatch(/^text\/event-stream/)
    const snap = await s.until(e => e.event === 'snapshot', 'the snapshot')
    expect(s.events[0]).toBe(snap)
    expect(snap.data.workers.map((w: any) => [w.worker_id, w.state])).toEqual([['w1', 'healthy']])
    expect(snap.data.controllers).toEqual([{ controller_id: 'a', status: 'alive', self_preservation: false, self: true }])
    expect(snap.id).toBe(`${snap.data.epoch}-${snap.data.index}`)

    await register(a, 'w2')
    await deregister(a, 'w1')
    await register(a, 'w2')
    await s.until(e => e.event === 'worker_removed', 'w1 removed')
    await s.until(e => e.event === 'worker_updated', 'w2 re-registered')
    expect(story(s.events)).toEqual(['worker_added w2', 'worker_removed w1', 'worker_updated w2'])
    expectWellFormed(s.events)
    const added = s.events.find(e => e.event === 'worker_added')!
    expect(added.data.worker).toMatchObject({ worker_id: 'w2', state: 'healthy', controller_id: 'a', incarnation: 1 })
    expect(s.events.find(e => e.event === 'worker_removed')!.data).toEqual({ worker_id: 'w1', controller_id: 'a', incarnation: 1, capabilities: ['cap-w1'] })
  })

  it('resumes after a disconnect with Last-Event-ID (or ?since=): nothing lost, nothing repeated, no snapshot', async () => {
    const a = await bed.start({ id: 'a' })
    const first = await watch(a)
    await first.until(e => e.event === 'snapshot', 'the snapshot')
    await register(a, 'w1')
    await register(a, 'w2')
    await first.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'w2', 'w2')
    const cursor = first.lastId()!
    first.close()

    // While nobody watches.
    await register(a, 'w3')
    await deregister(a, 'w1')
    await register(a, 'w4')

    const again = await watch(a, '', { 'last-event-id': cursor })
    await again.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'w4', 'w4')
    expect(again.events.some(e => e.event === 'snapshot')).toBe(false)
    expect(story(again.events)).toEqual(['worker_added w3', 'worker_removed w1', 'worker_added w4'])
    expect(indexOf(again.events[0])).toBe(Number(cursor.split('-')[1]) + 1)
    expectWellFormed(again.events)

    // The query-string form, from the same cursor, tells the same story.
    const since = await watch(a, `?since=${cursor}`)
    await since.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'w4', 'w4 (since)')
    expect(since.events.map(e => e.id)).toEqual(again.events.map(e => e.id))
    // Live changes keep coming to a resumed stream.
    await register(a, 'w5')
    await again.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'w5', 'w5 live')
  })

  it('a cursor older than the change log holds, or from another epoch, gets a snapshot first, then the changes after it', async () => {
    const a = await bed.start({ id: 'a', watchLogSize: 5 })
    const first = await watch(a)
    const snap0 = await first.until(e => e.event === 'snapshot', 'the snapshot')
    await register(a, 'w0')
    await first.until(e => e.event === 'worker_added', 'w0')
    const cursor = first.lastId()!
    first.close()
    for (let i = 1; i <= 10; i++) await register(a, `w${i}`)
    for (let i = 1; i <= 4; i++) await deregister(a, `w${i}`)

    const again = await watch(a, '', { 'last-event-id': cursor })
    const snap = await again.until(e => e.event === 'snapshot', 'a snapshot for the old cursor')
    expect(again.events[0]).toBe(snap)
    expect(snap.data.epoch).toBe(snap0.data.epoch)
    expect(snap.data.workers.map((w: any) => w.worker_id).sort()).toEqual(['w0', 'w10', 'w5', 'w6', 'w7', 'w8', 'w9'])
    await register(a, 'w11')
    const next = await again.until(e => e.event === 'worker_added', 'w11 after the snapshot')
    expect(indexOf(next)).toBe(snap.data.index + 1)

    // A cursor from another epoch (a restart, another controller): a snapshot too.
    const other = await watch(a, '', { 'last-event-id': 'abcdef012345-3' })
    const snap2 = await other.until(e => e.event === 'snapshot', 'a snapshot for a foreign epoch')
    expect(snap2.data.workers).toHaveLength(8)
    expectWellFormed(again.events)
  })

  it('filters by capability (repeatable) and by kind; controller events pass a capability filter', async () => {
    const a = await bed.start({ id: 'a' })
    await register(a, 'x1', 'x')
    await register(a, 'y1', 'y')
    const onlyX = await watch(a, '?capability=x')
    const xAndZ = await watch(a, '?capability=x&capability=z&kind=worker')
    const health = await watch(a, '?kind=health')
    for (const s of [onlyX, xAndZ, health]) await s.until(e => e.event === 'snapshot', 'the snapshot')
    expect(onlyX.events[0].data.workers.map((w: any) => w.worker_id)).toEqual(['x1'])
    expect(health.events[0].data.workers).toHaveLength(2)
    await register(a, 'x2', 'x')
    await register(a, 'y2', 'y')
    await register(a, 'z1', 'z')
    await bed.client.json('POST', `${a.url}/drain`, { worker_id: 'x1' })
    await bed.client.json('POST', `${a.url}/drain`, { worker_id: 'y1' })
    await onlyX.until(e => e.event === 'worker_state', 'x1 draining')
    await health.until(e => e.event === 'worker_state' && e.data.worker_id === 'y1', 'y1 draining')
    await xAndZ.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'z1', 'z1')
    expect(story(onlyX.events)).toEqual(['worker_added x2', 'worker_state x1 healthy>draining'])
    expect(story(xAndZ.events)).toEqual(['worker_added x2', 'worker_added z1'])
    expect(story(health.events)).toEqual(['worker_state x1 healthy>draining', 'worker_state y1 healthy>draining'])
  })

  it('refuses a malformed, repeated or future cursor and a bad filter with 400, and says which field', async () => {
    const a = await bed.start({ id: 'a' })
    const epoch = a.view.changes().epoch
    const cases: Array<[string, Record<string, string>, string]> = [
      ['', { 'last-event-id': 'not-an-id' }, 'header/last-event-id'],
      ['', { 'last-event-id': `${epoch}-99999` }, 'header/last-event-id'],
      ['', { 'last-event-id': `${epoch}-1`.repeat(40) }, 'header/last-event-id'],
      ['?since=%00%01', {}, 'querystring/since'],
      ['?since=' + 'x'.repeat(100), {}, 'querystring/since'],
      [`?since=${epoch}-12345678901234567`, {}, 'querystring/since'],
      ['?kind=workers', {}, 'querystring/kind'],
      ['?kind=worker,', {}, 'querystring/kind'],
      ['?capability=', {}, 'querystring/capability'],
      ['?other=1', {}, 'querystring/other']
    ]
    for (const [query, headers, field] of cases) {
      const s = await watch(a, query, headers)
      expect(s.status, `${query} ${JSON.stringify(headers)}`).toBe(400)
      expect(s.error.code).toBe('CAPMESH_ERR_VALIDATION')
      expect(s.error.details.map((d: any) => d.field), `${query} ${JSON.stringify(headers)}`).toContain(field)
    }
    // An empty Last-Event-ID is no cursor (the SSE specification's reset): a snapshot.
    const fresh = await watch(a, '', { 'last-event-id': '' })
    expect(fresh.status).toBe(200)
    await fresh.until(e => e.event === 'snapshot', 'the snapshot')
    expect(a.view.changes().watchers).toBe(1)
  })

  it('sends a keepalive comment every --watch-keepalive', async () => {
    const a = await bed.start({ id: 'a', watchKeepaliveMs: 100 })
    const res = await bed.client.stream(`${a.url}/watch`)
    let text = ''
    const t0 = Date.now()
    try {
      for await (const chunk of res.body) {
        text += Buffer.from(chunk).toString()
        if ((text.match(/^: keepalive$/gm) ?? []).length >= 3 || Date.now() - t0 > 10_000) break
      }
    } finally {
      res.close()
    }
    expect(text.startsWith('id: ')).toBe(true)
    expect((text.match(/^: keepalive$/gm) ?? []).length).toBeGreaterThanOrEqual(3)
  })

  it('answers HEAD with the headers alone, holding no watcher', async () => {
    const a = await bed.start({ id: 'a' })
    const agent = new Agent({ connect: { ca: bed.ca, cert: bed.tls.cert, key: bed.tls.key } })
    try {
      const head = await request(`${a.url}/watch`, { method: 'HEAD', dispatcher: agent })
      await head.body.dump()
      expect(head.statusCode).toBe(200)
      expect(String(head.headers['content-type'])).toMatch(/^text\/event-stream/)
      await eventually(() => a.view.changes().watchers === 0, 'no watcher held')
    } finally {
      await agent.close()
    }
  })

  it('needs a client or operator identity', async () => {
    const a = await bed.start({ id: 'a' })
    const worker = httpsClient(await bed.identity('worker', 'w1'))
    const client = httpsClient(await bed.identity('client', 'c1'))
    try {
      const refused = await openWatch(worker, a.url)
      expect(refused.status).toBe(403)
      expect(refused.error.reason).toBe('role_not_allowed')
      const ok = await openWatch(client, a.url)
      streams.push(ok)
      expect(ok.status).toBe(200)
      await ok.until(e => e.event === 'snapshot', 'the snapshot')
    } finally {
      for (const s of streams.splice(0)) s.close()
      await worker.close()
      await client.close()
    }
  })

  it('caps concurrent watchers: 503 too_many_watchers with Retry-After, and a freed slot is taken again', async () => {
    const a = await bed.start({ id: 'a', maxWatchers: 2 })
    const w1 = await watch(a)
    const w2 = await watch(a)
    const w3 = await watch(a)
    expect([w1.status, w2.status, w3.status]).toEqual([200, 200, 503])
    expect(w3.error).toMatchObject({ error: 'too_many_watchers', code: 'CAPMESH_ERR_TOO_MANY_WATCHERS' })
    expect(Number(w3.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    // A blocking /workers query is a watcher too.
    const blocked = await bed.client.json('GET', `${a.url}/workers?index=${a.view.changes().index}&wait=5s`)
    expect(blocked.status).toBe(503)
    expect(blocked.body.code).toBe('CAPMESH_ERR_TOO_MANY_WATCHERS')
    w1.close()
    await eventually(() => a.view.changes().watchers === 1, 'the closed watcher to be released')
    const w4 = await watch(a)
    expect(w4.status).toBe(200)
  })

  it('a watch of one controller across a partition heal: the other side goes silent, comes back, and what it registered meanwhile arrives', async () => {
    const a = await bed.start({ id: 'a' })
    const b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(() => a.p2p.connectedPeers().length === 1 && a.view.members().b?.status === 'alive', 'a and b linked')
    // b's workers heartbeat at b for the whole test (the partition is on the p2p links only).
    const beating = new Set<string>(['b1'])
    const pulse = setInterval(() => { for (const id of beating) void bed.client.json('POST', `${b.url}/heartbeat`, { worker_id: id }).catch(() => {}) }, 100)
    try {
      await register(b, 'b1')
      await eventually(() => a.view.workers({ limit: 10, offset: 0 }).workers.some(w => w.worker_id === 'b1' && w.state === 'healthy'), 'b1 healthy at a')
      const s = await watch(a)
      const snap = await s.until(e => e.event === 'snapshot', 'the snapshot')
      expect(snap.data.controllers).toContainEqual({ controller_id: 'b', status: 'alive', self_preservation: false, self: false })

      await faultsOf(a).block([b.p2p.peerId])
      await faultsOf(b).block([a.p2p.peerId])
      await s.until(e => e.event === 'controller_status' && e.data.controller_id === 'b' && e.data.to === 'silent', 'b silent at a')
      await s.until(e => e.event === 'worker_state' && e.data.worker_id === 'b1' && e.data.to === 'unhealthy', 'b1 unhealthy at a')
      // Registered at b while cut off: a cannot know yet.
      await register(b, 'b2')
      beating.add('b2')
      await new Promise(resolve => setTimeout(resolve, 300))
      expect(s.events.some(e => e.data.worker?.worker_id === 'b2')).toBe(false)

      faultsOf(a).unblock()
      faultsOf(b).unblock()
      await s.until(e => e.event === 'controller_status' && e.data.controller_id === 'b' && e.data.to === 'alive', 'b alive again at a', 20_000)
      await s.until(e => e.event === 'worker_added' && e.data.worker.worker_id === 'b2', 'b2 at a after the heal', 20_000)
      // What the stream says, folded, becomes what a routes by: b1 and b2 healthy (on a loaded machine
      // a may have dropped b's entries while cut off, so b1 may come back as added rather than as a state change).
      const healthy = (): boolean => { const f = fold(s.events); return f.get('b1') === 'healthy' && f.get('b2') === 'healthy' }
      await eventually(healthy, 'b1 and b2 healthy in the stream', 20_000)
      const listing = a.view.workers({ limit: 100, offset: 0 }).workers
      await eventually(() => JSON.stringify([...fold(s.events)].sort()) === JSON.stringify(a.view.workers({ limit: 100, offset: 0 }).workers.map(w => [w.worker_id, w.state]).sort()), `the stream to fold into a's listing ${JSON.stringify(listing.map(w => [w.worker_id, w.state]))}`)
      expectWellFormed(s.events)
      // In order: silent before the heal's alive, and nothing about b2 before b is heard again.
      const at = (m: (e: Received) => boolean): number => s.events.findIndex(m)
      expect(at(e => e.event === 'controller_status' && e.data.to === 'silent')).toBeLessThan(at(e => e.event === 'controller_status' && e.data.to === 'alive'))
    } finally {
      clearInterval(pulse)
    }
  })
})
