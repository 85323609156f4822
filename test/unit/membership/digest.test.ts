/**
 * Digests too large for one gossip message are split into parts by worker
 * id, and a member's word is current only once every part is in. Small
 * digests are one message with no `part` field, exactly as before parts.
 */
import { describe, expect, it } from 'vitest'
import { buildDigest, decodeDigest, encodeDigest, MemberTable, partOf, type Digest, type OwnedWorker } from '../../../src/membership/index.ts'
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

  it('a later digest changes single workers; a stale part is ignored; a new split starts the word over', () => {
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
    // Far fewer listed workers: one message again. Until it arrives nothing else changes; when it does, the word is whole.
    events.length = 0
    const small: Digest = buildDigest(header(3), ws.slice(0, 10))[0]
    t.digest('b', small)
    expect(events).toEqual(['word b'])
    expect(t.stateOf('b', ws[3].id)).toBe('unhealthy')
    expect(t.stateOf('b', ws[50_000].id)).toBe('healthy')
  })

  it('decoding refuses a part index outside its count', () => {
    const d = { ...buildDigest(header(1), workers(10))[0], part: [2, 2] }
    expect(() => decodeDigest(encodeDigest(d as Digest))).toThrow(/part 2 of 2/)
  })
})
