import { describe, expect, it } from 'vitest'
import { LocalView } from '../../../src/client/index.ts'
import { NoHealthyWorkerError, NoWorkerError } from '../../../src/errors.ts'
import type { HealthState, WatchEvent, WatchSnapshot, WorkerView } from '../../../src/wire/index.ts'

const cap = (name: string) => ({ name, verb: 'invoke', version: '1.0.0', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 4 })
const worker = (id: string, caps: string[], state: HealthState = 'healthy', owner = 'a'): WorkerView => ({
  worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: caps.map(cap), state, last_heartbeat: null, load: 0, controller_id: owner, incarnation: 1, registered_at: '2026-01-01T00:00:00.000Z'
})
const snapshot = (workers: WorkerView[], index = 10): WatchSnapshot => ({ controller_id: 'a', epoch: 'e1', index, workers, controllers: [{ controller_id: 'a', status: 'alive', self_preservation: false, self: true }] })

let n = 10
const ev = <E extends WatchEvent['event']>(event: E, data: Extract<WatchEvent, { event: E }>['data']): WatchEvent => ({ id: `e1-${++n}`, index: n, event, data } as WatchEvent)
const removed = (w: WorkerView): WatchEvent => ev('worker_removed', { worker_id: w.worker_id, controller_id: w.controller_id, incarnation: w.incarnation, capabilities: w.capabilities.map(c => c.name) })
const state = (w: WorkerView, from: HealthState, to: HealthState): WatchEvent => ev('worker_state', { worker_id: w.worker_id, controller_id: w.controller_id, capabilities: w.capabilities.map(c => c.name), from, to, load: 0 })

function view (holdBelow = 1, capabilities: string[] | null = null): { v: LocalView, log: string[] } {
  const v = new LocalView({ holdBelow, capabilities: capabilities != null ? new Set(capabilities) : null })
  const log: string[] = []
  v.on('hold', h => log.push(`hold ${h.workerId} ${h.capabilities.map(c => c.name).join(',')}`))
  v.on('release', r => log.push(`release ${r.workerId} ${r.reason}`))
  return { v, log }
}
const routeX = (v: LocalView, capability = 'x'): string => v.route({ verb: 'invoke', capability }).worker_id

describe('LocalView', () => {
  it('routes like the router: round robin over healthy workers, pending as a fallback, 404 vs 503', () => {
    const { v } = view()
    expect(() => routeX(v)).toThrow(/no view yet/)
    v.snapshot(snapshot([worker('w1', ['x']), worker('w2', ['x']), worker('p', ['y'], 'pending'), worker('u', ['z'], 'unhealthy')]))
    expect(new Set([routeX(v), routeX(v), routeX(v)])).toEqual(new Set(['w1', 'w2']))
    expect(routeX(v, 'y')).toBe('p')
    expect(() => routeX(v, 'z')).toThrow(NoHealthyWorkerError)
    expect(() => routeX(v, 'nothing')).toThrow(NoWorkerError)
    expect(v.cursor).toEqual({ epoch: 'e1', index: 10 })
  })

  it('applies events in order and moves its cursor', () => {
    const { v, log } = view()
    const w1 = worker('w1', ['x'])
    v.snapshot(snapshot([w1]))
    const w2 = worker('w2', ['x'])
    v.apply(ev('worker_added', { worker: w2 }))
    v.apply(state(w1, 'healthy', 'draining'))
    expect([routeX(v), routeX(v)]).toEqual(['w2', 'w2'])
    v.apply(removed(w2))
    // w2's removal leaves x with no routable worker: held, w2 still routed to.
    expect(routeX(v)).toBe('w2')
    expect(log).toEqual(['hold w2 x'])
    expect(v.cursor?.index).toBe(n)
  })

  it('holds a drop to zero until a second controller confirms it', () => {
    const { v, log } = view()
    const w1 = worker('w1', ['x', 'y'])
    const w2 = worker('w2', ['y'])
    v.snapshot(snapshot([w1, w2]))
    v.apply(removed(w1))
    expect(log).toEqual(['hold w1 x'])
    expect(v.heldCapabilities()).toEqual([{ verb: 'invoke', name: 'x' }])
    expect(routeX(v)).toBe('w1')
    // The other controller still sees one routable worker of x: not confirmed.
    expect(v.confirm({ verb: 'invoke', name: 'x' }, 1)).toBe(false)
    expect(routeX(v)).toBe('w1')
    expect(v.confirm({ verb: 'invoke', name: 'x' }, 0)).toBe(true)
    expect(log).toEqual(['hold w1 x', 'release w1 confirmed'])
    expect(() => routeX(v)).toThrow(NoWorkerError)
    expect(routeX(v, 'y')).toBe('w2')
    expect(v.heldChanges()).toEqual([])
  })

  it('releases a held change when a later event makes it harmless: the worker recovers, or another joins', () => {
    const { v, log } = view()
    const w1 = worker('w1', ['x'])
    v.snapshot(snapshot([w1]))
    v.apply(state(w1, 'healthy', 'unhealthy'))
    expect(routeX(v)).toBe('w1')
    v.apply(state(w1, 'unhealthy', 'healthy'))
    expect(log).toEqual(['hold w1 x', 'release w1 restored'])
    v.apply(removed(w1))
    const w3 = worker('w3', ['x'])
    v.apply(ev('worker_added', { worker: w3 }))
    expect(log.slice(2)).toEqual(['hold w1 x', 'release w1 restored'])
    expect([routeX(v), routeX(v)]).toEqual(['w3', 'w3'])
  })

  it('a snapshot replaces everything and releases what was held', () => {
    const { v, log } = view()
    const w1 = worker('w1', ['x'])
    v.snapshot(snapshot([w1]))
    v.apply(removed(w1))
    v.snapshot(snapshot([worker('w9', ['x'])], 50))
    expect(log).toEqual(['hold w1 x', 'release w1 snapshot'])
    expect(routeX(v)).toBe('w9')
    expect(v.cursor).toEqual({ epoch: 'e1', index: 50 })
  })

  it('holdBelow: 0 holds nothing; 2 holds a drop to one as well', () => {
    const off = view(0)
    const w1 = worker('w1', ['x'])
    off.v.snapshot(snapshot([w1]))
    off.v.apply(removed(w1))
    expect(off.log).toEqual([])
    expect(() => routeX(off.v)).toThrow(NoWorkerError)

    const two = view(2)
    const a1 = worker('a1', ['x'])
    const a2 = worker('a2', ['x'])
    const a3 = worker('a3', ['x'])
    two.v.snapshot(snapshot([a1, a2, a3]))
    two.v.apply(removed(a1))
    two.v.apply(removed(a2))
    expect(two.log).toEqual(['hold a2 x'])
    expect(new Set([routeX(two.v), routeX(two.v)])).toEqual(new Set(['a2', 'a3']))
  })

  it('refuses a capability it does not watch', () => {
    const { v } = view(1, ['x'])
    v.snapshot(snapshot([worker('w1', ['x'])]))
    expect(routeX(v)).toBe('w1')
    expect(() => routeX(v, 'y')).toThrow(expect.objectContaining({ name: 'ValidationError' }))
  })
})
