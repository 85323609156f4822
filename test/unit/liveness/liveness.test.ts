import { describe, expect, it } from 'vitest'
import { Liveness, type HealthState } from '../../../src/liveness/index.ts'

/** A Liveness on an injected clock, recording every event. */
function setup (init: { unhealthyAfterMs?: number, staleAfterMs?: number } = {}) {
  const clock = { mono: 1_000, wall: 1_700_000_000_000 }
  const live = new Liveness({ unhealthyAfterMs: 600, staleAfterMs: 1200, ...init, now: () => clock.mono, wallNow: () => clock.wall })
  const states: Array<[string, HealthState, HealthState]> = []
  const expired: Array<[string, HealthState]> = []
  const loads: Array<[string, number]> = []
  live.on('state', (id, from, to) => states.push([id, from, to]))
  live.on('expire', (id, last) => expired.push([id, last.state]))
  live.on('load', (id, load) => loads.push([id, load]))
  const advance = (ms: number): void => {
    clock.mono += ms
    clock.wall += ms
    live.sweep()
  }
  return { live, clock, states, expired, loads, advance }
}

describe('Liveness', () => {
  it('uses the platform defaults when not told otherwise', () => {
    const live = new Liveness()
    expect(live.unhealthyAfterMs).toBe(60_000)
    expect(live.staleAfterMs).toBe(120_000)
  })

  it('healthy → unhealthy after unhealthyAfter → expired after staleAfter', () => {
    const { live, states, expired, advance } = setup()
    live.track('w', 'healthy')
    expect(live.get('w')?.state).toBe('healthy')
    advance(599)
    expect(live.get('w')?.state).toBe('healthy')
    advance(1)
    expect(live.get('w')?.state).toBe('unhealthy')
    expect(states).toEqual([['w', 'healthy', 'unhealthy']])
    advance(599)
    expect(expired).toEqual([])
    advance(1)
    expect(expired).toEqual([['w', 'unhealthy']])
    expect(live.get('w')).toBeUndefined()
    expect(live.size).toBe(0)
  })

  it('heartbeats keep a worker healthy for as long as they come', () => {
    const { live, states, expired, advance } = setup()
    live.track('w', 'healthy')
    for (let i = 0; i < 50; i++) {
      advance(500)
      expect(live.heartbeat('w')).toBe(true)
    }
    expect(live.get('w')?.state).toBe('healthy')
    expect(states).toEqual([])
    expect(expired).toEqual([])
  })

  it('a heartbeat brings an unhealthy worker back and records when it came', () => {
    const { live, clock, states, advance } = setup()
    live.track('w', 'healthy')
    advance(700)
    expect(live.get('w')?.state).toBe('unhealthy')
    advance(100)
    live.heartbeat('w')
    expect(live.get('w')).toMatchObject({ state: 'healthy', lastSeen: clock.mono, lastHeartbeatAt: clock.wall })
    expect(states).toEqual([['w', 'healthy', 'unhealthy'], ['w', 'unhealthy', 'healthy']])
  })

  it('pending (restored) workers: no heartbeat time, healthy on heartbeat, expired without one', () => {
    const { live, states, expired, advance } = setup()
    live.track('p', 'pending')
    live.track('q', 'pending')
    expect(live.get('p')).toMatchObject({ state: 'pending', lastHeartbeatAt: null })
    // Pending workers are not marked unhealthy: they were never confirmed.
    advance(700)
    expect(live.get('p')?.state).toBe('pending')
    live.heartbeat('p')
    expect(live.get('p')?.state).toBe('healthy')
    advance(500)
    expect(expired).toEqual([['q', 'pending']])
    expect(live.get('p')?.state).toBe('healthy')
    expect(states).toEqual([['p', 'pending', 'healthy']])
  })

  it('track(pending) never downgrades a known worker; track(healthy) refreshes it', () => {
    const { live, clock, states, advance } = setup()
    live.track('w', 'healthy')
    advance(300)
    live.track('w', 'pending')
    expect(live.get('w')?.state).toBe('healthy')
    advance(400)
    expect(live.get('w')?.state).toBe('unhealthy')
    live.track('w', 'healthy')
    expect(live.get('w')).toMatchObject({ state: 'healthy', lastSeen: clock.mono, lastHeartbeatAt: clock.wall })
    expect(states).toEqual([['w', 'healthy', 'unhealthy'], ['w', 'unhealthy', 'healthy']])
  })

  it('draining: by drain() or a heartbeat saying so; stays draining until a heartbeat says otherwise; expires when silent', () => {
    const { live, states, expired, advance } = setup()
    live.track('a', 'healthy')
    live.track('b', 'healthy')
    expect(live.drain('a')).toBe(true)
    expect(live.heartbeat('b', { draining: true })).toBe(true)
    expect(live.get('a')?.state).toBe('draining')
    expect(live.get('b')?.state).toBe('draining')
    live.heartbeat('b')
    expect(live.get('b')?.state).toBe('draining')
    live.heartbeat('b', { draining: false })
    expect(live.get('b')?.state).toBe('healthy')
    // A silent draining worker is not reported unhealthy, just removed at staleAfter.
    advance(700)
    expect(live.get('a')?.state).toBe('draining')
    advance(500)
    expect(expired).toContainEqual(['a', 'draining'])
    expect(states).toContainEqual(['a', 'healthy', 'draining'])
    expect(live.drain('a')).toBe(false)
  })

  it('unknown workers: heartbeat and drain return false and track nothing', () => {
    const { live } = setup()
    expect(live.heartbeat('ghost')).toBe(false)
    expect(live.drain('ghost')).toBe(false)
    expect(live.size).toBe(0)
  })

  it('records load from heartbeats and reports changes only', () => {
    const { live, loads } = setup()
    live.track('w', 'healthy')
    live.heartbeat('w', { load: 3 })
    live.heartbeat('w', { load: 3 })
    live.heartbeat('w')
    live.heartbeat('w', { load: 0 })
    expect(loads).toEqual([['w', 3], ['w', 0]])
    expect(live.get('w')?.load).toBe(0)
    // Re-tracking keeps the last load.
    live.heartbeat('w', { load: 5 })
    live.track('w', 'healthy')
    expect(live.get('w')?.load).toBe(5)
  })

  it('untrack forgets a worker without an expire event', () => {
    const { live, expired, advance } = setup()
    live.track('w', 'healthy')
    live.untrack('w')
    advance(5000)
    expect(live.get('w')).toBeUndefined()
    expect(expired).toEqual([])
  })

  it('counts workers per state', () => {
    const { live, advance } = setup()
    live.track('a', 'healthy')
    live.track('b', 'healthy')
    live.track('c', 'pending')
    live.track('d', 'healthy')
    live.drain('d')
    advance(650)
    live.heartbeat('a')
    expect(live.counts()).toEqual({ healthy: 1, unhealthy: 1, draining: 1, pending: 1 })
    expect([...live.entries()].map(([id]) => id).sort()).toEqual(['a', 'b', 'c', 'd'])
  })

  it('a wall-clock jump evicts no one (times are monotonic)', () => {
    const { live, clock, expired } = setup()
    live.track('w', 'healthy')
    clock.wall += 10 * 86_400_000
    live.sweep()
    expect(live.get('w')?.state).toBe('healthy')
    expect(expired).toEqual([])
  })

  it('sweeps many workers in one pass, each on its own clock', () => {
    const { live, expired, advance } = setup({ unhealthyAfterMs: 100, staleAfterMs: 200 })
    for (let i = 0; i < 1000; i++) live.track(`w${i}`, 'healthy')
    advance(150)
    // 10% go silent: few enough to believe they died (below the self-preservation ratio).
    for (let i = 100; i < 1000; i++) live.heartbeat(`w${i}`)
    advance(60)
    expect(expired).toHaveLength(100)
    expect(expired.every(([id]) => Number(id.slice(1)) < 100)).toBe(true)
    expect(live.counts()).toEqual({ healthy: 900, unhealthy: 0, draining: 0, pending: 0 })
    expect(live.selfPreservation).toBe(false)
  })
})

