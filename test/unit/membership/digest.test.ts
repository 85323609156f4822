/**
 * Digests too large for one gossip message are split into parts by worker
 * id, and a member's word is current only once every part is in. Small
 * digests are one message with no `part` field, exactly as before parts.
 * Between full digests a large word travels as its changes.
 */
import { describe, expect, it } from 'vitest'
import {
  buildDigest, decodeChanges, decodeDigest, DigestError, encodeChanges, encodeDigest, MemberTable, Membership, partOf, type Digest, type OwnedWorker,
  type WordChanges
} from '../../../src/membership/index.ts'
import { DEFAULT_MAX_GOSSIP_BYTES } from '../../../src/constants.ts'

const header = (seq: number) => ({ epoch: 'e1', seq, owned: 0, registry_hash: '00000000deadbeef', self_preservation: true, addrs: ['/ip4/127.0.0.1/tcp/9100/p2p/x'], peers: ['/ip4/127.0.0.1/tcp/9101/p2p/y'] })

/** `n` owned workers: every third unhealthy, every fifth loaded. */
function workers (n: number): OwnedWorker[] {
  return Array.from({ length: n }, (_, i) => ({ id: `worker-with-a-longish-id-${i}`, state: i % 3 === 0 ? 'unhealthy' : 'healthy', load: i % 5 === 0 ? 3 : 0 }))
}

function table (): { t: MemberTable, events: string[] } {
  const t = new MemberTable({ unhealthyAfterMs: 3000, staleAfterMs: 6000, now: () => 0 })
  const events: string[] = []
  t.on('word', id => { events.push(`word ${id}`) })
  t.on('worker', (id, w) => { events.push(`worker ${id}/${w}`) })
  t.heard('b')
  return { t, events }
}

