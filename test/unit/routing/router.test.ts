import { describe, expect, it } from 'vitest'
import { NoHealthyWorkerError, NoWorkerError } from '../../../src/errors.ts'
import type { HealthState } from '../../../src/liveness/index.ts'
import type { Capability, WorkerRecord } from '../../../src/registry/index.ts'
import { IdempotencyCache, Router, type RouteQuery } from '../../../src/routing/index.ts'
import { Tier } from '../../../src/routing/tier.ts'
import { errorOf } from '../../helpers/controllers.ts'

function cap (name: string, extra: Partial<Capability> = {}): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 10, ...extra }
}

function rec (id: string, caps: Capability[] = [cap('echo')], owner = 'me', incarnation = 1): WorkerRecord {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: caps, incarnation, owner, registered_at: 1 }
}

function router (workers: Array<[WorkerRecord, HealthState?, number?]> = [], init: { ttlMs?: number, now?: () => number } = {}): Router {
  const r = new Router({ controllerId: 'me', retryAfterSeconds: 7, idempotency: { ttlMs: init.ttlMs, now: init.now } })
  for (const [record, state, load] of workers) r.upsert(record, state ?? 'healthy', load ?? 0)
  return r
}

const q = (extra: Partial<RouteQuery> = {}): RouteQuery => ({ verb: 'invoke', capability: 'echo', ...extra })

function picks (r: Router, query: RouteQuery, n = 12): string[] {
  return Array.from({ length: n }, () => r.route(query).worker_id)
}

