import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { InvalidStateError } from '../../../src/errors.ts'
import { MissingDependencyError, Origin, Registry, SealDirectory, type Capability, type WorkerRecord } from '../../../src/registry/index.ts'
import { sliceUpdate } from '../../../src/registry/slices.ts'

const keys = new SealDirectory()
const registry = (id: string): Registry => new Registry({ controllerId: id, seals: keys.authority(id), segmentMinGarbage: 8 })
const cap: Capability = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: {}, requires_gpu: false, max_concurrency: 4 }
const input = (id: string) => ({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [cap] })
const view = (r: Registry): WorkerRecord[] => [...r.workers()].sort((x, y) => x.worker_id < y.worker_id ? -1 : 1)

/** Three owners with history: rewrites, deregistrations, failovers, a compaction (a new generation, an old one deleted). */
function history (): Registry[] {
  const [a, b, c] = ['a', 'b', 'c'].map(registry)
  for (let i = 0; i < 40; i++) a.register(input(`w${i}`))
  for (let i = 0; i < 20; i++) b.register(input(`v${i}`))
  for (let i = 0; i < 30; i++) a.deregister(`w${i}`)
  a.register(input('w35'))
  c.applyUpdate(a.encodeState(), Origin.remote)
  c.applyUpdate(b.encodeState(), Origin.remote)
  c.adopt('v3')
  c.register(input('x1'))
  for (const r of [a, b]) {
    r.applyUpdate(c.encodeDiff(r.encodeStateVector()), Origin.remote)
    c.applyUpdate(r.encodeDiff(c.encodeStateVector()), Origin.remote)
  }
  return [a, b, c]
}

describe('sliceUpdate', () => {
  it('slices that, applied in order, build the same document as the whole update', () => {
    const [, , c] = history()
    const whole = c.encodeState()
    for (const size of [1, 3, 64, 100_000]) {
      const doc = new Y.Doc()
      const slices = [...sliceUpdate(Y.decodeUpdate(whole), size)]
      expect(slices.length).toBeGreaterThan(1)
      for (const s of slices) Y.applyUpdate(doc, s)
      expect(Buffer.from(Y.encodeStateAsUpdate(doc))).toEqual(Buffer.from(whole))
    }
  })

  it('in reverse order too: Yjs holds back what builds on a later slice', () => {
    const [, , c] = history()
    const whole = c.encodeState()
    const doc = new Y.Doc()
    for (const s of [...sliceUpdate(Y.decodeUpdate(whole), 5)].reverse()) Y.applyUpdate(doc, s)
    expect(Buffer.from(Y.encodeStateAsUpdate(doc))).toEqual(Buffer.from(whole))
  })
})

describe('Registry.applyInSlices', () => {
  it('reaches the same view, document and seals as applying the update whole', async () => {
    const [a, , c] = history()
    const whole = registry('d')
    whole.applyUpdate(c.encodeState(), Origin.remote)
    const sliced = registry('e')
    expect(await sliced.applyInSlices(c.encodeState(), Origin.remote, { sliceStructs: 7, minBytes: 0 })).toBe(true)
    expect(view(sliced)).toEqual(view(whole))
    expect(view(sliced)).toEqual(view(c))
    expect(Y.encodeStateVector(sliced.doc)).toEqual(Y.encodeStateVector(whole.doc))
    // What arrived sliced is sealed like the rest: the owner's next write is accepted on top of it.
    a.register(input('w39'))
    expect(sliced.applyUpdate(a.encodeDiff(sliced.encodeStateVector()), Origin.remote)).toBe(true)
    // Nothing new the second time.
    expect(await sliced.applyInSlices(c.encodeState(), Origin.remote, { sliceStructs: 7, minBytes: 0 })).toBe(false)
  })

  it('hands the update on whole, once: the store logs it as one record (a crash leaves all of it or none)', async () => {
    const [, , c] = history()
    const r = registry('d')
    const seen: Array<[Uint8Array, Origin]> = []
    r.on('update', (u, o) => { seen.push([u, o]) })
    const update = c.encodeState()
    await r.applyInSlices(update, Origin.import, { sliceStructs: 5, minBytes: 0 })
    expect(seen).toEqual([[update, Origin.import]])
    // Replayed alone, that record rebuilds the registry.
    const replay = registry('f')
    replay.applyUpdate(seen[0][0], Origin.load)
    expect(view(replay)).toEqual(view(r))
  })

  it('refuses a large update with one bad entry whole, naming it, and changes nothing', async () => {
    const [, , c] = history()
    const r = registry('d')
    r.register(input('mine'))
    const before = r.encodeState()
    const doc = new Y.Doc()
    Y.applyUpdate(doc, c.encodeState())
    const seg = [...(doc.getMap('segments') as Y.Map<Y.Map<unknown>>).entries()].find(([k, m]) => k.startsWith('a/') && m.has('w35'))![1]
    const bad = JSON.stringify({ worker_id: 'w35', worker_url: 'not a url', capabilities: [cap], incarnation: 9, owner: 'a', registered_at: 1 })
    seg.set('w35', bad)
    const updates: Uint8Array[] = []
    r.on('update', u => { updates.push(u) })
    const err = await r.applyInSlices(Y.encodeStateAsUpdate(doc), Origin.import, { sliceStructs: 5, minBytes: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(InvalidStateError)
    expect((err as Error).message).toContain('w35')
    expect(updates).toEqual([])
    expect(Buffer.from(r.encodeState())).toEqual(Buffer.from(before))
    expect(view(r).map(w => w.worker_id)).toEqual(['mine'])
  })

  it('while slices are applied, peers\' updates wait (out of order, not malformed) and local writes go on', async () => {
    const [a, , c] = history()
    const r = registry('d')
    const pending = r.applyInSlices(c.encodeState(), Origin.remote, { sliceStructs: 3, minBytes: 0 })
    // Let the check finish and a few slices land.
    while (!r.applyingSlices) await new Promise(resolve => setImmediate(resolve))
    for (let i = 0; i < 3; i++) await new Promise(resolve => setImmediate(resolve))
    a.register(input('late'))
    expect(() => r.applyUpdate(a.encodeState(), Origin.remote)).toThrow(MissingDependencyError)
    r.register(input('local'))
    await pending
    expect(r.get('local')?.owner).toBe('d')
    expect(r.applyUpdate(a.encodeDiff(r.encodeStateVector()), Origin.remote)).toBe(true)
    expect(r.get('late')?.owner).toBe('a')
    expect(view(r).filter(w => w.worker_id !== 'local' && w.worker_id !== 'late')).toEqual(view(c))
  })
})
