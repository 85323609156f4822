/**
 * Owner-signed segments at the registry: every way a holder of the document
 * (an insider with the mesh key, or an admitted controller that misbehaves)
 * could write into another controller's segment is refused whole, changes
 * nothing, and leaves the valid state intact. Forgeries are real Yjs updates
 * made by a replica of the victim's document, as a peer would make them.
 */
import { createHash } from 'node:crypto'
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { InvalidStateError } from '../../../src/errors.ts'
import { DigestMovedError } from '../../../src/registry/seal.ts'
import {
  Origin, Registry, ROOT, SEAL_KEY, SEAL_VERSION, SealDirectory, SegmentDigest, UnsignedWriteError,
  decodeSeal, encodeSeal, entryLeaf, exportState, importState, makeSeal,
  type Capability, type WorkerRecord
} from '../../../src/registry/index.ts'
import { errorOf } from '../../helpers/controllers.ts'

const keys = new SealDirectory()
const cap: Capability = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: {}, requires_gpu: false, max_concurrency: 4 }
const input = (id: string, url = `https://127.0.0.1:7000/${id}`) => ({ worker_id: id, worker_url: url, capabilities: [cap] })
const registry = (id: string, over: Partial<ConstructorParameters<typeof Registry>[0]> = {}): Registry => new Registry({ controllerId: id, seals: keys.authority(id), ...over })

/** A peer's copy of `victim`'s document, to forge updates from. */
function insiderCopy (victim: Registry): Y.Doc {
  const d = new Y.Doc()
  Y.applyUpdate(d, victim.encodeState())
  return d
}

/** What `doc` did since it was a copy of `of`: the update a peer would send. */
const diffFrom = (doc: Y.Doc, of: Registry): Uint8Array => Y.encodeStateAsUpdate(doc, of.encodeStateVector())

const segmentOf = (doc: Y.Doc, owner: string): [string, Y.Map<unknown>] => {
  const found = [...(doc.getMap(ROOT) as Y.Map<Y.Map<unknown>>).entries()].find(([k]) => k.startsWith(`${owner}/`))
  if (found == null) throw new Error(`no segment of ${owner}`)
  return found
}

const forged = (over: Partial<WorkerRecord> = {}): string => JSON.stringify({
  worker_id: 'evil', worker_url: 'https://attacker.example/', capabilities: [cap], incarnation: 99, owner: 'a', registered_at: 1, ...over
})

/** The digest of `seg`'s entries computed from scratch. */
function digestOf (seg: Y.Map<unknown>): SegmentDigest {
  const d = new SegmentDigest()
  for (const [k, v] of seg.entries()) if (k !== SEAL_KEY) d.set(k, entryLeaf(k, v as string))
  return d
}

/** A mesh of a (victim), b (bystander) and c (a misbehaving admitted controller), in sync. */
function mesh (): { a: Registry, b: Registry, c: Registry } {
  const a = registry('a')
  const b = registry('b')
  const c = registry('c')
  for (let i = 0; i < 5; i++) a.register(input(`a${i}`))
  b.register(input('b0'))
  for (const [from, to] of [[a, b], [b, a], [a, c], [b, c], [c, a], [c, b]]) to.applyUpdate(from.encodeDiff(to.encodeStateVector()), Origin.remote)
  return { a, b, c }
}

/** Applies `u` at `r` and expects it refused as unsigned, with `r` unchanged and a `refused` event. */
function expectRefused (r: Registry, u: Uint8Array, origin: Origin = Origin.remote): UnsignedWriteError {
  const before = r.encodeState()
  const view = JSON.stringify([...r.workers()])
  const refused: Array<[Origin, boolean]> = []
  r.on('refused', (o, unsigned) => { refused.push([o, unsigned]) })
  const err = errorOf(() => { r.applyUpdate(u, origin) })
  expect(err).toBeInstanceOf(UnsignedWriteError)
  expect((err as UnsignedWriteError).code).toBe('CAPMESH_ERR_UNSIGNED_WRITE')
  expect(r.encodeState()).toEqual(before)
  expect(JSON.stringify([...r.workers()])).toBe(view)
  expect(r.get('evil')).toBeUndefined()
  expect(refused).toEqual([[origin, true]])
  return err as UnsignedWriteError
}

/** The bucket of a worker id, as docs/internals.md describes it: FNV-1a of its UTF-16 code units, mod 4,096. */
function bucketOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) % 4096
}