describe('Router', () => {
  it('returns the worker and the capability it matched', () => {
    const r = router([[rec('a', [cap('echo', { version: '2.0.0', cost_tokens_per_invocation: 3 })])]])
    expect(r.route(q())).toEqual({
      worker_id: 'a',
      worker_url: 'https://127.0.0.1:7000/a',
      verb: 'invoke',
      capability: 'echo',
      version: '2.0.0',
      controller_id: 'me',
      incarnation: 1,
      state: 'healthy',
      load: 0,
      cost_tokens_per_invocation: 3,
      strategy: 'round_robin'
    })
  })

  it('round-robin visits every healthy worker in turn', () => {
    const r = router([[rec('a')], [rec('b')], [rec('c')]])
    const seq = picks(r, q(), 9)
    expect(new Set(seq.slice(0, 3))).toEqual(new Set(['a', 'b', 'c']))
    expect(seq.slice(3, 6)).toEqual(seq.slice(0, 3))
    expect(seq.slice(6, 9)).toEqual(seq.slice(0, 3))
  })

  it('404 (NoWorkerError) when nobody offers verb + capability; 503 (NoHealthyWorkerError) when nothing offering it is routable', () => {
    const r = router([[rec('a', [cap('echo'), cap('sum', { verb: 'compute' })]), 'unhealthy']])
    const none = errorOf(() => r.route(q({ capability: 'nope' })))
    expect(none).toBeInstanceOf(NoWorkerError)
    expect((none as NoWorkerError).code).toBe('CAPMESH_ERR_NO_WORKER')
    expect((none as NoWorkerError).capability).toBe('nope')
    expect(errorOf(() => r.route(q({ capability: 'sum' })))).toBeInstanceOf(NoWorkerError)
    const down = errorOf(() => r.route(q()))
    expect(down).toBeInstanceOf(NoHealthyWorkerError)
    expect((down as NoHealthyWorkerError).code).toBe('CAPMESH_ERR_NO_HEALTHY_WORKER')
    expect((down as NoHealthyWorkerError).retryAfter).toBe(7)
    // A filter nobody could ever satisfy: 404, even though workers are down.
    expect(errorOf(() => r.route(q({ version: '9' })))).toBeInstanceOf(NoWorkerError)
  })

  it('draining and unhealthy workers are not routed to', () => {
    const r = router([[rec('a'), 'draining'], [rec('b'), 'unhealthy'], [rec('c')]])
    expect(new Set(picks(r, q()))).toEqual(new Set(['c']))
    r.setState('c', 'draining')
    expect(errorOf(() => r.route(q()))).toBeInstanceOf(NoHealthyWorkerError)
    r.setState('b', 'healthy')
    expect(new Set(picks(r, q()))).toEqual(new Set(['b']))
  })

  it('pending workers are used only when no healthy worker offers the capability', () => {
    const r = router([[rec('p1'), 'pending'], [rec('p2'), 'pending']])
    const res = r.route(q())
    expect(res.state).toBe('pending')
    expect(new Set(picks(r, q()))).toEqual(new Set(['p1', 'p2']))
    r.upsert(rec('h'), 'healthy')
    expect(new Set(picks(r, q()))).toEqual(new Set(['h']))
    r.setState('p1', 'healthy')
    expect(new Set(picks(r, q()))).toEqual(new Set(['h', 'p1']))
  })

  describe('affinity', () => {
    const mixed = (): Router => router([
      [rec('m1', [cap('echo')], 'me')],
      [rec('x1', [cap('echo')], 'x')],
      [rec('x2', [cap('echo')], 'x')],
      [rec('y1', [cap('echo')], 'y')]
    ])

    it('with no affinity, prefers the answering controller\'s own workers', () => {
      expect(new Set(picks(mixed(), q()))).toEqual(new Set(['m1']))
    })

    it('prefers the named controller\'s workers', () => {
      const r = mixed()
      expect(new Set(picks(r, q({ affinity: 'x' })))).toEqual(new Set(['x1', 'x2']))
      expect(new Set(picks(r, q({ affinity: 'y' })))).toEqual(new Set(['y1']))
    })

    it('falls back to every healthy worker when the preferred ones are not routable', () => {
      const r = mixed()
      r.setState('y1', 'unhealthy')
      expect(new Set(picks(r, q({ affinity: 'y' })))).toEqual(new Set(['m1', 'x1', 'x2']))
      expect(new Set(picks(r, q({ affinity: 'unknown' })))).toEqual(new Set(['m1', 'x1', 'x2']))
      r.setState('m1', 'draining')
      expect(new Set(picks(r, q()))).toEqual(new Set(['x1', 'x2']))
    })

    it('falls back when the preferred workers fail the filters', () => {
      const r = router([[rec('m1', [cap('echo', { version: '1' })], 'me')], [rec('x1', [cap('echo', { version: '2' })], 'x')]])
      expect(new Set(picks(r, q({ version: '2' })))).toEqual(new Set(['x1']))
    })

    it('follows an owner change (a worker that failed over)', () => {
      const r = mixed()
      r.upsert(rec('x1', [cap('echo')], 'me', 2), 'healthy')
      expect(new Set(picks(r, q()))).toEqual(new Set(['m1', 'x1']))
      expect(new Set(picks(r, q({ affinity: 'x' })))).toEqual(new Set(['x2']))
    })
  })

  describe('filters', () => {
    it('version picks the matching capability of a worker offering several', () => {
      const r = router([[rec('a', [cap('echo', { version: '1' }), cap('echo', { version: '2' })])], [rec('b', [cap('echo', { version: '1' })])]])
      const res = r.route(q({ version: '2' }))
      expect(res).toMatchObject({ worker_id: 'a', version: '2' })
      expect(new Set(picks(r, q({ version: '1' })))).toEqual(new Set(['a', 'b']))
    })

    it('requires_gpu keeps only GPU capabilities', () => {
      const r = router([[rec('g', [cap('echo', { requires_gpu: true })])], [rec('c')]])
      expect(new Set(picks(r, q({ requires_gpu: true })))).toEqual(new Set(['g']))
      expect(new Set(picks(r, q({ requires_gpu: false })))).toEqual(new Set(['g', 'c']))
    })

    it('slo_constraints skip workers whose declared objectives are worse', () => {
      const r = router([
        [rec('fast', [cap('echo', { slo: { latency_p95_ms: 50, latency_p99_ms: 80, availability: 0.999 } })])],
        [rec('slow', [cap('echo', { slo: { latency_p95_ms: 400, latency_p99_ms: 900, availability: 0.9 } })])]
      ])
      expect(new Set(picks(r, q({ slo_constraints: { latency_p95_ms: 100 } })))).toEqual(new Set(['fast']))
      expect(new Set(picks(r, q({ slo_constraints: { latency_p99_ms: 100 } })))).toEqual(new Set(['fast']))
      expect(new Set(picks(r, q({ slo_constraints: { availability: 0.99 } })))).toEqual(new Set(['fast']))
      expect(new Set(picks(r, q({ slo_constraints: { latency_p95_ms: 500 } })))).toEqual(new Set(['fast', 'slow']))
      expect(errorOf(() => r.route(q({ slo_constraints: { latency_p95_ms: 10 } })))).toBeInstanceOf(NoWorkerError)
    })

    it('budget_tokens skips too expensive workers and picks the cheapest', () => {
      const r = router([
        [rec('pricey', [cap('echo', { cost_tokens_per_invocation: 20 })])],
        [rec('mid', [cap('echo', { cost_tokens_per_invocation: 5 })])],
        [rec('cheap', [cap('echo', { cost_tokens_per_invocation: 2 })])]
      ])
      expect(new Set(picks(r, q({ budget_tokens: 100 })))).toEqual(new Set(['cheap']))
      r.setState('cheap', 'unhealthy')
      expect(new Set(picks(r, q({ budget_tokens: 10 })))).toEqual(new Set(['mid']))
      expect(new Set(picks(r, q({ budget_tokens: 5 })))).toEqual(new Set(['mid']))
      expect(errorOf(() => r.route(q({ budget_tokens: 4 })))).toBeInstanceOf(NoHealthyWorkerError)
      expect(errorOf(() => r.route(q({ budget_tokens: 1 })))).toBeInstanceOf(NoWorkerError)
    })

    it('a worker at its max_concurrency is skipped; all saturated is a 503', () => {
      const r = router([[rec('a', [cap('echo', { max_concurrency: 2 })]), 'healthy', 2], [rec('b', [cap('echo', { max_concurrency: 2 })]), 'healthy', 1]])
      expect(new Set(picks(r, q()))).toEqual(new Set(['b']))
      r.setLoad('b', 2)
      expect(errorOf(() => r.route(q()))).toBeInstanceOf(NoHealthyWorkerError)
      r.setLoad('a', 0)
      expect(r.route(q()).worker_id).toBe('a')
    })
  })

  it('least_loaded picks the lowest load, cheapest on a tie when a budget is given', () => {
    const r = router([
      [rec('a', [cap('echo', { cost_tokens_per_invocation: 9 })]), 'healthy', 5],
      [rec('b', [cap('echo', { cost_tokens_per_invocation: 3 })]), 'healthy', 1],
      [rec('c', [cap('echo', { cost_tokens_per_invocation: 1 })]), 'healthy', 1]
    ])
    const lowest = new Set(picks(r, q({ strategy: 'least_loaded' })))
    expect([...lowest].every(id => id === 'b' || id === 'c')).toBe(true)
    expect(new Set(picks(r, q({ strategy: 'least_loaded', budget_tokens: 100 })))).toEqual(new Set(['c']))
    r.setLoad('c', 8)
    r.setLoad('b', 7)
    expect(r.route(q({ strategy: 'least_loaded' }))).toMatchObject({ worker_id: 'a', load: 5, strategy: 'least_loaded' })
  })

  describe('idempotency_key', () => {
    it('the same key gets the same worker while it stays healthy, and a new one after', () => {
      const r = router([[rec('a')], [rec('b')], [rec('c')]])
      const first = r.route(q({ idempotency_key: 'k' })).worker_id
      expect(new Set(picks(r, q({ idempotency_key: 'k' })))).toEqual(new Set([first]))
      r.setState(first, 'unhealthy')
      const second = r.route(q({ idempotency_key: 'k' })).worker_id
      expect(second).not.toBe(first)
      expect(new Set(picks(r, q({ idempotency_key: 'k' })))).toEqual(new Set([second]))
      // Recovering does not move the key back.
      r.setState(first, 'healthy')
      expect(r.route(q({ idempotency_key: 'k' })).worker_id).toBe(second)
    })

    it('keys are per capability, and a removed worker releases its keys', () => {
      const r = router([[rec('a', [cap('echo'), cap('sum')])], [rec('b', [cap('echo'), cap('sum')])]])
      const echo = r.route(q({ idempotency_key: 'k' })).worker_id
      const sum = r.route(q({ capability: 'sum', idempotency_key: 'k' })).worker_id
      expect(r.route(q({ idempotency_key: 'k' })).worker_id).toBe(echo)
      expect(r.route(q({ capability: 'sum', idempotency_key: 'k' })).worker_id).toBe(sum)
      r.remove(echo)
      expect(r.route(q({ idempotency_key: 'k' })).worker_id).not.toBe(echo)
    })

    it('a key expires after its TTL', () => {
      let now = 0
      const r = router([[rec('a')], [rec('b')]], { ttlMs: 1000, now: () => now })
      const first = r.route(q({ idempotency_key: 'k' })).worker_id
      now = 500
      expect(r.route(q({ idempotency_key: 'k' })).worker_id).toBe(first)
      r.route(q()) // round-robin moves on
      now = 5000
      const later = new Set(Array.from({ length: 4 }, () => { now += 2000; return r.route(q({ idempotency_key: 'k' })).worker_id }))
      expect(later).toEqual(new Set(['a', 'b']))
    })
  })

  it('capabilities() lists each verb + name with versions and worker counts, and forgets removed ones', () => {
    const r = router([
      [rec('a', [cap('echo', { version: '2' }), cap('sum', { verb: 'compute' })])],
      [rec('b', [cap('echo', { version: '1' })]), 'unhealthy']
    ])
    expect(r.capabilities()).toEqual([
      { verb: 'compute', name: 'sum', versions: ['1.0.0'], workers: 1, healthy_workers: 1 },
      { verb: 'invoke', name: 'echo', versions: ['1', '2'], workers: 2, healthy_workers: 1 }
    ])
    r.remove('a')
    expect(r.capabilities()).toEqual([{ verb: 'invoke', name: 'echo', versions: ['1'], workers: 1, healthy_workers: 0 }])
    r.remove('b')
    expect(r.capabilities()).toEqual([])
    expect(errorOf(() => r.route(q()))).toBeInstanceOf(NoWorkerError)
  })

  it('upsert replaces a worker\'s capabilities', () => {
    const r = router([[rec('a', [cap('old')])]])
    r.upsert(rec('a', [cap('new')], 'me', 2), 'healthy')
    expect(r.route(q({ capability: 'new' })).incarnation).toBe(2)
    expect(errorOf(() => r.route(q({ capability: 'old' })))).toBeInstanceOf(NoWorkerError)
  })

  it('stays correct through heavy churn (index and round-robin agree with a brute-force model)', () => {
    const r = new Router({ controllerId: 'me' })
    const model = new Map<string, HealthState>()
    let seed = 42
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    const states: HealthState[] = ['healthy', 'unhealthy', 'draining', 'pending']
    for (let step = 0; step < 3000; step++) {
      const id = `w${rnd(60)}`
      const op = rnd(4)
      if (op === 0) {
        const s = states[rnd(4)]
        r.upsert(rec(id), s)
        model.set(id, s)
      }
      if (op === 1) { r.remove(id); model.delete(id) }
      if (op === 2 && model.has(id)) { const s = states[rnd(4)]; r.setState(id, s); model.set(id, s) }
      if (op === 3) {
        const healthy = [...model].filter(([, s]) => s === 'healthy').map(([k]) => k)
        const pending = [...model].filter(([, s]) => s === 'pending').map(([k]) => k)
        if (healthy.length > 0) {
          const seen = new Set(picks(r, q(), healthy.length))
          expect(seen).toEqual(new Set(healthy))
        } else if (pending.length > 0) {
          expect(pending).toContain(r.route(q()).worker_id)
        } else if (model.size > 0) {
          expect(errorOf(() => r.route(q()))).toBeInstanceOf(NoHealthyWorkerError)
        } else {
          expect(errorOf(() => r.route(q()))).toBeInstanceOf(NoWorkerError)
        }
      }
    }
  })

  it('keeps per-state counts equal to a recount through upserts, state changes, replacements and removals', () => {
    const r = router()
    const states: HealthState[] = ['healthy', 'unhealthy', 'draining', 'pending']
    const truth = new Map<string, HealthState>()
    let seed = 7
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
    for (let step = 0; step < 2_000; step++) {
      const id = `w${rand(50)}`
      const op = rand(4)
      if (op === 0) {
        const st = states[rand(4)]
        r.upsert(rec(id, [cap('echo'), cap(`c${rand(3)}`)], 'me', rand(5)), st)
        truth.set(id, st)
      } else if (op === 1 && truth.has(id)) {
        const st = states[rand(4)]
        r.setState(id, st)
        truth.set(id, st)
      } else if (op === 2) {
        r.remove(id)
        truth.delete(id)
      } else {
        r.setState(id, states[rand(4)]) // unknown ids are ignored
        if (!truth.has(id)) continue
        r.setState(id, truth.get(id)!)
      }
      if (step % 100 === 0 || step === 1_999) {
        const recount = { total: truth.size, healthy: 0, unhealthy: 0, draining: 0, pending: 0 }
        for (const st of truth.values()) recount[st]++
        expect(r.counts()).toEqual(recount)
      }
    }
  })
})

