/**
 * encodeUpdatePieces: Yjs's encoded update left in the pieces Yjs built it
 * in. Joined, the pieces must be byte for byte Y.encodeStateAsUpdate's
 * update, whatever the document holds: several clients, deletions, a state
 * vector to diff against, pending structs and deletes, nothing at all.
 */
import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { encodeUpdatePieces, piecesLength, Registry, SealDirectory } from '../../../src/registry/index.ts'

const joined = (pieces: Uint8Array[]): Buffer => Buffer.concat(pieces)

/** A document written by `clients` clients, each merged into the others, with entries deleted and overwritten. */
function busyDocs (clients: number, entries: number): Y.Doc[] {
  const docs = Array.from({ length: clients }, (_, i) => {
    const d = new Y.Doc()
    d.clientID = 1000 + i
    return d
  })
  for (const [i, d] of docs.entries()) {
    const seg = new Y.Map<unknown>()
    d.getMap('segments').set(`seg-${i}`, seg)
    for (let k = 0; k < entries; k++) seg.set(`w${k}`, JSON.stringify({ worker_id: `w${k}`, by: i, pad: 'x'.repeat(k % 50) }))
    d.getMap('flat').set(`k${i}`, i)
  }
  for (const a of docs) for (const b of docs) if (a !== b) Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
  for (const [i, d] of docs.entries()) {
    const seg = d.getMap('segments').get(`seg-${i}`) as Y.Map<unknown>
    for (let k = 0; k < entries; k += 3) seg.delete(`w${k}`)
    for (let k = 1; k < entries; k += 5) seg.set(`w${k}`, `rewritten ${k}`)
  }
  // One segment dropped whole (its items turn into GC structs).
  docs[0].getMap('segments').delete(`seg-${clients - 1}`)
  return docs
}

describe('encodeUpdatePieces', () => {
  it('joined, is Y.encodeStateAsUpdate of a document of several clients with deletions, whole and as a diff', () => {
    const docs = busyDocs(3, 2000)
    const [a, b] = docs
    const pieces = encodeUpdatePieces(a)
    expect(pieces.length, 'a large update comes in several pieces').toBeGreaterThan(5)
    expect(pieces.every(p => p.length > 0)).toBe(true)
    expect(piecesLength(pieces)).toBe(Y.encodeStateAsUpdate(a).length)
    expect(joined(pieces).equals(Buffer.from(Y.encodeStateAsUpdate(a)))).toBe(true)

    const sv = Y.encodeStateVector(b)
    expect(joined(encodeUpdatePieces(a, sv)).equals(Buffer.from(Y.encodeStateAsUpdate(a, sv)))).toBe(true)
    // Against an empty doc's state vector, and the one of a doc that has everything.
    const empty = Y.encodeStateVector(new Y.Doc())
    expect(joined(encodeUpdatePieces(a, empty)).equals(Buffer.from(Y.encodeStateAsUpdate(a, empty)))).toBe(true)
    const all = Y.encodeStateVector(a)
    expect(joined(encodeUpdatePieces(a, all)).equals(Buffer.from(Y.encodeStateAsUpdate(a, all)))).toBe(true)

    // And the pieces are an update a fresh document takes.
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, joined(pieces))
    expect(fresh.getMap('segments').toJSON()).toEqual(a.getMap('segments').toJSON())
  })

  it('an empty document: the pieces of the two bytes Yjs encodes it as', () => {
    const d = new Y.Doc()
    const pieces = encodeUpdatePieces(d)
    expect(joined(pieces).equals(Buffer.from(Y.encodeStateAsUpdate(d)))).toBe(true)
    expect(piecesLength(pieces)).toBe(2)
  })

  it('a document holding pending structs and deletes: Yjs merges them into the update, and so do the pieces', () => {
    const src = new Y.Doc()
    src.clientID = 7
    const m = src.getMap('m')
    const updates: Uint8Array[] = []
    src.on('update', (u: Uint8Array) => { updates.push(u) })
    m.set('a', 'first')
    m.set('b', 'second')
    m.delete('a')
    // The target gets the second and third updates without the first: both wait, pending.
    const target = new Y.Doc()
    target.clientID = 8
    target.getMap('m').set('own', 1)
    Y.applyUpdate(target, updates[1])
    Y.applyUpdate(target, updates[2])
    expect(target.store.pendingStructs).not.toBeNull()
    expect(target.store.pendingDs).not.toBeNull()

    for (const sv of [undefined, Y.encodeStateVector(new Y.Doc()), Y.encodeStateVector(src)]) {
      const pieces = encodeUpdatePieces(target, sv)
      expect(joined(pieces).equals(Buffer.from(Y.encodeStateAsUpdate(target, sv)))).toBe(true)
    }
    // What is pending travels: a doc given the pieces and the missing first update has everything.
    const other = new Y.Doc()
    Y.applyUpdate(other, joined(encodeUpdatePieces(target)))
    Y.applyUpdate(other, updates[0])
    expect(other.getMap('m').toJSON()).toEqual({ own: 1, b: 'second' })
  })

  it('Registry.encodePieces, joined, is Registry.encodeState and encodeDiff', () => {
    const keys = new SealDirectory()
    const a = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    const b = new Registry({ seals: keys.authority('b'), controllerId: 'b' })
    const cap = { name: 'echo', verb: 'invoke', version: '1', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 1 }
    for (let i = 0; i < 300; i++) a.register({ worker_id: `a${i}`, worker_url: `https://127.0.0.1:7000/${i}`, capabilities: [cap] })
    for (let i = 0; i < 100; i++) b.register({ worker_id: `b${i}`, worker_url: `https://127.0.0.1:7001/${i}`, capabilities: [cap] })
    for (let i = 0; i < 300; i += 4) a.deregister(`a${i}`)
    expect(joined(a.encodePieces()).equals(Buffer.from(a.encodeState()))).toBe(true)
    const sv = b.encodeStateVector()
    expect(joined(a.encodePieces(sv)).equals(Buffer.from(a.encodeDiff(sv)))).toBe(true)
  })
})
