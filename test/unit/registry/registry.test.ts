import * as Y from 'yjs'
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { InvalidStateError } from '../../../src/errors.ts'
import {
  Origin, Registry, ROOT, SEAL_KEY, SealDirectory, SegmentDigest, UnsignedWriteError, encodeSeal, entryLeaf, makeSeal, compareEntries, exportState, importState, validateUpdate,
  type Capability, type Tombstone, type WorkerChange, type WorkerRecord
} from '../../../src/registry/index.ts'
import { errorOf } from '../../helpers/controllers.ts'

/** Every registry of these tests signs with its key from here and trusts the others'. */
const keys = new SealDirectory()

function cap (name = 'echo'): Capability {
  return { name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: {}, requires_gpu: false, max_concurrency: 4 }
}

const input = (id: string, url = `https://127.0.0.1:7000/${id}`, caps = [cap()]) => ({ worker_id: id, worker_url: url, capabilities: caps })

/** The effective view as plain data, sorted: what replicas are compared by. */
function view (r: Registry): WorkerRecord[] {
  return [...r.workers()].sort((a, b) => a.worker_id < b.worker_id ? -1 : 1)
}

/** Full anti-entropy between every pair (state vector → diff), repeated until nothing moves. */
async function syncAll (regs: Registry[]): Promise<void> {
  for (let round = 0; round < 5; round++) {
    for (const a of regs) for (const b of regs) if (a !== b) b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    // Cleanups and republishing run in microtasks after a transaction.
    await new Promise(resolve => setImmediate(resolve))
  }
}

function expectConverged (regs: Registry[]): void {
  const first = view(regs[0])
  for (const r of regs.slice(1)) expect(view(r)).toEqual(first)
}

const record = (over: Partial<WorkerRecord> = {}): WorkerRecord =>
  ({ worker_id: 'w', worker_url: 'https://h', capabilities: [cap()], incarnation: 1, owner: 'a', registered_at: 10, ...over })
const tomb = (over: Partial<Tombstone> = {}): Tombstone =>
  ({ worker_id: 'w', incarnation: 1, owner: 'a', deleted_at: 10, tombstone: true, ...over })

describe('compareEntries', () => {
  it('the higher incarnation wins, whatever else', () => {
    expect(compareEntries(record({ incarnation: 2, owner: 'a' }), record({ incarnation: 1, owner: 'z' }))).toBeGreaterThan(0)
    expect(compareEntries(record({ incarnation: 1 }), tomb({ incarnation: 2 }))).toBeLessThan(0)
    expect(compareEntries(tomb({ incarnation: 1 }), record({ incarnation: 3 }))).toBeLessThan(0)
  })

  it('on equal incarnations a tombstone wins, then the larger owner id, then the later time', () => {
    expect(compareEntries(tomb({ owner: 'a' }), record({ owner: 'z' }))).toBeGreaterThan(0)
    expect(compareEntries(record({ owner: 'b' }), record({ owner: 'a' }))).toBeGreaterThan(0)
    expect(compareEntries(record({ owner: 'a' }), record({ owner: 'b' }))).toBeLessThan(0)
    expect(compareEntries(record({ registered_at: 20 }), record({ registered_at: 10 }))).toBeGreaterThan(0)
    expect(compareEntries(record(), record())).toBe(0)
  })

  it('is antisymmetric, so every replica picks the same winner', () => {
    const entries = [record(), record({ incarnation: 2 }), record({ owner: 'b' }), tomb(), tomb({ owner: 'c', incarnation: 2 }), record({ registered_at: 99 })]
    for (const a of entries) for (const b of entries) expect(Math.sign(compareEntries(a, b)) + Math.sign(compareEntries(b, a))).toBe(0)
  })
})