describe('Router.routeText', () => {
  it('answers what route() answers, as JSON text, through random changes of records, states and loads', () => {
    // Two routers fed the same changes make the same decisions: one answers with route(), the other with routeText().
    const a = router()
    const b = router()
    const states: HealthState[] = ['healthy', 'unhealthy', 'draining', 'pending']
    const owners = ['me', 'peer-1', 'peer-2']
    let seed = 11
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
    const queries: RouteQuery[] = [
      q(), q(), q({ capability: 'c1' }), q({ affinity: 'peer-1' }), q({ affinity: 'nobody' }), q({ strategy: 'least_loaded' }),
      q({ version: '2.0.0' }), q({ requires_gpu: true }), q({ idempotency_key: 'k1' }), q({ budget_tokens: 5 })
    ]
    let routed = 0
    for (let step = 0; step < 3_000; step++) {
      const id = `w${rand(30)}`
      const op = rand(6)
      if (op === 0) {
        const caps = [cap('echo', { version: rand(2) === 0 ? '1.0.0' : '2.0.0', requires_gpu: rand(3) === 0, cost_tokens_per_invocation: rand(10) }), cap(`c${rand(2)}`)]
        const record = rec(id, caps, owners[rand(3)], 1 + rand(5))
        record.worker_url = `https://127.0.0.1:${7000 + rand(100)}/${id}`
        const st = states[rand(4)]
        const load = rand(3) === 0 ? rand(12) : 0
        a.upsert(record, st, load)
        b.upsert(structuredClone(record), st, load)
      } else if (op === 1) {
        const st = states[rand(4)]
        a.setState(id, st)
        b.setState(id, st)
      } else if (op === 2) {
        const load = rand(2) === 0 ? 0 : rand(12)
        a.setLoad(id, load)
        b.setLoad(id, load)
      } else if (op === 3) {
        a.remove(id)
        b.remove(id)
      } else {
        const query = queries[rand(queries.length)]
        const answer = (f: () => unknown): unknown => { try { return f() } catch (err) { return err } }
        const want = answer(() => a.route({ ...query }))
        const got = answer(() => b.routeText({ ...query }))
        if (want instanceof Error) {
          expect(got).toBeInstanceOf(want.constructor)
        } else {
          expect(JSON.parse(got as string)).toEqual(want)
          routed++
        }
      }
    }
    expect(routed).toBeGreaterThan(500)
  })

  it('never answers from a stale cached text: a new record, state or load shows at once', () => {
    const r = router([[rec('a')]])
    expect(JSON.parse(r.routeText(q()))).toMatchObject({ worker_id: 'a', worker_url: 'https://127.0.0.1:7000/a', state: 'healthy', load: 0, incarnation: 1 })
    const moved = rec('a', [cap('echo')], 'me', 2)
    moved.worker_url = 'https://127.0.0.1:7001/a'
    r.upsert(moved, 'healthy')
    expect(JSON.parse(r.routeText(q()))).toMatchObject({ worker_url: 'https://127.0.0.1:7001/a', incarnation: 2 })
    r.setState('a', 'pending')
    expect(JSON.parse(r.routeText(q()))).toMatchObject({ state: 'pending' })
    r.setState('a', 'healthy')
    r.setLoad('a', 3)
    expect(JSON.parse(r.routeText(q()))).toMatchObject({ state: 'healthy', load: 3 })
    r.setLoad('a', 0)
    expect(JSON.parse(r.routeText(q()))).toMatchObject({ load: 0 })
    r.setLoad('a', 10)
    expect(errorOf(() => r.routeText(q()))).toBeInstanceOf(NoHealthyWorkerError)
  })
})

