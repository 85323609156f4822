import { describe, expect, it } from 'vitest'
import { MemberTable, type Digest } from '../../../src/membership/index.ts'

/** A member table on a hand-driven clock (unhealthy after 3 s, gone after 6 s). */
function tracker (): { t: MemberTable, advance: (ms: number) => void, events: string[] } {
  let now = 0
  const t = new MemberTable({ unhealthyAfterMs: 3000, staleAfterMs: 6000, now: () => now })
  const events: string[] = []
  t.on('status', (owner, from, to) => { events.push(`status ${owner} ${from}->${to}`) })
  t.on('word', owner => { events.push(`word ${owner}`) })
  t.on('worker', (owner, id) => { events.push(`worker ${owner}/${id}`) })
  return { t, advance: ms => { now += ms; t.sweep() }, events }
}

let seq = 0
const digest = (exceptions: Digest['exceptions'] = []): Digest => ({ epoch: 'e1', seq: ++seq, owned: 2, exceptions, loads: [], registry_hash: '0000000000000000', self_preservation: false })

describe('MemberTable', () => {
  it('routes an owner\'s workers as pending until its first digest, even once it is heard from', () => {
    const { t, events } = tracker()
    expect(t.stateOf('b', 'w1')).toBe('pending')
    t.heard('b')
    expect(t.get('b')?.status).toBe('alive')
    expect(t.stateOf('b', 'w1')).toBe('pending')
    t.digest('b', digest([['w2', 'u']]))
    expect(t.stateOf('b', 'w1')).toBe('healthy')
    expect(t.stateOf('b', 'w2')).toBe('unhealthy')
    // The first word re-routes every worker of b at once (the core does it for `word`).
    expect(events).toEqual(['status b unknown->alive', 'word b'])
  })

  it('forgets what a silent owner said: after the silence, its workers wait for a fresh digest', () => {
    const { t, advance, events } = tracker()
    t.digest('b', digest())
    expect(t.stateOf('b', 'w1')).toBe('healthy')
    advance(3000)
    expect(t.get('b')?.status).toBe('silent')
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    // Back (a partition healed): heard by sync before any digest. w1 may have died meanwhile, and
    // b was judged unreachable: not even a last resort until b says so.
    t.heard('b')
    expect(t.get('b')?.status).toBe('alive')
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    // A digest delayed from before the silence is not a fresh word.
    const old = { ...digest(), seq: 1 }
    t.digest('b', old)
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    // b's new word: w1 is gone unhealthy, w2 healthy.
    events.length = 0
    t.digest('b', digest([['w1', 'u']]))
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    expect(t.stateOf('b', 'w2')).toBe('healthy')
    expect(events).toEqual(['word b'])
  })

  it('keeps a gone owner\'s workers unroutable when it is heard again, until its word', () => {
    const { t, advance } = tracker()
    t.digest('b', digest())
    advance(3000)
    advance(3000)
    expect(t.get('b')?.status).toBe('gone')
    t.heard('b')
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    t.digest('b', digest())
    expect(t.stateOf('b', 'w1')).toBe('healthy')
    // Silent again later: the next return waits for a word again.
    advance(3000)
    t.heard('b')
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
  })

  it('routes an owner never heard from within the stale window as unhealthy once heard, until its word', () => {
    const { t, advance } = tracker()
    t.know('b')
    advance(6000)
    expect(t.get('b')?.status).toBe('gone')
    t.heard('b')
    expect(t.stateOf('b', 'w1')).toBe('unhealthy')
    t.digest('b', digest())
    expect(t.stateOf('b', 'w1')).toBe('healthy')
  })

  it('applies later digests as changes of single workers', () => {
    const { t, events } = tracker()
    t.digest('b', digest())
    events.length = 0
    t.digest('b', digest([['w1', 'd']]))
    expect(t.stateOf('b', 'w1')).toBe('draining')
    expect(events).toEqual(['worker b/w1'])
  })
})
