/**
 * What a watcher costs a controller, over real HTTPS: a client that stops
 * reading never makes the controller buffer more than `watch-buffer` for it;
 * once the change log no longer holds what it needs (`lagged`), or it reads
 * nothing for 4 keepalive intervals (`stalled`), it is told why in a last
 * `overflow` event and disconnected (destroyed if it does not even read
 * that), and its slot is free again. And 1,000 watch connections opened and
 * dropped leave the heap and the process's handles where they were.
 */
import { getActiveResourcesInfo } from 'node:process'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { httpsClient, type StreamResponse } from '../../src/utils/https-client.ts'
import { readSse, type SseEvent } from '../../src/utils/sse.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('watch-limits') })
afterEach(async () => { await bed.cleanup() })

/** A capability whose schema makes each event about this worker ~8 KB. */
const BIG = capability('big', { input_schema: { type: 'object', description: 'x'.repeat(8000) } })
/** Nobody heartbeats the workers these tests register: they stay healthy for the whole test. */
const PATIENT = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }
/** Registers `n` workers in-process (the watch path is under test, not registration), yielding to I/O between batches. */
async function registerBig (c: Controller, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) {
    c.view.register({ worker_id: `big-${i}`, worker_url: `https://127.0.0.1:7000/big-${i}`, capabilities: [BIG as never] }, null)
    if (i % 50 === 49) await new Promise(resolve => setImmediate(resolve))
  }
}

/** Reads everything a stream still delivers, until it ends (or errors). */
async function drain (res: StreamResponse): Promise<{ events: SseEvent[], error: unknown }> {
  const events: SseEvent[] = []
  try {
    for await (const e of readSse(res.body)) events.push(e)
    return { events, error: null }
  } catch (err) {
    return { events, error: err }
  } finally {
    res.close()
  }
}

describe('a watcher that does not read', () => {
  it('is cut off once the change log laps it, after a last overflow event, having lost nothing before it', async () => {
    const limit = 64 * 1024
    const a = await bed.start({ id: 'a', watchLogSize: 200, watchBufferBytes: limit, ...PATIENT })
    // Not read: undici stops reading the socket once its body buffer is full, as a slow consumer does.
    const res = await bed.client.stream(`${a.url}/watch`)
    expect(res.status).toBe(200)
    let n = 0
    while (a.view.changes().watchers > 0 && n < 4000) {
      await registerBig(a, n, 100)
      n += 100
    }
    // The controller let go of it (its slot is free) while it still had not read anything.
    await eventually(() => a.view.changes().watchers === 0, 'the lagging watcher to be released')
    const { events } = await drain(res)
    const last = events.at(-1)!
    expect(last.event).toBe('overflow')
    const why = JSON.parse(last.data)
    expect(why.reason).toBe('lagged')
    expect(why.limit_bytes).toBe(limit)
    // Writing stopped at the limit: at most one more event (~8 KB) beyond it was ever held.
    expect(why.buffered_bytes).toBeLessThanOrEqual(limit + 16 * 1024)
    // Everything before the cut, in order, without a gap.
    expect(events[0].event).toBe('snapshot')
    expect(new Set(events.slice(1, -1).map(e => e.event))).toEqual(new Set(['worker_added']))
    const received = events.slice(1, -1).map(e => Number(e.id!.split('-')[1]))
    expect(received.length).toBeGreaterThan(10)
    expect(received).toEqual(received.map((_, i) => received[0] + i))
    expect(why.index).toBe(received.at(-1))
    // Reconnecting from there gets a snapshot: what it missed is no longer in the log.
    const again = await bed.client.stream(`${a.url}/watch`, { headers: { 'last-event-id': events.filter(e => e.event !== 'overflow').at(-1)!.id! } })
    const first = await readSse(again.body)[Symbol.asyncIterator]().next()
    again.close()
    expect(first.value?.event).toBe('snapshot')
  }, 60_000)

  it('is cut off after 4 keepalive intervals without reading anything, and its connection destroyed when it does not take even that', async () => {
    const a = await bed.start({ id: 'a', watchBufferBytes: 64 * 1024, watchKeepaliveMs: 250, ...PATIENT })
    const res = await bed.client.stream(`${a.url}/watch`)
    // Enough to fill the kernel's socket buffers and the controller's 64 KiB beyond them.
    await registerBig(a, 0, 1500)
    const t0 = Date.now()
    await eventually(() => a.view.changes().watchers === 0, 'the stalled watcher to be released', 20_000)
    // 4 keepalives (1 s), then the close grace (5 s) for a client that reads nothing at all.
    expect(Date.now() - t0).toBeLessThan(15_000)
    const { events, error } = await drain(res)
    // Destroyed: the stream breaks off (or ends) without the rest.
    expect(error != null || events.at(-1)?.event !== 'worker_added' || events.length < 1500).toBe(true)
    // A new watcher is served as before.
    const next = await bed.client.stream(`${a.url}/watch`)
    expect(next.status).toBe(200)
    next.close()
  }, 60_000)
})