describe('Liveness self-preservation', () => {
  it('stops evicting when too many workers go silent at once, and evicts anyway after a few stale windows', () => {
    const { live, expired, advance } = setup({ unhealthyAfterMs: 100, staleAfterMs: 200 })
    const sp: boolean[] = []
    live.on('selfPreservation', on => sp.push(on))
    for (let i = 0; i < 10; i++) live.track(`w${i}`, 'healthy')
    // Half of them fall silent together: more likely this controller is cut off.
    const keep = (): void => { for (let i = 5; i < 10; i++) live.heartbeat(`w${i}`) }
    for (let t = 0; t < 5; t++) { advance(50); keep() }
    expect(live.selfPreservation).toBe(true)
    expect(sp).toEqual([true])
    expect(expired).toEqual([])
    expect(live.counts()).toMatchObject({ healthy: 5, unhealthy: 5 })
    // Not for ever: after the maximum stretch the silent ones go.
    for (let t = 0; t < 30 && expired.length === 0; t++) { advance(50); keep() }
    expect(expired.map(([id]) => id).sort()).toEqual(['w0', 'w1', 'w2', 'w3', 'w4'])
    advance(1)
    expect(live.selfPreservation).toBe(false)
    expect(sp).toEqual([true, false])
  })

  it('does not apply to tiny registries or to pending (never confirmed) workers', () => {
    const { live, expired, advance } = setup({ unhealthyAfterMs: 100, staleAfterMs: 200 })
    for (let i = 0; i < 3; i++) live.track(`h${i}`, 'healthy')
    for (let i = 0; i < 20; i++) live.track(`p${i}`, 'pending')
    advance(250)
    expect(live.selfPreservation).toBe(false)
    expect(expired).toHaveLength(23)
  })
})
