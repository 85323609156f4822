/**
 * The sync protocol on in-memory stream pairs (@libp2p/utils' streamPair)
 * between in-memory replicas: no sockets, no Yjs. What is under test is the
 * framing: deltas of any size up to the receiver's limit, chunked; a delta
 * beyond it refused before it is sent; compressed deltas on 3.1.0 (and
 * not on 3.0.0); malformed, stalled and refused exchanges.
 */
import type { Stream } from '@libp2p/interface'
import { lpStream, streamPair } from '@libp2p/utils'
import { describe, expect, it } from 'vitest'
import { deflateRawSync } from 'node:zlib'
import {
  frames, refuseSync, SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED, syncInitiator, syncResponder, SyncError, PeerBusyError, type SyncOptions, type SyncResult
} from '../../../src/gossip/sync.ts'
import { MemoryReplica } from '../../helpers/memory-replica.ts'

const MiB = 1024 * 1024

function options (id: string, extra: Partial<SyncOptions> = {}): SyncOptions {
  return { controllerId: id, maxDeltaBytes: 64 * MiB, chunkBytes: 256 * 1024, timeoutMs: 5000, applyMsPerMiB: 100, ...extra }
}

async function pair (protocol = SYNC_PROTOCOL): Promise<[Stream, Stream]> {
  const [out, inc] = await streamPair({ protocol, delay: 0 })
  // What multistream-select negotiated, at both ends (the mock muxer leaves it unset).
  out.protocol = inc.protocol = protocol
  return [out, inc]
}

/** Runs both sides; resolves with each side's outcome (result or error). */
async function exchange (a: MemoryReplica, b: MemoryReplica, oa: SyncOptions, ob: SyncOptions, protocol = SYNC_PROTOCOL) {
  const [out, inc] = await pair(protocol)
  return await Promise.allSettled([syncInitiator(out, a, oa), syncResponder(inc, b, ob)])
}