describe('SegmentDigest', () => {
  it('depends on the entries, not on the order they were set in, and rootWith() previews set()', () => {
    const x = new SegmentDigest()
    const y = new SegmentDigest()
    const ids = Array.from({ length: 600 }, (_, i) => `w${i}`)
    for (const id of ids) x.set(id, entryLeaf(id, `t${id}`))
    for (const id of [...ids].reverse()) y.set(id, entryLeaf(id, `t${id}`))
    expect(x.root()).toBe(y.root())
    const before = x.root()
    const preview = x.rootWith(new Map([['w1', entryLeaf('w1', 'changed')], ['w2', null], ['new', entryLeaf('new', 'n')]]))
    expect(x.root()).toBe(before)
    expect(preview).not.toBe(before)
    x.set('w1', entryLeaf('w1', 'changed'))
    x.delete('w2')
    x.set('new', entryLeaf('new', 'n'))
    expect(x.root()).toBe(preview)
    expect(x.size).toBe(600)
  })

  it('a digest kept through 5,000 random sets, overwrites and deletes (root() after each batch of them) equals one built afresh from what is left', () => {
    let seed = 7
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    const kept = new SegmentDigest()
    const live = new Map<string, string>()
    for (let i = 0; i < 5000; i++) {
      const id = `w${rand(800)}`
      if (rand(4) === 0) { kept.delete(id); live.delete(id) } else { const leaf = entryLeaf(id, `t${rand(3)}`); kept.set(id, leaf); live.set(id, leaf) }
      if (i % 250 === 0) kept.root()
    }
    const fresh = new SegmentDigest()
    for (const [id, leaf] of [...live].reverse()) fresh.set(id, leaf)
    expect(kept.size).toBe(live.size)
    expect(kept.root()).toBe(fresh.root())
    expect(new SegmentDigest().rootWith(new Map(live))).toBe(fresh.root())
  })

  it('a deferred digest fills itself from its source when first used: the same root and leaves as one kept by set(), and later changes go on from there', () => {
    const source = new Map<string, string>()
    for (let i = 0; i < 3000; i++) source.set(`w${i}`, entryLeaf(`w${i}`, `t${i % 7}`))
    let reads = 0
    const deferred = SegmentDigest.deferred(() => { reads++; return source.entries() })
    // Changes made while it waits are the source's: counted, not applied on their own.
    deferred.set('w1', entryLeaf('w1', 'ignored'))
    deferred.delete('w2')
    source.delete('w2')
    expect(deferred.deferred).toBe(true)
    expect(deferred.stamp).toBe(2)
    expect(reads).toBe(0)
    const kept = new SegmentDigest()
    for (const [id, leaf] of [...source].reverse()) kept.set(id, leaf)
    expect(deferred.root()).toBe(kept.root())
    expect(deferred.deferred).toBe(false)
    expect(deferred.size).toBe(source.size)
    expect(deferred.leaf('w1')).toBe(source.get('w1'))
    expect(deferred.leaf('w2')).toBeUndefined()
    const changes = new Map<string, string | null>([['w3', null], ['new', entryLeaf('new', 'n')]])
    expect(deferred.rootWith(changes)).toBe(kept.rootWith(changes))
    for (const d of [deferred, kept]) { d.delete('w3'); d.set('new', entryLeaf('new', 'n')) }
    expect(deferred.root()).toBe(kept.root())
    expect(reads).toBe(1)
  })

  it('rootWith() previews every batch of random sets, overwrites and deletes of a populated digest', () => {
    let seed = 11
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    const d = new SegmentDigest()
    for (let i = 0; i < 2000; i++) d.set(`w${i}`, entryLeaf(`w${i}`, 't'))
    for (let batch = 0; batch < 40; batch++) {
      const changes = new Map<string, string | null>()
      for (let k = rand(300); k >= 0; k--) {
        const id = `w${rand(2600)}`
        changes.set(id, rand(3) === 0 ? null : entryLeaf(id, `t${rand(4)}`))
      }
      const preview = d.rootWith(changes)
      for (const [id, leaf] of changes) if (leaf == null) d.delete(id); else d.set(id, leaf)
      expect(d.root()).toBe(preview)
    }
  })

  it('previews of a digest with no group hashed yet (a segment new to the replica) give the root the changes give, and leave the empty digest as it was', () => {
    const empty = new SegmentDigest().root()
    for (const size of [1, 3, 40, 700]) {
      const changes = new Map<string, string | null>()
      for (let i = 0; i < size; i++) changes.set(`n${size}-${i}`, entryLeaf(`n${size}-${i}`, 't'))
      const fresh = new SegmentDigest()
      const preview = fresh.rootWith(changes)
      expect(fresh.root()).toBe(empty)
      for (const [id, leaf] of changes) fresh.set(id, leaf!)
      expect(fresh.root()).toBe(preview)
      expect(new SegmentDigest().root()).toBe(empty)
    }
  })

  it('is the documented tree: 4,096 buckets of sorted leaves by FNV-1a of the worker id, 64 groups of 64, the root over the groups', () => {
    // A plain reference implementation of the format, from its description in docs/internals.md.
    const sha = (b: Buffer): Buffer => createHash('sha256').update(b).digest()
    const reference = (entries: Map<string, string>): string => {
      const buckets: Buffer[][] = Array.from({ length: 4096 }, () => [])
      for (const [id, text] of entries) buckets[bucketOf(id)].push(createHash('sha256').update(`${id.length}:${id}${text}`).digest())
      const bucketHashes = buckets.map(leaves => sha(Buffer.concat(leaves.sort(Buffer.compare))))
      const groups = Array.from({ length: 64 }, (_, g) => sha(Buffer.concat(bucketHashes.slice(g * 64, g * 64 + 64))))
      return createHash('sha256').update(`capmesh/segment/${SEAL_VERSION}\0`).update(Buffer.concat(groups)).digest('hex')
    }
    const entries = new Map<string, string>()
    const d = new SegmentDigest()
    expect(d.root()).toBe(reference(entries))
    for (const n of [1, 2, 300, 6000]) {
      while (entries.size < n) {
        const id = `worker-${entries.size}-é`
        entries.set(id, `{"text ${entries.size}":"ü"}`)
        d.set(id, entryLeaf(id, entries.get(id)!))
      }
      expect(d.root()).toBe(reference(entries))
    }
  })

  it('an empty segment has the root of no entries, and deleting everything (then adding it back) returns to each root', () => {
    const empty = new SegmentDigest().root()
    const d = new SegmentDigest()
    expect(d.root()).toBe(empty)
    expect(d.size).toBe(0)
    const ids = Array.from({ length: 500 }, (_, i) => `w${i}`)
    for (const id of ids) d.set(id, entryLeaf(id, 't'))
    const full = d.root()
    expect(full).not.toBe(empty)
    for (const id of ids) d.delete(id)
    expect(d.root()).toBe(empty)
    expect(d.size).toBe(0)
    for (const id of [...ids].reverse()) d.set(id, entryLeaf(id, 't'))
    expect(d.root()).toBe(full)
    // Deleting an absent key, or setting a key to the leaf it holds, changes nothing.
    const stamp = d.stamp
    d.delete('absent')
    d.set('w1', entryLeaf('w1', 't'))
    expect(d.stamp).toBe(stamp)
    expect(d.root()).toBe(full)
    // A preview of everything going is the empty root; one of nothing that changes is the root held.
    expect(d.rootWith(new Map(ids.map(id => [id, null])))).toBe(empty)
    expect(d.rootWith(new Map([['absent', null], ['w2', entryLeaf('w2', 't')]]))).toBe(full)
    expect(new SegmentDigest().rootWith(new Map())).toBe(empty)
  })

  it('previews several changes within one bucket (removals, rewrites, additions) as applying them gives', () => {
    const same = ['w0']
    for (let i = 1; same.length < 6; i++) if (bucketOf(`k${i}`) === bucketOf('w0')) same.push(`k${i}`)
    const d = new SegmentDigest()
    for (const id of same.slice(0, 4)) d.set(id, entryLeaf(id, 'one'))
    const changes: Map<string, string | null> = new Map([[same[0], null], [same[1], entryLeaf(same[1], 'two')], [same[4], entryLeaf(same[4], 'new')], [same[5], entryLeaf(same[5], 'new')]])
    const preview = d.rootWith(changes)
    for (const [id, leaf] of changes) if (leaf == null) d.delete(id); else d.set(id, leaf)
    const fresh = new SegmentDigest()
    for (const id of [same[1], same[2], same[3], same[4], same[5]]) fresh.set(id, d.leaf(id)!)
    expect(d.root()).toBe(preview)
    expect(fresh.root()).toBe(preview)
  })

  it('takes a preview\'s hashes only when exactly its changes were made since, and keeps the right root either way', () => {
    let seed = 5
    const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    const d = new SegmentDigest()
    for (let i = 0; i < 3000; i++) d.set(`w${i}`, entryLeaf(`w${i}`, 't'))
    /** A digest built afresh from `d`'s leaves. */
    const rebuilt = (): string => {
      const f = new SegmentDigest()
      for (let i = 0; i < 4000; i++) { const leaf = d.leaf(`w${i}`); if (leaf != null) f.set(`w${i}`, leaf) }
      return f.root()
    }
    for (let round = 0; round < 30; round++) {
      const changes = new Map<string, string | null>()
      for (let k = rand(round % 2 === 0 ? 3 : 400); k >= 0; k--) {
        const id = `w${rand(4000)}`
        changes.set(id, rand(3) === 0 ? null : entryLeaf(id, `t${rand(5)}`))
      }
      const p = d.preview()
      for (const [id, leaf] of changes) p.change(id, leaf)
      const expected = p.root()
      const how = round % 5
      // 0: exactly the previewed changes; 1: those and one more; 2: all but one; 3: one key to another leaf; 4: exactly, twice adopted.
      const applied = [...changes]
      if (how === 2) applied.pop()
      if (how === 3 && applied.length > 0) applied[0] = [applied[0][0], entryLeaf(applied[0][0], 'other')]
      for (const [id, leaf] of applied) if (leaf == null) d.delete(id); else d.set(id, leaf)
      if (how === 1) d.set('w3999', entryLeaf('w3999', `extra${round}`))
      d.adopt(p)
      if (how === 4) d.adopt(p)
      expect(d.root()).toBe(rebuilt())
      if (how === 0 || how === 4) expect(d.root()).toBe(expected)
    }
    // A preview is made against its digest as it is.
    const p = d.preview()
    p.change('w1', entryLeaf('w1', 'p'))
    d.set('w2', entryLeaf('w2', 'moved on'))
    expect(() => p.root()).toThrow(DigestMovedError)
  })

  it('changes with any entry text, and a moved text under another key is another leaf', () => {
    const x = new SegmentDigest()
    x.set('w1', entryLeaf('w1', 'one'))
    const r1 = x.root()
    x.set('w1', entryLeaf('w1', 'one '))
    expect(x.root()).not.toBe(r1)
    expect(entryLeaf('w1', 'w2\0x')).not.toBe(entryLeaf('w1\0w2', 'x'))
  })
})