describe('digest parts', () => {
  it('a digest that fits is one message without a part field', () => {
    const parts = buildDigest(header(1), workers(100))
    expect(parts).toHaveLength(1)
    expect(parts[0].part).toBeUndefined()
    expect(parts[0].exceptions).toHaveLength(34)
    expect(parts[0].loads).toHaveLength(20)
    expect(decodeDigest(encodeDigest(parts[0]))).toEqual(parts[0])
  })

  it('a large one is split into a power of two of parts, each well below the gossip limit, every worker in its own part', () => {
    const ws = workers(100_000)
    const parts = buildDigest(header(1), ws)
    expect(parts.length).toBeGreaterThan(1)
    expect(Math.log2(parts.length) % 1).toBe(0)
    for (const [i, d] of parts.entries()) {
      expect(d.part).toEqual([i, parts.length])
      expect(encodeDigest(d).length).toBeLessThan(DEFAULT_MAX_GOSSIP_BYTES / 2)
      for (const [id] of d.exceptions) expect(partOf(id, parts.length)).toBe(i)
      // Addresses and introductions once, in part 0.
      expect(d.addrs != null).toBe(i === 0)
      expect(decodeDigest(encodeDigest(d))).toEqual(d)
    }
    expect(parts.reduce((n, d) => n + d.exceptions.length, 0)).toBe(ws.filter(w => w.state !== 'healthy').length)
    expect(parts.reduce((n, d) => n + d.loads.length, 0)).toBe(ws.filter(w => w.load > 0).length)
  })

  it('a member\'s workers are pending until every part arrived, then reported as the parts say', () => {
    const { t, events } = table()
    const ws = workers(100_000)
    const parts = buildDigest(header(1), ws)
    const probe = ws.slice(0, 30)
    for (const d of parts.slice(0, -1)) t.digest('b', d)
    // A worker in the missing part is not known yet; none is called healthy before its word is complete.
    for (const w of probe) expect(t.stateOf('b', w.id)).toBe('pending')
    expect(events).toEqual([])
    t.digest('b', parts.at(-1)!)
    expect(events).toEqual(['word b'])
    for (const w of probe) {
      expect(t.stateOf('b', w.id)).toBe(w.state)
      expect(t.loadOf('b', w.id)).toBe(w.load)
    }
  })

  it('a later digest changes single workers; a stale part is ignored; a new split replaces the word once complete', () => {
    const { t, events } = table()
    const ws = workers(100_000)
    for (const d of buildDigest(header(1), ws)) t.digest('b', d)
    events.length = 0
    // w0 recovers: only its part changes.
    const next = ws.map(w => w.id === ws[0].id ? { ...w, state: 'healthy' as const } : w)
    const parts2 = buildDigest(header(2), next)
    for (const d of parts2) t.digest('b', d)
    expect(events).toEqual([`worker b/${ws[0].id}`])
    expect(t.stateOf('b', ws[0].id)).toBe('healthy')
    // A part of the first digest, delivered late, changes nothing.
    t.digest('b', buildDigest(header(1), ws)[partOf(ws[0].id, parts2.length)])
    expect(t.stateOf('b', ws[0].id)).toBe('healthy')
    // Far fewer listed workers: one message again, which replaces the word at once; only the workers it
    // no longer lists are re-routed (not every worker of the member).
    events.length = 0
    const small: Digest = buildDigest(header(3), ws.slice(0, 10))[0]
    t.digest('b', small)
    // (and w0, which the small digest lists as unhealthy again).
    const unlisted = next.slice(10).filter(w => w.state !== 'healthy' || w.load > 0).map(w => `worker b/${w.id}`)
    expect(events.sort()).toEqual([`worker b/${ws[0].id}`, ...unlisted].sort())
    expect(t.stateOf('b', ws[3].id)).toBe('unhealthy')
    expect(t.stateOf('b', ws[50_000].id)).toBe('healthy')
  })

  it('a word split into more parts is assembled beside the current one, which routes until the last part is in', () => {
    const { t, events } = table()
    const ws = workers(1000)
    t.digest('b', buildDigest(header(1), ws)[0])
    expect(t.get('b')?.current).toBe(true)
    events.length = 0
    // Many more listed workers: a digest in parts. Meanwhile the one-part word still routes.
    const more = workers(100_000)
    const parts = buildDigest(header(2), more)
    expect(parts.length).toBeGreaterThan(1)
    for (const d of parts.slice(0, -1)) t.digest('b', d)
    expect(events).toEqual([])
    expect(t.stateOf('b', more[99_999].id)).toBe('healthy')
    expect(t.stateOf('b', more[0].id)).toBe('unhealthy')
    t.digest('b', parts.at(-1)!)
    // Then the workers that the larger word lists besides the first thousand, and no others.
    const added = more.slice(1000).filter(w => w.state !== 'healthy' || w.load > 0).map(w => `worker b/${w.id}`)
    expect(events.length).toBe(added.length)
    expect(events.includes('word b')).toBe(false)
    for (const w of [more[0], more[99_999], more[50_001], more[60_000]]) {
      expect(t.stateOf('b', w.id)).toBe(w.state)
      expect(t.loadOf('b', w.id)).toBe(w.load)
    }
    expect(t.get('b')?.wordSeq).toBe(2)
  })

  it('decoding refuses a part index outside its count', () => {
    const d = { ...buildDigest(header(1), workers(10))[0], part: [2, 2] }
    expect(() => decodeDigest(encodeDigest(d as Digest))).toThrow(/part 2 of 2/)
  })
})

