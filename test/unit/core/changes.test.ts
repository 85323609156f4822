import { describe, expect, it } from 'vitest'
import { ChangeLog, ControllerCore, type WatchFilter, type Watcher, type WatchMessage } from '../../../src/core/index.ts'

const all: WatchFilter = { capabilities: null, kinds: null }
const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

function log (size = 5): ChangeLog {
  return new ChangeLog({ epoch: 'ep', size, snapshot: () => ({ controller_id: 'a', workers: [], controllers: [] }) })
}
const status = (l: ChangeLog, id: string): void => { l.append('controller_status', () => ({ controller_id: id, from: 'unknown', to: 'alive' })) }
const drain = (w: Watcher): WatchMessage[] => {
  const out: WatchMessage[] = []
  for (let m = w.next(); m != null; m = w.next()) {
    out.push(m)
    if (m.type === 'lagged') break
  }
  return out
}
const ids = (ms: WatchMessage[]): string[] => ms.map(m => m.type === 'event' ? m.event.id : m.type === 'snapshot' ? `snapshot@${m.snapshot.index}` : `lagged@${m.index}`)

describe('ChangeLog', () => {
  it('numbers changes within its epoch and resumes a cursor it still holds', () => {
    const l = log()
    for (const id of ['b', 'c', 'd']) status(l, id)
    expect(l.position()).toEqual({ epoch: 'ep', index: 3, oldest: 1, watchers: 0 })
    expect(ids(drain(l.watch({ epoch: 'ep', index: 1 }, all)))).toEqual(['ep-2', 'ep-3'])
    expect(ids(drain(l.watch({ epoch: 'ep', index: 0 }, all)))).toEqual(['ep-1', 'ep-2', 'ep-3'])
    expect(ids(drain(l.watch({ epoch: 'ep', index: 3 }, all)))).toEqual([])
  })

  it('gives a snapshot first to a watcher without a cursor, with one from another epoch, too old or ahead', () => {
    const l = log(3)
    for (const id of ['b', 'c', 'd', 'e', 'f']) status(l, id)
    expect(l.oldest).toBe(3)
    expect(ids(drain(l.watch(null, all)))).toEqual(['snapshot@5'])
    expect(ids(drain(l.watch({ epoch: 'other', index: 4 }, all)))).toEqual(['snapshot@5'])
    expect(ids(drain(l.watch({ epoch: 'ep', index: 1 }, all)))).toEqual(['snapshot@5'])
    expect(ids(drain(l.watch({ epoch: 'ep', index: 9 }, all)))).toEqual(['snapshot@5'])
    // The oldest held change can be resumed after: index oldest - 1.
    expect(ids(drain(l.watch({ epoch: 'ep', index: 2 }, all)))).toEqual(['ep-3', 'ep-4', 'ep-5'])
  })

  it('tells a watcher lapped by the ring that it lagged, and wakes watchers once per burst', async () => {
    const l = log(3)
    const w = l.watch(null, all)
    let wakes = 0
    w.onReady(() => { wakes++ })
    expect(ids(drain(w))).toEqual(['snapshot@0'])
    for (const id of ['b', 'c']) status(l, id)
    await tick()
    expect(wakes).toBe(1)
    expect(w.lagged).toBe(false)
    for (const id of ['d', 'e', 'f', 'g']) status(l, id)
    expect(w.lagged).toBe(true)
    expect(ids(drain(w))).toEqual(['lagged@0'])
    w.close()
    expect(l.position().watchers).toBe(0)
    status(l, 'h')
    await tick()
    expect(wakes).toBe(1)
  })

  it('builds an event\'s data once, on first use, and filters by kind and capability (controller events pass a capability filter)', () => {
    const l = log(10)
    let built = 0
    l.append('worker_removed', () => { built++; return { worker_id: 'w', controller_id: 'a', incarnation: 1, capabilities: ['x'] } }, () => ['x'])
    l.append('worker_removed', () => ({ worker_id: 'v', controller_id: 'a', incarnation: 1, capabilities: ['y'] }), () => ['y'])
    status(l, 'b')
    expect(built).toBe(0)
    const onlyX = drain(l.watch({ epoch: 'ep', index: 0 }, { capabilities: new Set(['x']), kinds: null }))
    const again = drain(l.watch({ epoch: 'ep', index: 0 }, all))
    expect(built).toBe(1)
    expect(ids(onlyX)).toEqual(['ep-1', 'ep-3'])
    expect((onlyX[0] as any).event).toBe((again[0] as any).event)
    expect(ids(drain(l.watch({ epoch: 'ep', index: 0 }, { capabilities: null, kinds: new Set(['controller']) })))).toEqual(['ep-3'])
    const w = l.watch({ epoch: 'ep', index: 1 }, { capabilities: new Set(['z']), kinds: new Set(['worker']) })
    expect(w.pending()).toBe(false)
    expect(w.position).toBe(3)
  })
})

describe('ControllerCore change log', () => {
  const core = (): ControllerCore => new ControllerCore({ controllerId: 'a', heartbeatIntervalMs: 1000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000, watchLogSize: 100 })
  const cap = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 1 }

  it('records registrations, state changes and removals with the state the worker is routed by', () => {
    const c = core()
    const w = c.changes.watch(null, all)
    const snap = w.next()
    expect(snap?.type).toBe('snapshot')
    c.register({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7000/w1', capabilities: [cap] })
    c.drain('w1')
    c.heartbeat({ worker_id: 'w1', status: 'ready' })
    c.register({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7000/w1b', capabilities: [cap] })
    c.deregister('w1')
    const events = drain(w).map(m => m.type === 'event' ? m.event : null)
    expect(events.map(e => e?.event)).toEqual(['worker_added', 'worker_state', 'worker_state', 'worker_updated', 'worker_removed'])
    expect(events[0]?.data).toMatchObject({ worker: { worker_id: 'w1', state: 'healthy', controller_id: 'a', incarnation: 1 } })
    expect(events[1]?.data).toMatchObject({ worker_id: 'w1', from: 'healthy', to: 'draining', capabilities: ['echo'] })
    expect(events[3]?.data).toMatchObject({ worker: { worker_url: 'https://127.0.0.1:7000/w1b', incarnation: 2 } })
    expect(events[4]?.data).toEqual({ worker_id: 'w1', controller_id: 'a', incarnation: 2, capabilities: ['echo'] })
    expect(c.workers({ limit: 10, offset: 0 }).index).toBe(c.changes.index)
  })
})
