import { crc32 } from 'node:zlib'
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { StoreError } from '../../../src/errors.ts'
import { FileStore, Origin, Registry, SealDirectory } from '../../../src/registry/index.ts'
import { readSnapshotAhead } from '../../../src/registry/read-ahead.ts'
import { errorOf } from '../../helpers/controllers.ts'

let dir: string
const stores: FileStore[] = []
const keys = new SealDirectory()

beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'capmesh-store-')) })
afterEach(() => {
  for (const s of stores.splice(0)) s.close()
  rmSync(dir, { recursive: true, force: true })
})

function open (init: { compactBytes?: number, fsync?: boolean, macKey?: Uint8Array } = {}): FileStore {
  const s = new FileStore({ dir, ...init })
  stores.push(s)
  return s
}

const bytes = (...v: number[]): Uint8Array => new Uint8Array(v)
const logPath = (): string => join(dir, 'updates.log')
const snapshotPath = (): string => join(dir, 'snapshot.bin')

describe('FileStore', () => {
  it('loads nothing from an empty (even missing) dir', () => {
    rmSync(dir, { recursive: true, force: true })
    expect(open().load()).toEqual({ updates: [], truncatedBytes: 0 })
  })

  it('replays appended updates in order after a reopen', () => {
    const s = open()
    s.load()
    s.append(bytes(1, 2, 3))
    s.append(bytes())
    s.append(bytes(4))
    s.close()
    expect(open().load()).toEqual({ updates: [bytes(1, 2, 3), bytes(), bytes(4)], truncatedBytes: 0 })
  })

  it('refuses to append before load()', () => {
    const err = errorOf(() => { open().append(bytes(1)) })
    expect(err).toBeInstanceOf(StoreError)
    expect((err as StoreError).code).toBe('CAPMESH_ERR_STORE')
  })

  describe('a torn log tail (a crash mid-write)', () => {
    const prepare = (): number => {
      const s = open()
      s.load()
      s.append(bytes(1, 1))
      s.append(bytes(2, 2, 2))
      s.close()
      return statSync(logPath()).size
    }

    it('a partial header is cut off', () => {
      const good = prepare()
      appendFileSync(logPath(), Buffer.from([9, 0, 0]))
      const res = open().load()
      expect(res).toEqual({ updates: [bytes(1, 1), bytes(2, 2, 2)], truncatedBytes: 3 })
      expect(statSync(logPath()).size).toBe(good)
    })

    it('a record shorter than its header says is cut off', () => {
      const good = prepare()
      const rec = Buffer.alloc(8 + 4)
      rec.writeUInt32LE(100, 0)
      appendFileSync(logPath(), rec)
      expect(open().load()).toEqual({ updates: [bytes(1, 1), bytes(2, 2, 2)], truncatedBytes: 12 })
      expect(statSync(logPath()).size).toBe(good)
    })

    it('a last record with a bad checksum is cut off', () => {
      prepare()
      const buf = readFileSync(logPath())
      buf[buf.length - 1] ^= 0xff
      writeFileSync(logPath(), buf)
      expect(open().load()).toEqual({ updates: [bytes(1, 1)], truncatedBytes: 8 + 3 })
    })

    it('a real record cut in the middle is cut off, and later appends survive the next load', () => {
      prepare()
      truncateSync(logPath(), statSync(logPath()).size - 2)
      const s = open()
      expect(s.load()).toEqual({ updates: [bytes(1, 1)], truncatedBytes: 8 + 1 })
      s.append(bytes(7))
      s.close()
      expect(open().load()).toEqual({ updates: [bytes(1, 1), bytes(7)], truncatedBytes: 0 })
    })
  })

  it('snapshot() replaces the snapshot and empties the log; later appends follow it', () => {
    const s = open()
    s.load()
    s.append(bytes(1))
    s.append(bytes(2))
    s.snapshot(bytes(9, 9))
    expect(statSync(logPath()).size).toBe(0)
    expect(s.stats()).toEqual({ logBytes: 0, snapshotBytes: 8 + 2 })
    s.append(bytes(3))
    s.close()
    expect(open().load()).toEqual({ updates: [bytes(9, 9), bytes(3)], truncatedBytes: 0 })
  })

  it('a corrupt snapshot is a StoreError, never a silent empty registry', () => {
    const s = open()
    s.load()
    s.snapshot(bytes(1, 2, 3, 4))
    s.close()
    const buf = readFileSync(snapshotPath())
    buf[buf.length - 1] ^= 0xff
    writeFileSync(snapshotPath(), buf)
    const err = errorOf(() => open().load())
    expect(err).toBeInstanceOf(StoreError)
    expect((err as StoreError).code).toBe('CAPMESH_ERR_STORE')
  })

  describe('a snapshot MAC (macKey)', () => {
    const key = new Uint8Array(32).fill(7)

    it('a snapshot written under the key loads as its own; under another key, or none, it does not', () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(5, 6, 7))
      expect(s.stats().snapshotBytes).toBe(8 + 3 + 8 + 32)
      s.append(bytes(8))
      s.close()
      expect(open({ macKey: key }).load()).toEqual({ updates: [bytes(5, 6, 7), bytes(8)], truncatedBytes: 0, own: true })
      stores.splice(0).forEach(x => { x.close() })
      expect(open({ macKey: new Uint8Array(32).fill(8) }).load().own).toBe(false)
      stores.splice(0).forEach(x => { x.close() })
      // A reader without the key reads the snapshot alone, as before there were MACs.
      expect(open().load()).toEqual({ updates: [bytes(5, 6, 7), bytes(8)], truncatedBytes: 0 })
    })

    it('with a key too, a corrupt snapshot is a StoreError', () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(1, 2, 3, 4))
      s.close()
      const buf = readFileSync(snapshotPath())
      buf[9] ^= 0xff
      writeFileSync(snapshotPath(), buf)
      const err = errorOf(() => open({ macKey: key }).load())
      expect(err).toBeInstanceOf(StoreError)
    })

    it('a snapshot written without the key, or altered with its checksum fixed up, is not its own', () => {
      const plain = open()
      plain.load()
      plain.snapshot(bytes(1, 2, 3))
      plain.close()
      expect(open({ macKey: key }).load()).toEqual({ updates: [bytes(1, 2, 3)], truncatedBytes: 0, own: false })
      stores.splice(0).forEach(x => { x.close() })

      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(1, 2, 3))
      s.close()
      const buf = readFileSync(snapshotPath())
      buf[8] ^= 0xff
      buf.writeUInt32LE(crc32(buf.subarray(8, 11)), 4)
      writeFileSync(snapshotPath(), buf)
      expect(open({ macKey: key }).load()).toEqual({ updates: [bytes(1 ^ 0xff, 2, 3)], truncatedBytes: 0, own: false })
    })

    it('its own snapshot is vouched for by its MAC, not its checksum: a changed checksum field alone changes nothing, a changed byte fails both', () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(1, 2, 3))
      s.close()
      const buf = readFileSync(snapshotPath())
      buf.writeUInt32LE(buf.readUInt32LE(4) ^ 1, 4)
      writeFileSync(snapshotPath(), buf)
      expect(open({ macKey: key }).load()).toEqual({ updates: [bytes(1, 2, 3)], truncatedBytes: 0, own: true })
      stores.splice(0).forEach(x => { x.close() })
      // Without the key the checksum is all there is: the same file is corrupt.
      expect(errorOf(() => open().load())).toBeInstanceOf(StoreError)
      stores.splice(0).forEach(x => { x.close() })
      buf.writeUInt32LE(buf.readUInt32LE(4) ^ 1, 4)
      buf[9] ^= 0xff
      writeFileSync(snapshotPath(), buf)
      expect(errorOf(() => open({ macKey: key }).load())).toBeInstanceOf(StoreError)
    })
  })

  describe('a snapshot read ahead (readSnapshotAhead)', () => {
    const key = new Uint8Array(32).fill(7)

    it('reads nothing where there is no snapshot', async () => {
      expect(await readSnapshotAhead(dir)).toBeNull()
      rmSync(dir, { recursive: true, force: true })
      expect(await readSnapshotAhead(dir)).toBeNull()
    })

    it('is what load() replays while the file is the one read', async () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(4, 5, 6))
      s.close()
      const ahead = await readSnapshotAhead(dir)
      expect(ahead?.bytes).toEqual(readFileSync(snapshotPath()))
      // The bytes read ahead are the ones replayed: a change made to them in memory (its checksum
      // fixed up; the MAC then fails, so it is checked as a snapshot of another's) shows.
      ahead!.bytes[8] = 9
      ahead!.bytes.writeUInt32LE(crc32(ahead!.bytes.subarray(8, 11)), 4)
      expect(open({ macKey: key }).load(ahead)).toEqual({ updates: [bytes(9, 5, 6)], truncatedBytes: 0, own: false })
    })

    it('a snapshot replaced since the read (a controller still stopping wrote its last one) is read again', async () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(1))
      s.close()
      const ahead = await readSnapshotAhead(dir)
      // As snapshot() replaces it: a new file renamed over the old one, the log emptied.
      const t = open({ macKey: key })
      t.load()
      t.append(bytes(2))
      t.snapshot(bytes(1, 2))
      t.close()
      expect(open({ macKey: key }).load(ahead)).toEqual({ updates: [bytes(1, 2)], truncatedBytes: 0, own: true })
    })

    it('a snapshot rewritten in place since the read is read again', async () => {
      const s = open({ macKey: key })
      s.load()
      s.snapshot(bytes(1, 1))
      s.close()
      const ahead = await readSnapshotAhead(dir)
      const buf = readFileSync(snapshotPath())
      buf[8] = 7
      buf.writeUInt32LE(crc32(buf.subarray(8, 10)), 4)
      writeFileSync(snapshotPath(), Buffer.concat([buf, Buffer.alloc(1)]))
      expect(open({ macKey: key }).load(ahead).updates[0]).toEqual(bytes(7, 1))
    })
  })

  it('a snapshot given in pieces is one record, byte for byte the file of the joined update, and loads as its own', () => {
    const key = new Uint8Array(32).fill(7)
    const whole = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff)
    const joined = open({ macKey: key })
    joined.load()
    joined.snapshot(whole)
    joined.close()
    const fileOfWhole = readFileSync(snapshotPath())
    stores.splice(0)
    rmSync(snapshotPath())

    // Pieces as Yjs leaves them: growing sizes, a view into a larger buffer, an empty one.
    const pieces = [whole.subarray(0, 100), new Uint8Array(0), whole.subarray(100, 300), new Uint8Array(whole.buffer, 300, 4700)]
    const s = open({ macKey: key })
    s.load()
    s.snapshot(pieces)
    expect(s.stats().snapshotBytes).toBe(8 + 5000 + 8 + 32)
    s.close()
    expect(readFileSync(snapshotPath()).equals(fileOfWhole)).toBe(true)
    expect(open({ macKey: key }).load()).toEqual({ updates: [whole], truncatedBytes: 0, own: true })
  })

  it('wantsSnapshot once the log outgrows compactBytes and the last snapshot', () => {
    const s = open({ compactBytes: 100 })
    s.load()
    s.append(new Uint8Array(50))
    expect(s.wantsSnapshot()).toBe(false)
    s.append(new Uint8Array(50))
    expect(s.wantsSnapshot()).toBe(true)
    s.snapshot(new Uint8Array(300))
    expect(s.wantsSnapshot()).toBe(false)
    s.append(new Uint8Array(200))
    expect(s.wantsSnapshot()).toBe(false)
    s.append(new Uint8Array(200))
    expect(s.wantsSnapshot()).toBe(true)
  })

  it('persists a registry: replaying snapshot + log (with a torn tail) gives the same view', () => {
    const s = open({ compactBytes: 2048, fsync: true })
    s.load()
    const reg = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    reg.on('update', u => {
      s.append(u)
      if (s.wantsSnapshot()) s.snapshot(reg.encodePieces())
    })
    for (let i = 0; i < 60; i++) reg.register({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/${i}`, capabilities: [{ name: 'echo', verb: 'invoke', version: '1', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 1 }] })
    for (let i = 0; i < 60; i += 3) reg.deregister(`w${i}`)
    expect(s.stats().snapshotBytes).toBeGreaterThan(0)
    s.close()
    appendFileSync(logPath(), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))

    const { updates, truncatedBytes } = open().load()
    expect(truncatedBytes).toBe(7)
    const restored = new Registry({ seals: keys.authority('a'), controllerId: 'a' })
    for (const u of updates) restored.applyUpdate(u, Origin.load)
    expect([...restored.workers()].sort((x, y) => x.worker_id < y.worker_id ? -1 : 1))
      .toEqual([...reg.workers()].sort((x, y) => x.worker_id < y.worker_id ? -1 : 1))
    expect(restored.size).toBe(40)
  })
})