describe('sync protocol', () => {
  it('exchanges what each side lacks, both ways, and reports who answered', async () => {
    const a = new MemoryReplica({ x: 10, y: 20 })
    const b = new MemoryReplica({ y: 20, z: 30 })
    const [ra, rb] = await exchange(a, b, options('a'), options('b'))
    expect(ra.status === 'fulfilled' && ra.value).toMatchObject({ peerController: 'b', wasInSync: false })
    expect(rb.status === 'fulfilled' && rb.value).toMatchObject({ peerController: 'a', wasInSync: false })
    // Each side says where its time went.
    for (const r of [ra, rb]) {
      const phases = (r as PromiseFulfilledResult<SyncResult>).value.phases
      expect(Object.keys(phases).sort()).toEqual(['applyMs', 'encodeMs', 'receiveMs', 'sendMs'])
      for (const v of Object.values(phases)) expect(v).toBeGreaterThanOrEqual(0)
    }
    expect(a.digest()).toBe(b.digest())
    expect([...a.items.keys()].sort()).toEqual(['x', 'y', 'z'])
  })

  it('carries a delta many times the chunk size (and larger than the 4 MiB read buffer) in bounded frames', async () => {
    const a = new MemoryReplica()
    const b = new MemoryReplica({ big: 9 * MiB, small: 100 })
    const frames: number[] = []
    const [out, inc] = await pair()
    // Watch every frame the initiator reads: none may exceed a chunk (plus the length prefix).
    out.addEventListener('message', evt => { frames.push(evt.data.byteLength) })
    const [ra, rb] = await Promise.allSettled([syncInitiator(out, a, options('a')), syncResponder(inc, b, options('b'))])
    expect(ra.status).toBe('fulfilled')
    expect(rb.status).toBe('fulfilled')
    expect(a.digest()).toBe(b.digest())
    expect(a.applied).toHaveLength(1)
    expect(Math.max(...frames)).toBeLessThanOrEqual(256 * 1024 + 16)
  })

  it('never sends a delta beyond what the receiver said it takes: both sides fail on size, nothing applied', async () => {
    const a = new MemoryReplica()
    const b = new MemoryReplica({ big: 2 * MiB })
    const [ra, rb] = await exchange(a, b, options('a', { maxDeltaBytes: MiB }), options('b'))
    for (const r of [ra, rb]) {
      expect(r.status).toBe('rejected')
      const err = (r as PromiseRejectedResult).reason as SyncError
      expect(err.name).toBe('SyncError')
      expect(err.reason).toBe('too_large')
    }
    expect(a.items.size).toBe(0)
    expect(a.applied).toHaveLength(0)
  })

  it('a delta the receiver refuses is a rejected exchange and changes nothing there', async () => {
    const a = new MemoryReplica()
    a.refuse = true
    const b = new MemoryReplica({ x: 10 })
    // The responder then waits for an answer that never comes: a short timeout ends it.
    const [ra] = await exchange(a, b, options('a'), options('b', { timeoutMs: 300, applyMsPerMiB: 0 }))
    expect(ra.status).toBe('rejected')
    expect(((ra as PromiseRejectedResult).reason as SyncError).reason).toBe('rejected')
    expect(a.items.size).toBe(0)
  })

  it('garbage instead of a HELLO is malformed; a peer that goes quiet times out', async () => {
    const [out, inc] = await pair()
    const responder = syncResponder(inc, new MemoryReplica(), options('b'))
    await lpStream(out).write(Uint8Array.of(9, 9, 9))
    await expect(responder).rejects.toMatchObject({ name: 'SyncError', reason: 'malformed' })

    const [out2, inc2] = await pair()
    void inc2 // never answers
    await expect(syncInitiator(out2, new MemoryReplica(), options('a', { timeoutMs: 200 }))).rejects.toMatchObject({ name: 'SyncError', reason: 'timeout' })
  })

  it('a DIFF chunk overrunning the length its header announced is malformed', async () => {
    const [out, inc] = await pair()
    const initiator = syncInitiator(out, new MemoryReplica(), options('a'))
    const lp = lpStream(inc)
    await lp.read()
    // The responder's HELLO (controller "b", takes up to 1 MiB, holds nothing), a header announcing
    // 10 bytes, then a 20-byte chunk.
    await lp.write(Uint8Array.of(1, 1, 0x62, 0, 0x10, 0, 0, ...new TextEncoder().encode('[]')))
    await lp.write(Uint8Array.of(2, 0, 0, 0, 10))
    await lp.write(new Uint8Array(20))
    await expect(initiator).rejects.toMatchObject({ name: 'SyncError', reason: 'malformed' })
  })

  it('a delta that compresses travels compressed on 3.1.0, and as it is on 3.0.0', async () => {
    // JSON text, as a registry's entries are: it shrinks many times over.
    const text = new TextEncoder().encode(Array.from({ length: 40_000 }, (_, i) => JSON.stringify({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [{ name: `cap-${i % 100}`, verb: 'invoke' }] })).join(''))
    for (const [protocol, compressed] of [[SYNC_PROTOCOL, true], [SYNC_PROTOCOL_UNCOMPRESSED, false]] as const) {
      const a = new MemoryReplica()
      const b = new MemoryReplica({ big: text, small: 100 })
      const [out, inc] = await pair(protocol)
      let read = 0
      out.addEventListener('message', evt => { read += evt.data.byteLength })
      const [ra, rb] = await Promise.allSettled([syncInitiator(out, a, options('a')), syncResponder(inc, b, options('b'))])
      expect(ra.status).toBe('fulfilled')
      expect(rb.status).toBe('fulfilled')
      expect(a.digest()).toBe(b.digest())
      expect(Buffer.from(a.items.get('big')!).equals(text)).toBe(true)
      // What the initiator read: a tenth of the delta or less compressed, all of it otherwise.
      if (compressed) expect(read).toBeLessThan(text.length / 10)
      else expect(read).toBeGreaterThan(text.length)
      expect((ra as PromiseFulfilledResult<SyncResult>).value.bytesReceived).toBeGreaterThan(text.length)
    }
  })

  it('a delta in many pieces (as Yjs encodes one) arrives whole, compressed on 3.1.0 and as it is on 3.0.0', async () => {
    // 400 blobs of 1 byte to ~60 KiB: the responder's delta is ~800 pieces, frames cut across their edges.
    const items: Record<string, Uint8Array> = {}
    for (let i = 0; i < 400; i++) items[`w${i}`] = new TextEncoder().encode(`{"worker_id":"w${i}","pad":"${'abc'.repeat((i * 997) % 20_000)}"}`.slice(0, 1 + (i * 7919) % 60_000))
    for (const protocol of [SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED]) {
      const a = new MemoryReplica({ mine: 10 })
      const b = new MemoryReplica(items)
      const [ra, rb] = await exchange(a, b, options('a', { chunkBytes: 64 * 1024 }), options('b', { chunkBytes: 64 * 1024 }), protocol)
      expect(ra.status).toBe('fulfilled')
      expect(rb.status).toBe('fulfilled')
      expect(a.digest()).toBe(b.digest())
      for (const [k, v] of Object.entries(items)) expect(Buffer.from(a.items.get(k)!).equals(v), k).toBe(true)
    }
  })

  it('frames() cuts pieces where one buffer of them would be cut', () => {
    const whole = new Uint8Array(10_000).map((_, i) => (i * 13) & 0xff)
    const cuts = [0, 1, 2, 100, 101, 2000, 2001, 2001, 5000, 9999, 10_000]
    const pieces = cuts.slice(1).map((end, i) => whole.subarray(cuts[i], end))
    for (const size of [1, 7, 100, 4096, 10_000, 20_000]) {
      const got = [...frames(pieces, size)].map(f => Buffer.from(f))
      const want: Buffer[] = []
      for (let at = 0; at < whole.length; at += size) want.push(Buffer.from(whole.subarray(at, at + size)))
      expect(got, `size ${size}`).toEqual(want)
    }
    expect([...frames([], 10)]).toEqual([])
    expect([...frames([new Uint8Array(0)], 10)]).toEqual([])
  })

  it('a compressed delta that does not inflate to exactly its announced length, or on 3.0.0, is malformed; one announced beyond the limit is too large', async () => {
    const hello = Uint8Array.of(1, 1, 0x62, 0, 0x10, 0, 0, ...new TextEncoder().encode('[]'))
    const deflated = (total: number, z: Uint8Array): Uint8Array[] => {
      const head = new Uint8Array(9)
      head[0] = 5
      new DataView(head.buffer).setUint32(1, total)
      new DataView(head.buffer).setUint32(5, z.length)
      return [head, z]
    }
    const payload = new Uint8Array(200_000).fill(7)
    const z = deflateRawSync(payload)
    const cases: Array<[string, Uint8Array[], string, string]> = [
      ['inflates to more than announced', deflated(100_000, z), 'malformed', SYNC_PROTOCOL],
      ['inflates to less than announced', deflated(300_000, z), 'malformed', SYNC_PROTOCOL],
      ['is not DEFLATE', deflated(300_000, new Uint8Array(1000).fill(0xff)), 'malformed', SYNC_PROTOCOL],
      ['is no smaller than the delta', deflated(10, new Uint8Array(10)), 'malformed', SYNC_PROTOCOL],
      ['is announced beyond the limit', deflated(128 * MiB, z), 'too_large', SYNC_PROTOCOL],
      ['comes on 3.0.0', deflated(200_000, z), 'malformed', SYNC_PROTOCOL_UNCOMPRESSED]
    ]
    for (const [what, frames, reason, protocol] of cases) {
      const [out, inc] = await pair(protocol)
      const a = new MemoryReplica()
      const initiator = syncInitiator(out, a, options('a'))
      const lp = lpStream(inc)
      await lp.read()
      await lp.write(hello)
      for (const f of frames) await lp.write(f)
      await expect(initiator, what).rejects.toMatchObject({ name: 'SyncError', reason })
      expect(a.applied, what).toEqual([])
    }
  })

  it('a busy controller answers BUSY after reading the HELLO', async () => {
    const [out, inc] = await pair()
    const refused = refuseSync(inc, new MemoryReplica(), options('b'))
    await expect(syncInitiator(out, new MemoryReplica(), options('a'))).rejects.toBeInstanceOf(PeerBusyError)
    await refused
  })
})
