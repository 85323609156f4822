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

/** What an update holds, comparable (a subdocument by its guid: decoding gives each a random client id). */
function structsOf (update: Uint8Array): unknown {
  const { structs, ds } = Y.decodeUpdate(update)
  return {
    ds,
    structs: structs.map(s => s instanceof Y.Item
      ? { id: s.id, length: s.length, origin: s.origin, rightOrigin: s.rightOrigin, parent: s.parent, parentSub: s.parentSub, ref: s.content.getRef(), content: s.content instanceof Y.ContentDoc ? s.content.doc.guid : s.content.getContent() }
      : { kind: s.constructor.name, id: s.id, length: s.length })
  }
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

  it('cut out of the update\'s bytes, slices hold the structs Yjs encodes from the decoded ones, whatever the content', () => {
    const [, , c] = history()
    // Every kind of content Yjs writes: text with formatting and embeds, values of every kind, XML,
    // a subdocument, nested types, deletions (collected and kept), on several clients.
    const rich = new Y.Doc({ gc: true })
    const other = new Y.Doc({ gc: false })
    const text = rich.getText('t')
    text.insert(0, 'héllo wörld ✓ 𝄞')
    text.format(2, 5, { bold: true, href: 'https://x' })
    text.insertEmbed(3, { image: 'a.png' })
    text.delete(1, 2)
    const arr = rich.getArray<unknown>('a')
    arr.push([1, -7, 2 ** 40, 1.5, -0.25, 'str', true, false, null, { k: [1, { z: 'y' }], big: 2n ** 60n, bytes: new Uint8Array([4]) }, [1, [2]], new Uint8Array([1, 2, 3])])
    arr.push([new Y.Map(), new Y.Array(), new Y.Text('x')])
    arr.delete(0, 3)
    const xml = rich.getXmlFragment('x')
    const el = new Y.XmlElement('p')
    el.setAttribute('class', 'c')
    el.insert(0, [new Y.XmlText('inside')])
    xml.insert(0, [el, new Y.XmlHook('hook') as unknown as Y.XmlElement])
    rich.getMap('m').set('doc', new Y.Doc({ guid: 'sub' }))
    Y.applyUpdate(other, Y.encodeStateAsUpdate(rich))
    other.getArray('a').insert(1, ['from another client'])
    other.getText('t').delete(0, 4)
    for (const whole of [c.encodeState(), Y.encodeStateAsUpdate(rich), Y.encodeStateAsUpdate(other)]) {
      for (const size of [1, 2, 7, 1000]) {
        const decoded = Y.decodeUpdate(whole)
        const cut = [...sliceUpdate(decoded, size, whole)]
        const encoded = [...sliceUpdate(decoded, size)]
        // Not byte for byte: an item written from a document flags its key even where it is not
        // written (it has an origin), one written from a decoded struct does not.
        expect(cut.map(structsOf)).toEqual(encoded.map(structsOf))
        const doc = new Y.Doc({ gc: false })
        for (const s of cut) Y.applyUpdate(doc, s)
        const ref = new Y.Doc({ gc: false })
        Y.applyUpdate(ref, whole)
        expect(Buffer.from(Y.encodeStateAsUpdate(doc))).toEqual(Buffer.from(Y.encodeStateAsUpdate(ref)))
      }
    }
  })

  it('bytes that do not hold the decoded structs are not cut: the slices are encoded from the structs', () => {
    const [, , c] = history()
    const whole = c.encodeState()
    const decoded = Y.decodeUpdate(whole)
    const encoded = [...sliceUpdate(decoded, 5)].map(b => Buffer.from(b))
    const z = registry('z')
    z.register(input('z1'))
    for (const bytes of [z.encodeState(), whole.subarray(0, whole.length >> 1), new Uint8Array([1, 2, 3])]) {
      expect([...sliceUpdate(decoded, 5, bytes)].map(b => Buffer.from(b))).toEqual(encoded)
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