describe('Registry', () => {
  it('registers, re-registers with a higher incarnation, deregisters, and emits changes', () => {
    const r = new Registry({ seals: keys.authority('a'), controllerId: 'a', now: () => 1000 })
    const changes: Array<[WorkerChange[], string]> = []
    r.on('change', (c, origin) => changes.push([c, origin]))
    const first = r.register(input('w1'))
    expect(first).toEqual({ ...input('w1'), incarnation: 1, owner: 'a', registered_at: 1000 })
    expect(r.get('w1')).toEqual(first)
    expect(r.size).toBe(1)
    const again = r.register(input('w1', 'https://elsewhere'))
    expect(again.incarnation).toBe(2)
    expect(r.register({ ...input('w1'), incarnation: 10 }).incarnation).toBe(10)
    expect(r.register({ ...input('w1'), incarnation: 3 }).incarnation).toBe(11)
    expect(r.deregister('w1')).toBe(true)
    expect(r.deregister('w1')).toBe(false)
    expect(r.get('w1')).toBeUndefined()
    expect(r.size).toBe(0)
    expect(changes.map(([c, o]) => [c[0].workerId, c[0].before?.incarnation ?? null, c[0].after?.incarnation ?? null, o])).toEqual([
      ['w1', null, 1, 'local'], ['w1', 1, 2, 'local'], ['w1', 2, 10, 'local'], ['w1', 10, 11, 'local'], ['w1', 11, null, 'local']
    ])
    expect(r.owners()).toEqual(new Set(['a']))
  })

  it('registerMany: one transaction, one seal and one update for many workers, which a peer checks and applies', () => {
    const own = keys.authority('batch')
    let signatures = 0
    const r = new Registry({ seals: { ...own, sign: m => { signatures++; return own.sign(m) } }, controllerId: 'batch', now: () => 5 })
    const updates: Uint8Array[] = []
    r.on('update', u => updates.push(u))
    r.register(input('before'))
    expect([signatures, updates.length]).toEqual([1, 1])
    const recs = r.registerMany(Array.from({ length: 100 }, (_, i) => ({ ...input(`b${i}`), ...(i === 7 ? { incarnation: 9 } : {}) })))
    expect([signatures, updates.length]).toEqual([2, 2])
    expect(recs.map(x => x.worker_id)).toEqual(Array.from({ length: 100 }, (_, i) => `b${i}`))
    expect(recs[7].incarnation).toBe(9)
    expect(recs.every(x => x.owner === 'batch' && x.registered_at === 5)).toBe(true)
    expect(r.size).toBe(101)
    // A peer validates the batch's update against the owner's seal and routes to all of it.
    const peer = new Registry({ seals: keys.authority('peer'), controllerId: 'peer' })
    for (const u of updates) peer.applyUpdate(u, Origin.remote)
    expect(view(peer)).toEqual(view(r))
    // Re-registering some of them in a batch: one incarnation more each, still one seal.
    const again = r.registerMany([input('b0'), input('b1')])
    expect(again.map(x => x.incarnation)).toEqual([2, 2])
    expect(signatures).toBe(3)
    expect(errorOf(() => r.registerMany([input('d'), input('d')])).name).toBe('TypeError')
    expect(r.registerMany([])).toEqual([])
    expect(signatures).toBe(3)
  })

  it('emits every Yjs update it produces, for the store and the mesh', () => {
    const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    const updates: Array<[Uint8Array, string]> = []
    r.on('update', (u, o) => updates.push([u, o]))
    r.register(input('w1'))
    r.deregister('w1')
    expect(updates.length).toBe(2)
    expect(updates.every(([u, o]) => u.length > 0 && o === 'local')).toBe(true)
    // Replaying them elsewhere gives the same view.
    const replica = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
    for (const [u] of updates) replica.applyUpdate(u, Origin.load)
    expect(view(replica)).toEqual(view(r))
  })

  describe('two replicas exchanging state vectors and diffs', () => {
    it('converge on disjoint registrations', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      for (let i = 0; i < 20; i++) a.register(input(`a${i}`))
      for (let i = 0; i < 20; i++) b.register(input(`b${i}`))
      b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
      a.applyUpdate(b.encodeDiff(a.encodeStateVector()), Origin.remote)
      expect(a.size).toBe(40)
      expectConverged([a, b])
      expect(a.get('b3')?.owner).toBe('b')
      // A diff against an up-to-date state vector carries nothing new.
      const before = view(a)
      a.applyUpdate(b.encodeDiff(a.encodeStateVector()), Origin.remote)
      expect(view(a)).toEqual(before)
    })

    it('resolve a worker registered on both by data: equal incarnations → the larger owner id', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('shared', 'https://via-a'))
      b.register(input('shared', 'https://via-b'))
      await syncAll([a, b])
      expectConverged([a, b])
      expect(a.get('shared')).toMatchObject({ owner: 'b', worker_url: 'https://via-b' })
    })

    it('failover: a re-registration elsewhere gets a higher incarnation and wins everywhere; the old owner cleans up', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('w', 'https://first'))
      await syncAll([a, b])
      const moved = b.register(input('w', 'https://second'))
      expect(moved.incarnation).toBe(2)
      await syncAll([a, b])
      expectConverged([a, b])
      expect(a.get('w')).toMatchObject({ owner: 'b', incarnation: 2, worker_url: 'https://second' })
      // a deleted its superseded entry: its segments hold nothing any more, here and at b.
      const ownedBy = (r: Registry, owner: string): number => [...r.doc.getMap(ROOT).entries()]
        .filter(([key]) => key.startsWith(`${owner}/`))
        .reduce((n, [, seg]) => n + [...(seg as Y.Map<unknown>).keys()].filter(k => k !== SEAL_KEY).length, 0)
      expect(ownedBy(a, 'a')).toBe(0)
      expect(ownedBy(b, 'a')).toBe(0)
      expect(ownedBy(b, 'b')).toBe(1)
    })

    it('adopt takes a worker over with one more incarnation', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('w'))
      await syncAll([a, b])
      const adopted = b.adopt('w')
      expect(adopted).toMatchObject({ worker_id: 'w', owner: 'b', incarnation: 2 })
      expect(b.adopt('w')).toEqual(adopted)
      expect(b.adopt('unknown')).toBeUndefined()
      await syncAll([a, b])
      expectConverged([a, b])
    })

    it('a deregistration by a non-owner leaves a tombstone that hides the owner\'s entry everywhere, until the next attach', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('w'))
      await syncAll([a, b])
      expect(b.deregister('w')).toBe(true)
      expect(b.get('w')).toBeUndefined()
      await syncAll([a, b])
      expect(a.get('w')).toBeUndefined()
      expectConverged([a, b])
      const back = a.register(input('w'))
      expect(back.incarnation).toBe(2)
      await syncAll([a, b])
      expect(b.get('w')).toMatchObject({ owner: 'a', incarnation: 2 })
    })

    it('dropOwner removes a gone owner\'s entries; a live owner republishes them', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      for (let i = 0; i < 5; i++) a.register(input(`w${i}`))
      b.register(input('mine'))
      await syncAll([a, b])
      expect(b.dropOwner('a')).toBe(1)
      expect(b.dropOwner('b')).toBe(0)
      expect(b.dropOwner('nobody')).toBe(0)
      expect(view(b).map(w => w.worker_id)).toEqual(['mine'])
      await syncAll([a, b])
      expectConverged([a, b])
      expect(b.size).toBe(6)
    })

    it('a failed-over worker deregistered where its older entry was dropped leaves a tombstone: the entry put back after the heal stays hidden', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('w'))
      a.register(input('other'))
      await syncAll([a, b])
      // Cut off from a: w fails over to b, b drops a's segment (a gone), then w leaves at b.
      expect(b.adopt('w')).toMatchObject({ owner: 'b', incarnation: 2 })
      expect(b.dropOwner('a')).toBe(1)
      expect(b.deregister('w')).toBe(true)
      // The heal: a puts its dropped segment back, w's incarnation-1 entry in it.
      await syncAll([a, b])
      expectConverged([a, b])
      expect(a.get('w')).toBeUndefined()
      expect(b.get('w')).toBeUndefined()
      expect(b.get('other')).toMatchObject({ owner: 'a' })
    })

    it('a worker that names a higher incarnation than known here leaves a tombstone when it leaves; plain churn leaves none', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      a.register(input('w'))
      // b never saw a's entry (cut off from the start): w fails over to b saying it was at incarnation 1.
      expect(b.register({ ...input('w'), incarnation: 2 })).toMatchObject({ owner: 'b', incarnation: 2 })
      expect(b.deregister('w')).toBe(true)
      // A worker registered and deregistered twice at one controller, never anywhere else: no tombstone.
      for (let i = 0; i < 2; i++) {
        b.register(input('local'))
        b.deregister('local')
      }
      await syncAll([a, b])
      expectConverged([a, b])
      expect(a.get('w')).toBeUndefined()
      const tombstones = [...b.doc.getMap(ROOT).values()].flatMap(seg => [...(seg as Y.Map<unknown>).values()])
        .filter(v => typeof v === 'string' && (JSON.parse(v) as { tombstone?: boolean }).tombstone === true)
      expect(tombstones).toHaveLength(1)
    })

    it('a tombstone in a dropped segment is put back with the live entries while it still hides an older entry', async () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      const c = new Registry({ seals: keys.authority('c'), controllerId: 'c' })
      a.register(input('w'))
      c.register(input('mine'))
      await syncAll([a, b, c])
      // {a, b} | {c}: w fails over to c and leaves there (a tombstone over a's entry); b drops c's segment.
      expect(c.adopt('w')).toMatchObject({ owner: 'c', incarnation: 2 })
      expect(c.deregister('w')).toBe(true)
      expect(b.dropOwner('c')).toBe(1)
      await syncAll([a, b])
      // The heal: c puts back 'mine' and the tombstone; a's older entry of w stays hidden everywhere.
      await syncAll([a, b, c])
      expectConverged([a, b, c])
      for (const r of [a, b, c]) expect(r.get('w')).toBeUndefined()
      expect(a.get('mine')).toMatchObject({ owner: 'c' })
    })

    it('a seeded random network converges after arbitrary loss, failovers, deregistrations and compactions', async () => {
      let seed = 7
      const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
      const regs = ['a', 'b', 'c'].map(id => new Registry({ seals: keys.authority(id), controllerId: id, segmentMinGarbage: 8, segmentGarbageRatio: 0.5 }))
      // Updates travel as gossip messages, of which a random half are lost.
      const inflight: Array<[Registry, Uint8Array]> = []
      for (const from of regs) {
        from.on('update', (u, origin) => {
          if (origin !== Origin.local) return
          for (const to of regs) if (to !== from && rnd(2) === 0) inflight.push([to, u])
        })
      }
      for (let step = 0; step < 400; step++) {
        const r = regs[rnd(3)]
        const id = `w${rnd(25)}`
        const op = rnd(10)
        if (op < 5) r.register(input(id))
        else if (op < 8) r.deregister(id)
        else if (op === 8) r.compact()
        else if (inflight.length > 0) {
          const [to, u] = inflight.splice(rnd(inflight.length), 1)[0]
          to.applyUpdate(u, Origin.remote)
        }
        if (step % 50 === 0) await new Promise(resolve => setImmediate(resolve))
      }
      await syncAll(regs)
      expectConverged(regs)
      // One effective entry per worker, owned by exactly one controller.
      const ids = view(regs[0]).map(w => w.worker_id)
      expect(new Set(ids).size).toBe(ids.length)
    })
  })

  describe('compaction', () => {
    it('compact() keeps the live view identical and emits no change', () => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      for (let i = 0; i < 50; i++) r.register(input(`w${i}`))
      for (let i = 0; i < 50; i += 2) r.deregister(`w${i}`)
      for (let i = 1; i < 50; i += 4) r.register(input(`w${i}`, 'https://moved'))
      const before = view(r)
      const segBefore = r.stats().ownSegment
      const changes: WorkerChange[][] = []
      r.on('change', c => changes.push(c))
      r.compact()
      expect(view(r)).toEqual(before)
      expect(changes).toEqual([])
      expect(r.stats()).toMatchObject({ workers: 25, segments: 1, ownGarbage: 0, compactions: 1 })
      expect(r.stats().ownSegment).not.toBe(segBefore)
      // A replica built from the compacted document sees the same.
      const replica = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      replica.applyUpdate(r.encodeState(), Origin.import)
      expect(view(replica)).toEqual(before)
    })

    it('under heavy churn the encoded size stays within 2x of a fresh encoding of the live entries', () => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a', segmentMinGarbage: 64 })
      // A replica following every update must end with the same view.
      const follower = new Registry({ seals: keys.authority('f'), controllerId: 'f' })
      r.on('update', (u, o) => { if (o === Origin.local) follower.applyUpdate(u, Origin.remote) })
      const live = new Map<string, string>()
      for (let i = 0; i < 200; i++) {
        r.register(input(`live${i}`))
        live.set(`live${i}`, `https://127.0.0.1:7000/live${i}`)
      }
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 200; i++) r.register(input(`tmp${round}-${i}`))
        for (let i = 0; i < 200; i++) r.deregister(`tmp${round}-${i}`)
        for (let i = round % 4; i < 200; i += 4) {
          const url = `https://127.0.0.1:7000/live${i}?r=${round}`
          r.register(input(`live${i}`, url))
          live.set(`live${i}`, url)
        }
      }
      expect(r.stats().compactions).toBeGreaterThan(0)
      expect(new Map(view(r).map(w => [w.worker_id, w.worker_url]))).toEqual(live)
      expect(view(follower)).toEqual(view(r))

      const fresh = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      for (const w of view(r)) fresh.register({ worker_id: w.worker_id, worker_url: w.worker_url, capabilities: w.capabilities, incarnation: w.incarnation })
      const size = r.encodeState().length
      const freshSize = fresh.encodeState().length
      expect(size).toBeLessThanOrEqual(2 * freshSize)
    })

    it('rotates automatically once dead entries pass the ratio', () => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a', segmentMinGarbage: 10, segmentGarbageRatio: 0.5 })
      for (let i = 0; i < 10; i++) r.register(input(`w${i}`))
      expect(r.stats().compactions).toBe(0)
      for (let i = 0; i < 9; i++) r.register(input(`w${i}`))
      expect(r.stats().compactions).toBe(0)
      r.register(input('w9'))
      expect(r.stats().compactions).toBe(1)
      expect(r.stats().ownGarbage).toBe(0)
      expect(r.size).toBe(10)
    })
  })

  describe('applyUpdate and validateUpdate', () => {
    const update = (build: (doc: Y.Doc) => void): Uint8Array => {
      const d = new Y.Doc()
      build(d)
      return Y.encodeStateAsUpdate(d)
    }
    const segment = (d: Y.Doc, key = 'x/0000000001.ab'): Y.Map<unknown> => {
      const seg = new Y.Map<unknown>()
      d.getMap(ROOT).set(key, seg)
      return seg
    }
    const good = record({ worker_id: 'x1', owner: 'x' })

    const BAD: Array<[string, Uint8Array]> = [
      ['random bytes', new Uint8Array(randomBytes(256))],
      ['an empty buffer', new Uint8Array()],
      ['a foreign root text', update(d => { d.getText('evil').insert(0, 'x') })],
      ['a foreign root map', update(d => { d.getMap('config').set('k', 'v') })],
      ['a foreign root array', update(d => { d.getArray(ROOT + '2').push([1]) })],
      ['a plain value where a segment belongs', update(d => { d.getMap(ROOT).set('x/0000000001.ab', 'oops') })],
      ['a bad segment key', update(d => { segment(d, 'not a key') })],
      ['text in a segment slot', update(d => { d.getMap(ROOT).set('x/0000000001.ab', new Y.Text('x')) })],
      ['a map nested below a segment', update(d => { segment(d).set('x1', new Y.Map()) })],
      ['a malformed entry', update(d => { segment(d).set('x1', { worker_id: 'x1' }) })],
      ['an entry under another key', update(d => { segment(d).set('x2', good) })],
      ['binary content', update(d => { segment(d).set('x1', new Uint8Array([1, 2, 3])) })],
      ['an entry text that is not JSON', update(d => { segment(d).set('x1', '{"worker_id": "x1",') })],
      ['an entry text of the wrong shape', update(d => { segment(d).set('x1', JSON.stringify({ worker_id: 'x1' })) })],
      ['an entry text under another key', update(d => { segment(d).set('x2', JSON.stringify(good)) })],
      ['an entry text over 256 KiB', update(d => { segment(d).set('x1', JSON.stringify({ ...good, capabilities: [{ ...cap(), constraints: { pad: 'x'.repeat(300 * 1024) } }] })) })]
    ]

    it.each(BAD)('rejects %s with InvalidStateError and changes nothing', (_name, u) => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      r.register(input('keep'))
      const before = r.encodeState()
      const err = errorOf(() => { r.applyUpdate(u, Origin.import) })
      expect(err).toBeInstanceOf(InvalidStateError)
      expect((err as InvalidStateError).code).toBe('CAPMESH_ERR_INVALID_STATE')
      expect(errorOf(() => { validateUpdate(u, undefined, null) })).toBeInstanceOf(InvalidStateError)
      expect(r.encodeState()).toEqual(before)
      expect(view(r).map(w => w.worker_id)).toEqual(['keep'])
    })

    it('accepts a well-formed segment from another controller only under its owner\'s seal', () => {
      const text = JSON.stringify(good)
      const unsigned = update(d => { segment(d).set('x1', text) })
      expect(() => { validateUpdate(unsigned, undefined, null) }).not.toThrow()
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      expect(errorOf(() => { r.applyUpdate(unsigned, Origin.remote) })).toBeInstanceOf(UnsignedWriteError)
      expect(r.stats().segments).toBe(0)
      const sealed = (owner: string) => update(d => {
        const seg = segment(d)
        seg.set('x1', text)
        const digest = new SegmentDigest()
        digest.set('x1', entryLeaf('x1', text))
        seg.set(SEAL_KEY, encodeSeal(makeSeal(keys.authority(owner), 'x/0000000001.ab', 1, digest.root())))
      })
      // Sealed, but by another controller's key: refused the same way.
      expect(errorOf(() => { r.applyUpdate(sealed('y'), Origin.remote) })).toBeInstanceOf(UnsignedWriteError)
      r.applyUpdate(sealed('x'), Origin.remote)
      expect(r.get('x1')).toEqual(good)
    })

    it('refuses entries stored as objects (as capmesh 0.1 wrote them): they cannot be sealed', () => {
      const u = update(d => { segment(d).set('x1', good) })
      expect(() => { validateUpdate(u, undefined, null) }).not.toThrow()
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      expect(errorOf(() => { r.applyUpdate(u, Origin.remote) })).toBeInstanceOf(UnsignedWriteError)
    })

    it('writes entries as JSON text', () => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      r.register(input('w1'))
      const [seg] = [...(r.doc.getMap(ROOT) as Y.Map<Y.Map<unknown>>).values()]
      expect(typeof seg.get('w1')).toBe('string')
      expect(JSON.parse(seg.get('w1') as string)).toEqual(r.get('w1'))
    })

    it('emits (and so logs) an update only when it brought something new', () => {
      const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      a.register(input('w1'))
      a.register(input('w2'))
      a.deregister('w2')
      const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
      const emitted: Uint8Array[] = []
      b.on('update', u => { emitted.push(u) })
      b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
      expect(emitted).toHaveLength(1)
      // In sync: the diff still carries a's delete set, and changes nothing here.
      const again = a.encodeDiff(b.encodeStateVector())
      expect(again.length).toBeGreaterThan(2)
      b.applyUpdate(again, Origin.remote)
      b.applyUpdate(a.encodeState(), Origin.remote)
      expect(emitted).toHaveLength(1)
      a.deregister('w1')
      b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
      expect(emitted).toHaveLength(2)
      expect(b.get('w1')).toBeUndefined()
    })

    it('rejects an entry whose owner does not match its segment, changing nothing', () => {
      const r = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
      const err = errorOf(() => { r.applyUpdate(update(d => { segment(d, 'y/0000000001.ab').set('x1', good) }), Origin.remote) })
      expect(err).toBeInstanceOf(InvalidStateError)
      expect(r.get('x1')).toBeUndefined()
      expect(r.stats().segments).toBe(0)
    })
  })

  it('exportState/importState round-trip and merge idempotently', () => {
    const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    for (let i = 0; i < 5; i++) a.register(input(`w${i}`))
    const doc = exportState(a)
    expect(doc).toMatchObject({ format: 'capmesh-state', version: 1, controller_id: 'a', workers: 5 })
    const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
    b.register(input('own'))
    expect(importState(b, doc)).toEqual({ added: 5, workers: 6 })
    expect(importState(b, doc)).toEqual({ added: 0, workers: 6 })
    expect(b.get('own')).toBeDefined()
    expect(errorOf(() => importState(b, { ...doc, format: 'nope' }))).toBeInstanceOf(InvalidStateError)
    expect(errorOf(() => importState(b, null))).toBeInstanceOf(InvalidStateError)
    expect(b.size).toBe(6)
  })

  it('importState takes the update as base64 the schema describes, padded or not, and refuses anything else whole', () => {
    const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    for (let i = 0; i < 5; i++) a.register(input(`w${i}`))
    const doc = exportState(a)
    const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
    // What Node's decoder would read past (other characters, whitespace, base64url, a third "="): refused.
    const bad = ['!' + doc.update, doc.update.slice(0, 8) + '\n' + doc.update.slice(8), doc.update.replace(/\+/g, '-').replace(/\//g, '_'), doc.update + '===', 'A']
    if (!/[+/]/.test(doc.update)) bad.splice(2, 1)
    for (const update of bad) {
      const err = errorOf(() => importState(b, { ...doc, update }))
      expect(err, JSON.stringify(update.slice(0, 20))).toBeInstanceOf(InvalidStateError)
    }
    expect(b.size).toBe(0)
    expect(importState(b, { ...doc, update: doc.update.replace(/=+$/, '') })).toEqual({ added: 5, workers: 5 })
  })
})