describe('word changes', () => {
  /** A controller `a` whose workers are `ws` (mutable), publishing into `sent`, and a table `t` of a peer applying what it receives. */
  function mesh (ws: OwnedWorker[], opts: { understood?: () => boolean, keepaliveMs?: number } = {}) {
    let now = 0
    const sent: Array<{ kind: 'digest', d: Digest } | { kind: 'changes', c: WordChanges }> = []
    const a = new Membership({
      controllerId: 'a',
      local: { ownWorkers: () => ws, registryHash: () => 'h', workersSelfPreservation: () => false },
      unhealthyAfterMs: 60_000,
      staleAfterMs: 120_000,
      digestIntervalMs: 1000,
      digestKeepaliveMs: opts.keepaliveMs ?? 15_000,
      now: () => now
    })
    a.attach({
      publish: p => { sent.push({ kind: 'digest', d: decodeDigest(p) }) },
      publishChanges: p => { sent.push({ kind: 'changes', c: decodeChanges(p) }) },
      changesUnderstood: opts.understood ?? (() => true),
      reachable: () => true,
      localAddrs: () => [],
      introductions: () => [],
      learnAddrs: () => {},
      learnIntroduced: () => {}
    })
    const t = new MemberTable({ unhealthyAfterMs: 60_000, staleAfterMs: 120_000, now: () => now })
    const events: string[] = []
    t.on('word', id => { events.push(`word ${id}`) })
    t.on('worker', (id, w) => { events.push(`worker ${id}/${w}`) })
    /** One tick of `a` 1 s later; what it sent is delivered to `t` unless `lose`. */
    const tick = (lose = false): typeof sent => {
      now += 1000
      const from = sent.length
      a.tick()
      const out = sent.slice(from)
      if (!lose) for (const m of out) m.kind === 'digest' ? t.digest('a', m.d) : t.changes('a', m.c)
      return out
    }
    return { a, t, sent, events, tick }
  }

  const kinds = (ms: Array<{ kind: string }>): string[] => ms.map(m => m.kind)

  /** The receiver holds exactly the sender's word. */
  function expectWord (t: MemberTable, ws: OwnedWorker[]): void {
    const wrong = ws.filter(w => t.stateOf('a', w.id) !== w.state || t.loadOf('a', w.id) !== w.load).map(w => w.id)
    expect(wrong).toEqual([])
  }

  it('a mass silence goes out as the workers that changed, not as the whole list each time', () => {
    const ws: OwnedWorker[] = Array.from({ length: 20_000 }, (_, i) => ({ id: `w${i}`, state: 'healthy', load: 0 }))
    const { t, events, tick } = mesh(ws)
    expect(kinds(tick())).toEqual(['digest'])
    // A thousand more workers fall silent every second (as when they stopped heartbeating one after another).
    for (let s = 0; s < 10; s++) {
      for (let i = s * 1000; i < (s + 1) * 1000; i++) ws[i].state = 'unhealthy'
      events.length = 0
      const out = tick()
      if (s === 0) {
        // The first thousand listed: as large as a full word, so sent whole.
        expect(kinds(out)).toEqual(['digest'])
        continue
      }
      expect(kinds(out)).toEqual(['changes'])
      const c = (out[0] as { c: WordChanges }).c
      expect(c.states).toHaveLength(1000)
      expect(c.base).toBe(c.seq - 1)
      // Only the workers that changed are re-routed.
      expect(events).toHaveLength(1000)
    }
    expectWord(t, ws)
    // Some recover, one reports a load, one drains: the next changes say exactly that.
    ws[0].state = 'healthy'
    ws[1].load = 4
    ws[15_000].state = 'draining'
    events.length = 0
    const out = tick()
    expect(kinds(out)).toEqual(['changes'])
    expect((out[0] as { c: WordChanges }).c).toMatchObject({ states: [['w15000', 'd'], ['w0', 'h']], loads: [['w1', 4]] })
    expect(events.sort()).toEqual(['worker a/w0', 'worker a/w1', 'worker a/w15000'])
    expectWord(t, ws)
    ws[1].load = 0
    expect((tick()[0] as { c: WordChanges }).c).toMatchObject({ states: [], loads: [['w1', 0]] })
    expectWord(t, ws)
    // Nothing new: nothing sent.
    expect(tick()).toEqual([])
  })

  it('sends the whole word to peers that do not take changes, after a keepalive interval, and once changes add up to a word', () => {
    const ws: OwnedWorker[] = Array.from({ length: 20_000 }, (_, i) => ({ id: `w${i}`, state: i < 5000 ? 'unhealthy' : 'healthy', load: 0 }))
    let understood = false
    const { t, tick } = mesh(ws, { understood: () => understood, keepaliveMs: 8000 })
    expect(kinds(tick())).toEqual(['digest'])
    ws[6000].state = 'unhealthy'
    // A peer from before changes is subscribed: the whole word, as before them.
    expect(kinds(tick())).toEqual(['digest'])
    understood = true
    const seen: string[] = []
    for (let i = 0; i < 9; i++) {
      ws[7000 + i].state = 'unhealthy'
      seen.push(...kinds(tick()))
    }
    // A full digest at least every keepalive interval (8 s after the last one), changes in between.
    expect(seen).toEqual(['changes', 'changes', 'changes', 'changes', 'changes', 'changes', 'changes', 'digest', 'changes'])
    expectWord(t, ws)
    // Changes that add up to more than the word: the word instead.
    for (let i = 0; i < 5000; i++) ws[i].state = 'healthy'
    expect(kinds(tick())).toEqual(['digest'])
    expectWord(t, ws)
  })

  it('a lost changes message: later ones still apply, and the next full digest makes the word exact again', () => {
    const ws: OwnedWorker[] = Array.from({ length: 20_000 }, (_, i) => ({ id: `w${i}`, state: i < 5000 ? 'unhealthy' : 'healthy', load: 0 }))
    const { t, tick } = mesh(ws, { keepaliveMs: 5000 })
    tick()
    expect(t.get('a')?.wordSeq).toBe(0)
    ws[6000].state = 'unhealthy'
    expect(kinds(tick(true))).toEqual(['changes'])
    ws[7000].state = 'unhealthy'
    expect(kinds(tick())).toEqual(['changes'])
    // w7000's news arrived; w6000's was lost: it is still called healthy, and the word is known not to be exact.
    expect(t.stateOf('a', 'w7000')).toBe('unhealthy')
    expect(t.stateOf('a', 'w6000')).toBe('healthy')
    expect(t.get('a')?.wordSeq).toBeNull()
    // The digest that goes out at the keepalive puts it right.
    let out: Array<{ kind: string }> = []
    for (let i = 0; i < 5 && !kinds(out).includes('digest'); i++) out = tick()
    expect(kinds(out)).toEqual(['digest'])
    expectWord(t, ws)
    expect(t.get('a')?.wordSeq).toBe(t.get('a')?.seq)
  })

  it('changes from another epoch, older than what was applied, or for an incomplete word change nothing', () => {
    const ws: OwnedWorker[] = Array.from({ length: 100 }, (_, i) => ({ id: `w${i}`, state: i < 50 ? 'unhealthy' : 'healthy', load: 0 }))
    const { t, events } = mesh(ws)
    const base = buildDigest({ epoch: 'e1', seq: 3, owned: 100, registry_hash: 'h', self_preservation: false }, ws)[0]
    t.digest('a', base)
    events.length = 0
    const change = (over: Partial<WordChanges>): WordChanges => ({ epoch: 'e1', seq: 4, base: 3, owned: 100, states: [['w0', 'h']], loads: [], registry_hash: 'h', self_preservation: false, ...over })
    t.changes('a', change({ epoch: 'e0' }))
    t.changes('a', change({ seq: 3, base: 2 }))
    expect(t.stateOf('a', 'w0')).toBe('unhealthy')
    expect(events).toEqual([])
    t.changes('a', change({}))
    expect(t.stateOf('a', 'w0')).toBe('healthy')
    expect(events).toEqual(['worker a/w0'])
    // The same changes again (a relayed copy): nothing.
    t.changes('a', change({}))
    expect(events).toEqual(['worker a/w0'])
    // A digest older than the changes applied, delivered late, does not undo them.
    t.digest('a', base)
    expect(t.stateOf('a', 'w0')).toBe('healthy')
  })

  it('decoding refuses what is not a changes message, with the reason', () => {
    const good: WordChanges = { epoch: 'e', seq: 2, base: 1, owned: 1, states: [['w0', 'h']], loads: [['w0', 0]], registry_hash: '0', self_preservation: false }
    expect(decodeChanges(encodeChanges(good))).toEqual(good)
    const enc = new TextEncoder()
    expect(() => decodeChanges(enc.encode('{"epoch": '))).toThrow(DigestError)
    expect(() => decodeChanges(enc.encode('{"epoch": '))).toThrow(/not JSON/)
    expect(() => decodeChanges(enc.encode(JSON.stringify({ ...good, states: [['w0', 'z']] })))).toThrow(/schema/)
    expect(() => decodeChanges(enc.encode(JSON.stringify({ ...good, admin: true })))).toThrow(/schema/)
    expect(() => decodeChanges(enc.encode(JSON.stringify({ ...good, loads: [['w0', -1]] })))).toThrow(/schema/)
    expect(() => decodeChanges(enc.encode(JSON.stringify({ ...good, base: 2 })))).toThrow(/follow 2/)
    // A full digest is not a changes message, nor the other way round.
    expect(() => decodeChanges(encodeDigest(buildDigest(header(1), workers(3))[0]))).toThrow(DigestError)
    expect(() => decodeDigest(encodeChanges(good))).toThrow(DigestError)
  })
})