describe('Tier', () => {
  const offer = (load = 0) => ({ inAll: -1, inHealthy: -1, inOwn: -1, inPending: -1, worker: { load }, name: '' })
  it('adds, deletes by swap and indexes by position, each offer knowing its place', () => {
    const t = new Tier<ReturnType<typeof offer>>('inHealthy')
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(name => ({ ...offer(), name }))
    for (const o of [a, b, c, d]) t.add(o)
    expect(t.add(a)).toBe(false)
    expect(t.size).toBe(4)
    expect(t.delete(b)).toBe(1)
    expect(t.delete(b)).toBe(-1)
    expect([...t].map(o => o.name)).toEqual(['a', 'd', 'c'])
    for (const [i, o] of [...t].entries()) expect(o.inHealthy).toBe(i)
    expect(b.inHealthy).toBe(-1)
    for (const o of [d, a, c]) t.delete(o)
    expect(t.size).toBe(0)
  })

  it('keeps each cached text with its offer through swap-removes, and counts busy offers', () => {
    const t = new Tier<ReturnType<typeof offer>>('inOwn')
    const os = ['a', 'b', 'c'].map(name => ({ ...offer(name === 'b' ? 2 : 0), name }))
    for (const o of os) t.add(o)
    expect(t.busy).toBe(1)
    const built: string[] = []
    const build = (o: { name: string }): string => { built.push(o.name); return `text-${o.name}` }
    expect([0, 1, 2].map(i => t.text(i, build))).toEqual(['text-a', 'text-b', 'text-c'])
    t.delete(os[0])
    expect(t.busy).toBe(1)
    // c moved into a's place with its text; nothing is built again.
    expect([0, 1].map(i => t.text(i, build))).toEqual(['text-c', 'text-b'])
    expect(built).toEqual(['a', 'b', 'c'])
    t.delete(os[1])
    expect(t.busy).toBe(0)
    t.add(os[0])
    expect(t.text(1, build)).toBe('text-a')
    expect(built).toEqual(['a', 'b', 'c', 'a'])
  })
})

describe('IdempotencyCache', () => {
  it('expires keys after the TTL and forgets the oldest beyond maxKeys', () => {
    let now = 0
    const cache = new IdempotencyCache({ ttlMs: 100, maxKeys: 2, now: () => now })
    cache.set('a', 'w1')
    cache.set('b', 'w2')
    expect(cache.get('a')).toBe('w1')
    cache.set('c', 'w3')
    expect(cache.size).toBe(2)
    expect(cache.get('a')).toBeUndefined()
    expect(cache.get('c')).toBe('w3')
    now = 100
    expect(cache.get('b')).toBeUndefined()
  })
})