describe('1,000 watch connections', () => {
  it('opened and dropped leave the heap and the process\'s handles where they were', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const a = await bed.start({ id: 'a', maxWatchers: 1000 })
    for (let i = 0; i < 20; i++) a.view.register({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [capability('echo') as never] }, null)
    const client = httpsClient({ ...bed.tls, timeoutMs: 30_000 })
    /** Opens `n` watchers (50 at a time), each reading its snapshot, then drops them all and waits for the controller to let go. */
    const cycle = async (n: number): Promise<void> => {
      const open: StreamResponse[] = []
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, async () => {
          const res = await client.stream(`${a.url}/watch?kind=worker`)
          expect(res.status).toBe(200)
          const first = await readSse(res.body)[Symbol.asyncIterator]().next()
          expect(first.value?.event).toBe('snapshot')
          return res
        }))
        open.push(...batch)
      }
      expect(a.view.changes().watchers).toBe(n)
      // A change reaches all of them while they are open.
      a.view.register({ worker_id: 'late', worker_url: 'https://127.0.0.1:7000/late', capabilities: [capability('echo') as never] }, null)
      for (const res of open) res.close()
      await eventually(() => a.view.changes().watchers === 0, 'every watcher released', 30_000)
    }
    const settle = async (): Promise<{ heap: number, handles: Record<string, number> }> => {
      // Closed sockets finish closing over a few turns of the event loop; then collect twice.
      for (let i = 0; i < 20; i++) await new Promise(resolve => setTimeout(resolve, 25))
      gc()
      await new Promise(resolve => setTimeout(resolve, 50))
      gc()
      const handles: Record<string, number> = {}
      for (const r of getActiveResourcesInfo()) handles[r] = (handles[r] ?? 0) + 1
      return { heap: process.memoryUsage().heapUsed, handles }
    }
    try {
      // Warm-up: JIT, TLS session cache, fastify's and undici's pools reach their working size.
      await cycle(100)
      const before = await settle()
      await cycle(1000)
      const after = await settle()
      const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MB`
      console.log(`heap before ${mb(before.heap)}, after 1,000 watchers ${mb(after.heap)}; handles before ${JSON.stringify(before.handles)}, after ${JSON.stringify(after.handles)}`)
      // Tolerance 8 MB: what 1,000 watchers would leave if each kept ~8 KB (a socket, a watcher, a response
      // and its buffers are each more) is caught, while the registry, the change log (a ring, already
      // holding its entries) and V8's own heap growth between two collections stay under it.
      expect(after.heap - before.heap).toBeLessThan(8 * 1048576)
      // Handles: sockets and timers back to their count (±2 for the mesh's own timers ticking meanwhile).
      for (const kind of ['TCPSocketWrap', 'TLSWrap', 'Timeout']) {
        expect(Math.abs((after.handles[kind] ?? 0) - (before.handles[kind] ?? 0)), kind).toBeLessThanOrEqual(2)
      }
    } finally {
      await client.close()
    }
  }, 180_000)
})