describe('seals', () => {
  it('every local write leaves the owner\'s segment sealed over exactly its entries', () => {
    const a = registry('a', { segmentMinGarbage: 4, segmentGarbageRatio: 0.2 })
    for (let i = 0; i < 20; i++) {
      a.register(input(`w${i}`))
      if (i % 3 === 0) a.deregister(`w${i - 1}`)
      const [key, seg] = segmentOf(a.doc, 'a')
      const seal = decodeSeal(seg.get(SEAL_KEY))
      expect(seal).not.toBeNull()
      expect(seal?.root).toBe(digestOf(seg).root())
      expect(seal?.signer).toBe(keys.authority('a').self)
      expect(keys.authority('b').verify(seal?.signer ?? '', Buffer.from(`capmesh/seal/${SEAL_VERSION}\0${key}\0${seal?.seq}\0${seal?.root}`), Buffer.from(seal?.sig ?? '', 'base64'))).toBe(true)
    }
    expect(a.stats().compactions).toBeGreaterThan(0)
  })

  it('the seals a segment replaces collapse into one deleted item: a delta of 300 registrations carries 300 entries, 2 more structs and one delete range', () => {
    const { a, b } = mesh()
    const before = b.encodeStateVector()
    for (let i = 0; i < 300; i++) a.register(input(`n${i}`))
    const delta = Y.decodeUpdate(a.encodeDiff(before))
    // The entries, the replaced seals (one item), the current seal.
    expect(delta.structs.length).toBe(302)
    expect([...delta.ds.clients.values()].flat().length).toBe(1)
    b.applyUpdate(a.encodeDiff(before), Origin.remote)
    expect(b.get('n299')?.worker_url).toBe('https://127.0.0.1:7000/n299')
    // Kept that way at the peer too: its whole state holds a's seals as one dead item and the live one.
    const [, seg] = segmentOf(b.doc, 'a')
    const sealClient = (seg._map.get(SEAL_KEY) as Y.Item).id.client
    expect(b.doc.store.clients.get(sealClient)!.filter(s => s instanceof Y.Item && s.parent === seg).length).toBe(2)
  })

  it('an owner whose seal client id another writer used (a collision) seals on a fresh one, and its peers still accept its writes', () => {
    const { a, b, c } = mesh()
    const sealClientOf = (r: Registry): number => (segmentOf(r.doc, 'a')[1]._map.get(SEAL_KEY) as Y.Item).id.client
    const used = sealClientOf(a)
    // c writes its own (validly sealed) entries under that client id, and a applies them.
    c.doc.clientID = used
    c.register(input('c0'))
    a.applyUpdate(c.encodeDiff(a.encodeStateVector()), Origin.remote)
    expect(a.get('c0')).toBeDefined()
    a.register(input('a9'))
    expect(sealClientOf(a)).not.toBe(used)
    for (const peer of [b, c]) {
      peer.applyUpdate(a.encodeDiff(peer.encodeStateVector()), Origin.remote)
      expect(peer.get('a9')?.worker_url).toBe('https://127.0.0.1:7000/a9')
    }
  })

  it('a peer applies the owner\'s updates one by one, as gossip delivers them', () => {
    const a = registry('a')
    const b = registry('b')
    a.on('update', (u, o) => { if (o === Origin.local) b.applyUpdate(u, Origin.remote) })
    for (let i = 0; i < 30; i++) a.register(input(`w${i}`))
    for (let i = 0; i < 30; i += 2) a.deregister(`w${i}`)
    a.compact()
    a.register(input('w1', 'https://127.0.0.1:7000/moved'))
    expect([...b.workers()].map(w => w.worker_url).sort()).toEqual([...a.workers()].filter(w => w.owner === 'a').map(w => w.worker_url).sort())
  })

  it('a peer that checks each update and then applies it with the verdict (as gossip does) follows the owner, refusing forgeries in between', () => {
    const { a, b } = mesh()
    const updates: Uint8Array[] = []
    a.on('update', (u, o) => { if (o === Origin.local) updates.push(u) })
    for (let i = 0; i < 40; i++) {
      if (i % 3 === 0) a.deregister(`a${i % 5}`)
      a.register(input(`n${i}`, `https://127.0.0.1:7000/n${i}/${i % 4}`))
    }
    a.compact()
    a.register(input('after-compaction'))
    for (const [i, u] of updates.entries()) {
      const verdict = b.validate(u, Origin.remote)
      if (i % 7 === 3) {
        // Another path (a sync) brought it first: the verdict is stale, the apply checks again and finds nothing new.
        b.applyUpdate(u, Origin.remote)
        expect(b.applyUpdate(u, Origin.remote, { validated: verdict })).toBe(false)
      } else {
        expect(b.applyUpdate(u, Origin.remote, { validated: verdict })).toBe(true)
      }
      if (i % 5 === 0) {
        const doc = insiderCopy(b)
        segmentOf(doc, 'a')[1].set('evil', forged())
        expectRefused(b, diffFrom(doc, b))
      }
    }
    expect([...b.workers()].filter(w => w.owner === 'a').map(w => w.worker_url).sort()).toEqual([...a.workers()].filter(w => w.owner === 'a').map(w => w.worker_url).sort())
  })

  it('a delta computed against an older state vector is accepted after gossip moved the peer on: the replaced seals it carries straddle what the peer holds', () => {
    const { a, b } = mesh()
    const old = b.encodeStateVector()
    a.register(input('n0'))
    // Gossip delivers n0 while an exchange's delta, computed against the state before it, is on its way.
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    for (let i = 1; i < 4; i++) a.register(input(`n${i}`))
    const delta = a.encodeDiff(old)
    const sealClient = (segmentOf(a.doc, 'a')[1]._map.get(SEAL_KEY) as Y.Item).id.client
    const held = Y.getState(b.doc.store, sealClient)
    // The replaced seals are one dead item that starts below what b holds and ends past it: Yjs integrates its rest.
    expect(Y.decodeUpdate(delta).structs.filter(s => s.id.client === sealClient && s.id.clock < held && s.id.clock + s.length > held)).toHaveLength(1)
    expect(b.applyUpdate(delta, Origin.remote)).toBe(true)
    expect([...b.workers()].map(w => w.worker_id).sort()).toEqual([...a.workers()].map(w => w.worker_id).sort())
    // And a's next write still follows at b.
    a.register(input('n4'))
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect(b.get('n4')).toBeDefined()
  })

  it('a second copy of a delta changes nothing, whatever it claims for items the peer holds; it is not checked again item by item', () => {
    const { a, b } = mesh()
    const before = b.encodeStateVector()
    for (let i = 0; i < 20; i++) a.register(input(`n${i}`))
    const delta = a.encodeDiff(before)
    expect(b.applyUpdate(delta, Origin.remote)).toBe(true)
    const state = b.encodeState()
    const changes: unknown[] = []
    b.on('change', c => { changes.push(c) })
    expect(b.applyUpdate(delta, Origin.remote)).toBe(false)
    // A copy whose held items carry other text (malformed, even): Yjs keeps what b holds, so it is no write.
    const [key] = segmentOf(b.doc, 'a')
    const text = JSON.stringify(JSON.parse(b.doc.getMap(ROOT).get(key) instanceof Y.Map ? (b.doc.getMap(ROOT).get(key) as Y.Map<string>).get('n3')! : '{}'))
    const tampered = Buffer.from(delta)
    const at = tampered.indexOf(text)
    expect(at).toBeGreaterThan(0)
    tampered.write('{', at + 1)
    expect(b.applyUpdate(new Uint8Array(tampered), Origin.remote)).toBe(false)
    expect(b.encodeState()).toEqual(state)
    expect(changes).toEqual([])
    expect(b.get('n3')?.worker_url).toBe('https://127.0.0.1:7000/n3')
  })

  it('refuses an item that starts with an entry the peer holds and goes on into a forged one (Yjs would integrate the rest as the key\'s new value)', () => {
    const { a, b } = mesh()
    // a4 is the last item on a's client: the element after it is the first one b lacks.
    const [, seg] = segmentOf(b.doc, 'a')
    const held = seg._map.get('a4') as Y.Item
    expect(held.id.clock + held.length).toBe(Y.getState(b.doc.store, held.id.client))
    const text = (held.content as Y.ContentAny).arr[0] as string
    const item = new Y.Item(held.id, null, held.origin, null, null, (seg._item as Y.Item).id, 'a4',
      new Y.ContentAny([text, forged({ worker_id: 'a4', incarnation: 5 })]))
    const enc = new Y.UpdateEncoderV1()
    encoding.writeVarUint(enc.restEncoder, 1)
    encoding.writeVarUint(enc.restEncoder, 1)
    enc.writeClient(held.id.client)
    encoding.writeVarUint(enc.restEncoder, held.id.clock)
    item.write(enc, 0)
    encoding.writeVarUint(enc.restEncoder, 0)
    const err = expectRefused(b, enc.toUint8Array())
    expect(err.message).toMatch(/not the ones its owner sealed/)
    expect(b.get('a4')?.worker_url).toBe('https://127.0.0.1:7000/a4')
    expect(a.get('a4')?.worker_url).toBe('https://127.0.0.1:7000/a4')
  })

  it('refuses an entry forged into another owner\'s segment, alone', () => {
    const { a, b } = mesh()
    const doc = insiderCopy(b)
    segmentOf(doc, 'a')[1].set('evil', forged())
    const err = expectRefused(b, diffFrom(doc, b))
    expect(err.message).toMatch(/not the ones its owner sealed/)
    expect(a.get('evil')).toBeUndefined()
  })

  it('refuses an entry forged into an update that is otherwise the owner\'s own', () => {
    const { a, b } = mesh()
    const doc = insiderCopy(b)
    a.register(input('a-new'))
    Y.applyUpdate(doc, a.encodeDiff(Y.encodeStateVector(doc)))
    segmentOf(doc, 'a')[1].set('evil', forged())
    expectRefused(b, diffFrom(doc, b))
    // The owner's own update alone still goes through.
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect(b.get('a-new')).toBeDefined()
  })

  it('refuses an existing entry rewritten (moved to the attacker) or deleted by someone else', () => {
    const { b } = mesh()
    const moved = insiderCopy(b)
    segmentOf(moved, 'a')[1].set('a1', forged({ worker_id: 'a1', incarnation: 1 }))
    expectRefused(b, diffFrom(moved, b))
    const removed = insiderCopy(b)
    segmentOf(removed, 'a')[1].delete('a2')
    expectRefused(b, diffFrom(removed, b))
    expect(b.get('a1')?.worker_url).toBe('https://127.0.0.1:7000/a1')
    expect(b.get('a2')).toBeDefined()
  })

  it('refuses a forged entry resealed with the forger\'s own key (the seal names another signer)', () => {
    const { b, c } = mesh()
    const doc = insiderCopy(b)
    const [key, seg] = segmentOf(doc, 'a')
    seg.set('evil', forged())
    const old = decodeSeal(seg.get(SEAL_KEY))
    seg.set(SEAL_KEY, encodeSeal(makeSeal(keys.authority('c'), key, (old?.seq ?? 0) + 1, digestOf(seg).root())))
    expect(expectRefused(b, diffFrom(doc, b)).message).toMatch(/not by a's key/)
    expect(c.get('evil')).toBeUndefined()
  })

  it('refuses a seal whose signature is garbage, truncated, or over other content', () => {
    const { b } = mesh()
    for (const sig of ['A'.repeat(86) + '==', Buffer.alloc(64, 7).toString('base64')]) {
      const doc = insiderCopy(b)
      const [key, seg] = segmentOf(doc, 'a')
      seg.set('evil', forged())
      const old = decodeSeal(seg.get(SEAL_KEY))
      seg.set(SEAL_KEY, encodeSeal({ v: SEAL_VERSION, signer: keys.authority('a').self, seq: (old?.seq ?? 0) + 1, root: digestOf(seg).root(), sig }))
      void key
      expect(expectRefused(b, diffFrom(doc, b)).message).toMatch(/signature does not verify/)
    }
    for (const bad of ['{"v":1}', 'not json', JSON.stringify({ v: 1, signer: 'x', seq: 2, root: 'ab', sig: 'AA==' })]) {
      const doc = insiderCopy(b)
      segmentOf(doc, 'a')[1].set(SEAL_KEY, bad)
      const before = b.encodeState()
      expect(errorOf(() => { b.applyUpdate(diffFrom(doc, b), Origin.remote) })).toBeInstanceOf(InvalidStateError)
      expect(b.encodeState()).toEqual(before)
    }
  })

  it('refuses a replayed older seal (with the entries it covered) once a newer one is held', () => {
    const { a, b } = mesh()
    const [key, seg] = segmentOf(a.doc, 'a')
    const oldSeal = seg.get(SEAL_KEY) as string
    const oldText = seg.get('a3') as string
    a.deregister('a3')
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect(b.get('a3')).toBeUndefined()
    const doc = insiderCopy(b)
    const s = segmentOf(doc, 'a')[1]
    s.set('a3', oldText)
    s.set(SEAL_KEY, oldSeal)
    void key
    expect(expectRefused(b, diffFrom(doc, b)).message).toMatch(/not newer/)
    expect(b.get('a3')).toBeUndefined()
  })

  it('a replayed old signed entry never beats the newer one after a failover: incarnations decide', () => {
    const { a, b, c } = mesh()
    // a0 fails over to c; a's segment drops it (a newer incarnation elsewhere).
    const old = segmentOf(a.doc, 'a')[1].get('a0') as string
    c.register({ ...input('a0', 'https://127.0.0.1:7000/after'), incarnation: 2 })
    for (const to of [a, b]) to.applyUpdate(c.encodeDiff(to.encodeStateVector()), Origin.remote)
    expect(b.get('a0')?.owner).toBe('c')
    // An old copy of a's whole document, sent as it was: nothing in it is new here.
    const stale = new Y.Doc()
    Y.applyUpdate(stale, Y.encodeStateAsUpdate(a.doc))
    b.applyUpdate(Y.encodeStateAsUpdate(stale), Origin.remote)
    expect(b.get('a0')).toMatchObject({ owner: 'c', worker_url: 'https://127.0.0.1:7000/after' })
    expect(JSON.parse(old).incarnation).toBeLessThan(b.get('a0')?.incarnation ?? 0)
  })

  it('refuses concurrent writes into a segment (a branch off an entry: no single writer made it)', () => {
    const { a, b } = mesh()
    const doc = insiderCopy(b)
    const item = segmentOf(doc, 'a')[1]._map.get('a1') as Y.Item
    a.register(input('a1', 'https://127.0.0.1:7000/rewritten'))
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    // The insider's copy predates that write: its own write to a1 branches off the same item.
    segmentOf(doc, 'a')[1].set('a1', forged({ worker_id: 'a1', incarnation: 5 }))
    expect((segmentOf(doc, 'a')[1]._map.get('a1') as Y.Item).origin).toEqual(item.lastId)
    expectRefused(b, Y.encodeStateAsUpdate(doc, b.encodeStateVector()))
    expect(b.get('a1')?.worker_url).toBe('https://127.0.0.1:7000/rewritten')
  })

  it('refuses a branch hidden among several writes of one key (the owner\'s chain and the insider\'s, in one update)', () => {
    const { a, b } = mesh()
    const doc = insiderCopy(b)
    const before = b.encodeStateVector()
    a.register(input('a1', 'https://127.0.0.1:7000/first'))
    a.register(input('a1', 'https://127.0.0.1:7000/second'))
    const seg = segmentOf(doc, 'a')[1]
    seg.set('a1', forged({ worker_id: 'a1', incarnation: 50 }))
    seg.set('a1', forged({ worker_id: 'a1', incarnation: 51 }))
    const merged = Y.mergeUpdates([a.encodeDiff(before), Y.encodeStateAsUpdate(doc, before)])
    expectRefused(b, merged)
    b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect(b.get('a1')?.worker_url).toBe('https://127.0.0.1:7000/second')
  })

  it('accepts the owner\'s chain of a key when the update lists its items out of chain order (its Yjs client id changed between writes)', () => {
    const { a, b } = mesh()
    const before = b.encodeStateVector()
    a.register(input('a1', 'https://127.0.0.1:7000/first'))
    // Yjs writes clients in descending id order: the later writes now come first in the update.
    a.doc.clientID = a.doc.clientID + 1
    a.register(input('a1', 'https://127.0.0.1:7000/second'))
    a.register(input('a2', 'https://127.0.0.1:7000/a2'))
    expect(b.applyUpdate(a.encodeDiff(before), Origin.remote)).toBe(true)
    expect(b.get('a1')?.worker_url).toBe('https://127.0.0.1:7000/second')
    expect(b.get('a2')?.worker_url).toBe('https://127.0.0.1:7000/a2')
  })

  it('refuses a segment whose key claims another controller, even sealed by the claimant', () => {
    const { b, c } = mesh()
    const doc = insiderCopy(b)
    const key = 'a/0zzzzzzzz.deadbeef'
    const seg = new Y.Map<unknown>()
    doc.getMap(ROOT).set(key, seg)
    seg.set('evil', forged())
    seg.set(SEAL_KEY, encodeSeal(makeSeal(keys.authority('c'), key, 1, digestOf(seg).root())))
    expectRefused(b, diffFrom(doc, b))
    expect(c.get('evil')).toBeUndefined()
  })

  it('a deleted segment put back in the same update as a forged one: the forged map is still checked', () => {
    const { a, b } = mesh()
    const [key] = segmentOf(a.doc, 'a')
    const doc = insiderCopy(b)
    doc.getMap(ROOT).delete(key)
    const seg = new Y.Map<unknown>()
    doc.getMap(ROOT).set(key, seg)
    seg.set('evil', forged())
    expectRefused(b, diffFrom(doc, b))
  })

  it('allows the one cross-owner write left: deleting a whole segment (of an owner gone for the stale window)', () => {
    const { a, b, c } = mesh()
    expect(c.dropOwner('a')).toBe(1)
    b.applyUpdate(c.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect(b.get('a0')).toBeUndefined()
    // The live owner puts its entries back, sealed, in a new generation.
    a.applyUpdate(c.encodeDiff(a.encodeStateVector()), Origin.remote)
    return new Promise<void>(resolve => setImmediate(() => {
      b.applyUpdate(a.encodeDiff(b.encodeStateVector()), Origin.remote)
      expect(b.size).toBe(6)
      resolve()
    }))
  })

  it('refuses an owner that is not admitted, whatever it signs', () => {
    const stranger = new Registry({ controllerId: 'z', seals: new SealDirectory().authority('z') })
    stranger.register(input('z0'))
    const b = registry('b')
    expectRefused(b, stranger.encodeState())
  })

  it('an import keeps other owners\' seals and checks them; a bad one refuses the import whole', () => {
    const { a, b } = mesh()
    const fresh = registry('d')
    expect(importState(fresh, exportState(a))).toEqual({ added: 6, workers: 6 })
    const doc = insiderCopy(b)
    segmentOf(doc, 'a')[1].set('evil', forged())
    const tampered = { ...exportState(b), update: Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64') }
    const empty = registry('e')
    expect(errorOf(() => importState(empty, tampered))).toBeInstanceOf(UnsignedWriteError)
    expect(empty.size).toBe(0)
    expect(empty.stats().segments).toBe(0)
  })

  it('a controller restarted from its data dir writes into a new generation and deletes the old one', () => {
    const a = registry('a')
    for (let i = 0; i < 4; i++) a.register(input(`w${i}`))
    const [oldKey] = segmentOf(a.doc, 'a')
    const restarted = registry('a')
    restarted.applyUpdate(a.encodeState(), Origin.load)
    restarted.register(input('w9'))
    const keysNow = [...restarted.doc.getMap(ROOT).keys()]
    expect(keysNow).toHaveLength(1)
    expect(keysNow[0]).not.toBe(oldKey)
    expect(restarted.size).toBe(5)
    // A peer that followed the first run follows the second.
    const b = registry('b')
    b.applyUpdate(a.encodeState(), Origin.remote)
    b.applyUpdate(restarted.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect([...b.workers()].map(w => w.worker_id).sort()).toEqual(['w0', 'w1', 'w2', 'w3', 'w9'])
  })

  it('a segment of its own that comes back from elsewhere is deleted once this run has its own', async () => {
    const a = registry('a')
    a.register(input('w0'))
    const b = registry('b')
    b.applyUpdate(a.encodeState(), Origin.remote)
    // a lost its data dir: a new run, its old segment still at b.
    const again = registry('a')
    again.register(input('w1'))
    again.applyUpdate(b.encodeDiff(again.encodeStateVector()), Origin.remote)
    await new Promise(resolve => setImmediate(resolve))
    expect([...again.doc.getMap(ROOT).keys()]).toHaveLength(1)
    expect(again.stats().segments).toBe(1)
    b.applyUpdate(again.encodeDiff(b.encodeStateVector()), Origin.remote)
    expect([...b.workers()].map(w => w.worker_id).sort()).toEqual(['w1'])
  })
})
