/**
 * Anti-entropy over a libp2p stream protocol. Gossip is lossy while a
 * partition lasts; this is what makes the mesh converge anyway.
 *
 * `/capmesh/sync/3.0.0`, length-prefixed frames:
 *
 *   initiator → responder  HELLO(controller id, largest delta it takes, state vector)
 *   responder → initiator  HELLO(...)  then DIFF(what the initiator lacks)
 *   initiator → responder  DIFF(what the responder lacks)
 *
 * A DIFF is a header frame (its total length) followed by raw frames of at
 * most `chunkBytes` each, so a delta of any size up to the receiver's limit
 * travels in bounded frames: the sender holds the delta once (in the
 * pieces its replica encoded it in, never joined) and sends slices of it,
 * the receiver copies the slices into one buffer of the announced length.
 * Neither side buffers more than a chunk and a stream window beyond the
 * delta itself. A delta larger than what the receiver said it takes is
 * never sent: the sender answers TOO_LARGE with both sizes, and both sides
 * record a size failure (the scheduler backs off; it is not retried in a
 * loop).
 *
 * On `/capmesh/sync/3.1.0` a delta of SYNC_DEFLATE_MIN_BYTES or more may
 * travel compressed instead (raw DEFLATE, level 1, on libuv's thread pool,
 * the delta's pieces fed in turn to one stream):
 * a DEFLATED header (the delta's length and the compressed length), then the
 * compressed bytes in chunks. A registry's delta is JSON text in Yjs items
 * and shrinks ~25-fold (100,000 workers: 32 MB to ~1.3 MB), which spares
 * both sides the mesh-key cipher, noise and yamux over the other 97 %. The
 * receiver inflates it into exactly the announced length (never more: the
 * limit it said in its HELLO applies to the delta, not to what travels) and
 * refuses anything else as malformed. A delta that does not shrink goes as
 * a plain DIFF. `/capmesh/sync/3.0.0` (controllers from before 3.1.0) is
 * still spoken, without compression: the dialler offers both, newest first.
 *
 * Both sides validate a DIFF before it touches the document (the replica's
 * `apply`); a malformed frame aborts the stream and changes nothing.
 *
 * A controller takes part in one exchange at a time. One that is already
 * busy answers a HELLO with BUSY instead (never waits, so two controllers
 * dialling each other cannot deadlock).
 */
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import { createDeflateRaw, inflateRaw as inflateRawCb } from 'node:zlib'
import { SYNC_DEFLATE_MIN_BYTES } from '../constants.ts'
import { DecodeError, readControllerId, writeControllerId } from './envelope.ts'
import type { Replica } from './replica.ts'

/** 3: wire format 3 (entries carry the identity that registered them); deltas chunked; .1: deltas may be compressed. */
export const SYNC_PROTOCOL = '/capmesh/sync/3.1.0'
/** The same exchange without compression, as controllers from before 3.1.0 speak it. */
export const SYNC_PROTOCOL_UNCOMPRESSED = '/capmesh/sync/3.0.0'
/** What a controller dials and answers, newest first (multistream-select picks the first both speak). */
export const SYNC_PROTOCOLS = [SYNC_PROTOCOL, SYNC_PROTOCOL_UNCOMPRESSED]

const inflateRaw = promisify(inflateRawCb)

const HELLO = 1
const DIFF = 2
const BUSY = 3
const TOO_LARGE = 4
const DEFLATED = 5

/**
 * Beyond a chunk, what the receiving side may hold unread: a yamux stream
 * window (its receive window grows to 16 MiB, and the sender may fill it
 * before the reader wakes up).
 */
const READ_SLACK_BYTES = 16 * 1024 * 1024 + 64 * 1024

/** Why an exchange failed, as the scheduler, logs, /health and metrics name it. */
export type SyncFailureReason =
  /** The delta one side needs exceeds what it accepts (`max-sync-bytes`). */
  | 'too_large'
  /** No progress within the sync timeout. */
  | 'timeout'
  /** The stream or connection ended mid-exchange. */
  | 'closed'
  /** A frame did not decode (not a capmesh peer, or a broken one). */
  | 'malformed'
  /** A delta decoded but was refused by validation (nothing applied). */
  | 'rejected'
  /** The stream could not be opened. */
  | 'dial'
  /** Anything else (a bug: the message says what). */
  | 'internal'

export const SYNC_FAILURE_REASONS: SyncFailureReason[] = ['too_large', 'timeout', 'closed', 'malformed', 'rejected', 'dial', 'internal']

/** An exchange failed for `reason`. */
export class SyncError extends Error {
  readonly reason: SyncFailureReason
  constructor (reason: SyncFailureReason, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'SyncError'
    this.reason = reason
  }
}

/** The peer is in another exchange; try again shortly. */
export class PeerBusyError extends Error {
  constructor () {
    super('the peer is busy with another sync exchange')
    this.name = 'PeerBusyError'
  }
}

/** What the sync protocol needs of a replica: its state vector, the delta a peer lacks, and a checked apply. */
export type SyncReplica = Pick<Replica, 'stateVector' | 'checkStateVector' | 'diff' | 'apply' | 'applyDelta'>

export interface SyncResult {
  /** The other side's controller id. */
  peerController: string
  /** State vectors were equal before the exchange. */
  wasInSync: boolean
  /** Bytes written to the stream (frames, compressed where the delta was). */
  bytesSent: number
  /** Length of the peer's delta (as applied, after inflating). */
  bytesReceived: number
  /** Where the exchange's time went (ms). */
  phases: SyncPhases
}

/**
 * The steps of one side of an exchange (ms). `receiveMs` runs from this
 * side's HELLO to the peer's whole delta in hand (inflated): on the
 * responder it includes the initiator's apply of what it was sent.
 */
export interface SyncPhases {
  /** Encoding the delta the peer lacks. */
  encodeMs: number
  /** Compressing and sending it. */
  sendMs: number
  /** Waiting for and receiving the peer's delta. */
  receiveMs: number
  /** Checking and applying the peer's delta. */
  applyMs: number
}

export interface SyncOptions {
  /** This controller's id (sent in HELLO). */
  controllerId: string
  /** Largest delta accepted from the peer (bytes). */
  maxDeltaBytes: number
  /** Largest frame of a chunked DIFF (bytes). */
  chunkBytes: number
  /** Each read or write must make progress within this (ms). */
  timeoutMs: number
  /**
   * Time (ms per MiB) a peer may take to check and apply a delta this side
   * sent before it answers with its own: added to the wait for its DIFF.
   */
  applyMsPerMiB: number
  /** Called whenever bytes arrive or leave (lets the scheduler tell a slow exchange from a stalled one). */
  onProgress?: () => void
  /**
   * Called with true when this side starts applying the peer's delta and with false when it is done:
   * however long that takes (seconds for a whole registry), the exchange is not stalled.
   */
  onApplying?: (applying: boolean) => void
  /** Called with the peer's controller id once its HELLO is read (before the exchange can fail on size). */
  onPeer?: (controllerId: string) => void
}

const enc = new TextEncoder()

interface Hello { controllerId: string, maxDelta: number, sv: Uint8Array }

function hello (controllerId: string, maxDelta: number, sv: Uint8Array): Uint8Array {
  const id = enc.encode(controllerId)
  const out = new Uint8Array(2 + id.length + 4 + sv.length)
  out[0] = HELLO
  const at = writeControllerId(out, 1, id)
  new DataView(out.buffer, out.byteOffset).setUint32(at, Math.min(maxDelta, 0xffffffff))
  out.set(sv, at + 4)
  return out
}

function readHello (frame: Uint8Array, replica: SyncReplica): Hello {
  if (frame.length < 2 || frame[0] !== HELLO) throw new SyncError('malformed', 'expected a HELLO frame')
  const { controllerId, end } = readId(frame, 1, 'HELLO')
  if (frame.length < end + 4) throw new SyncError('malformed', 'HELLO: truncated size field')
  const maxDelta = new DataView(frame.buffer, frame.byteOffset).getUint32(end)
  const sv = frame.subarray(end + 4)
  try {
    replica.checkStateVector(sv)
  } catch {
    throw new SyncError('malformed', 'HELLO carries a malformed state vector')
  }
  return { controllerId, maxDelta, sv }
}

function readId (frame: Uint8Array, at: number, what: string): { controllerId: string, end: number } {
  try {
    return readControllerId(frame, at, what)
  } catch (err) {
    throw new SyncError('malformed', (err as Error).message, { cause: err })
  }
}

/** One side of an exchange on an open stream: frames in and out, every wait bounded. */
class Exchange {
  private readonly lp: ReturnType<typeof lpStream>
  private readonly opts: SyncOptions
  /** The stream speaks SYNC_PROTOCOL: deltas may travel compressed, both ways. */
  private readonly deflate: boolean
  bytesSent = 0
  bytesReceived = 0

  constructor (stream: Stream, opts: SyncOptions) {
    this.opts = opts
    this.deflate = stream.protocol === SYNC_PROTOCOL
    // The largest frame is a chunk; the reader may hold a stream window more.
    const maxFrame = Math.max(opts.chunkBytes, 64 * 1024)
    this.lp = lpStream(stream, { maxDataLength: maxFrame, maxBufferSize: maxFrame + READ_SLACK_BYTES })
  }

  async read (extraMs = 0): Promise<Uint8Array> {
    try {
      const frame = (await this.lp.read({ signal: AbortSignal.timeout(this.opts.timeoutMs + extraMs) })).subarray()
      this.bytesReceived += frame.length
      this.opts.onProgress?.()
      return frame
    } catch (err) {
      throw classify(err)
    }
  }

  async write (frame: Uint8Array): Promise<void> {
    try {
      await this.lp.write(frame, { signal: AbortSignal.timeout(this.opts.timeoutMs) })
      this.bytesSent += frame.length
      this.opts.onProgress?.()
    } catch (err) {
      throw classify(err)
    }
  }

  async hello (replica: SyncReplica): Promise<Uint8Array> {
    const sv = replica.stateVector()
    await this.write(hello(this.opts.controllerId, this.opts.maxDeltaBytes, sv))
    return sv
  }

  async readHello (replica: SyncReplica, extraMs = 0): Promise<Hello> {
    const frame = await this.read(extraMs)
    if (frame.length === 1 && frame[0] === BUSY) throw new PeerBusyError()
    const h = readHello(frame, replica)
    this.opts.onPeer?.(h.controllerId)
    return h
  }

  /**
   * Sends `delta` (one update, in the pieces the replica encoded it in), or
   * TOO_LARGE if the peer said it takes less (then throws a size failure).
   */
  async sendDiff (delta: readonly Uint8Array[], peerMax: number): Promise<void> {
    const length = lengthOf(delta)
    if (length > peerMax) {
      const f = new Uint8Array(9)
      f[0] = TOO_LARGE
      const dv = new DataView(f.buffer)
      dv.setUint32(1, Math.min(length, 0xffffffff))
      dv.setUint32(5, peerMax)
      await this.write(f)
      throw new SyncError('too_large', `the delta the peer lacks is ${length} bytes, more than the ${peerMax} it accepts (its max-sync-bytes)`)
    }
    if (this.deflate && length >= SYNC_DEFLATE_MIN_BYTES) {
      const z = await deflatePieces(delta)
      const zLength = lengthOf(z)
      if (zLength < length) {
        const head = new Uint8Array(9)
        head[0] = DEFLATED
        const dv = new DataView(head.buffer)
        dv.setUint32(1, length)
        dv.setUint32(5, zLength)
        await this.write(head)
        await this.writeChunks(z)
        return
      }
    }
    const head = new Uint8Array(5)
    head[0] = DIFF
    new DataView(head.buffer).setUint32(1, length)
    await this.write(head)
    await this.writeChunks(delta)
  }

  /** The bytes `pieces` make up, in frames of chunkBytes (the last one shorter). */
  private async writeChunks (pieces: readonly Uint8Array[]): Promise<void> {
    for (const frame of frames(pieces, this.opts.chunkBytes)) await this.write(frame)
  }

  /** Receives a delta of at most maxDeltaBytes. `extraMs`: the peer may first be busy applying ours. */
  async readDiff (extraMs = 0): Promise<Uint8Array> {
    const head = await this.read(extraMs)
    if (head[0] === TOO_LARGE && head.length === 9) {
      const dv = new DataView(head.buffer, head.byteOffset)
      throw new SyncError('too_large', `the delta this controller lacks is ${dv.getUint32(1)} bytes, more than the ${dv.getUint32(5)} it accepts (max-sync-bytes)`)
    }
    if (head[0] === DEFLATED && this.deflate) return await this.readDeflated(head)
    if (head.length < 1 || head[0] !== DIFF) throw new SyncError('malformed', head[0] === DEFLATED ? `a compressed DIFF on ${SYNC_PROTOCOL_UNCOMPRESSED}` : 'expected a DIFF frame')
    if (head.length !== 5) throw new SyncError('malformed', 'malformed DIFF header')
    const total = new DataView(head.buffer, head.byteOffset).getUint32(1)
    if (total > this.opts.maxDeltaBytes) throw new SyncError('too_large', `the peer announced a ${total}-byte delta, more than the ${this.opts.maxDeltaBytes} accepted (max-sync-bytes)`)
    return await this.readChunks(total, 'DIFF')
  }

  /** A compressed delta: its length and compressed length, then the compressed bytes; inflated to exactly that length. */
  private async readDeflated (head: Uint8Array): Promise<Uint8Array> {
    if (head.length !== 9) throw new SyncError('malformed', 'malformed DEFLATED header')
    const dv = new DataView(head.buffer, head.byteOffset)
    const total = dv.getUint32(1)
    const compressed = dv.getUint32(5)
    if (total > this.opts.maxDeltaBytes) throw new SyncError('too_large', `the peer announced a ${total}-byte delta, more than the ${this.opts.maxDeltaBytes} accepted (max-sync-bytes)`)
    if (compressed === 0 || compressed >= total) throw new SyncError('malformed', `a ${total}-byte delta compressed to ${compressed} bytes`)
    const z = await this.readChunks(compressed, 'DEFLATED')
    let out: Uint8Array
    try {
      // Never more than announced: a small message must not inflate into a large allocation. One
      // output chunk with room to spare: zlib's default (16 KiB) made ~2,000 pieces to concatenate,
      // and a chunk of exactly the announced size, once full, made zlib allocate a second one.
      out = await inflateRaw(z, { maxOutputLength: total, chunkSize: total + 64 })
    } catch (err) {
      throw new SyncError('malformed', `the compressed delta does not inflate to its announced ${total} bytes: ${(err as Error).message}`, { cause: err })
    }
    if (out.length !== total) throw new SyncError('malformed', `the compressed delta inflates to ${out.length} bytes, not the announced ${total}`)
    return out
  }

  /** Reads chunks into one buffer of exactly `total` bytes. */
  private async readChunks (total: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(total)
    let got = 0
    while (got < total) {
      const chunk = await this.read()
      if (chunk.length === 0 || got + chunk.length > total) throw new SyncError('malformed', `${what} chunk overruns the announced ${total} bytes`)
      out.set(chunk, got)
      got += chunk.length
    }
    return out
  }
}

function lengthOf (pieces: readonly Uint8Array[]): number {
  let n = 0
  for (const p of pieces) n += p.length
  return n
}

/**
 * The bytes `pieces` make up, cut into frames of `size` bytes, the last one
 * shorter: where the pieces were one buffer cut every `size` bytes. A frame
 * within one piece is a view of it; one across pieces' edges is copied.
 */
export function * frames (pieces: readonly Uint8Array[], size: number): Generator<Uint8Array> {
  let frame: Uint8Array | null = null
  let fill = 0
  for (const piece of pieces) {
    let at = 0
    while (at < piece.length) {
      if (fill === 0 && piece.length - at >= size) {
        yield piece.subarray(at, at + size)
        at += size
        continue
      }
      frame ??= new Uint8Array(size)
      const n = Math.min(size - fill, piece.length - at)
      frame.set(piece.subarray(at, at + n), fill)
      fill += n
      at += n
      if (fill === size) {
        yield frame
        frame = null
        fill = 0
      }
    }
  }
  if (frame != null && fill > 0) yield frame.subarray(0, fill)
}

/** Output buffer of the delta's compression: ~1.3 MB come out of 32 MB, in a few pieces. */
const DEFLATE_OUT_BYTES = 256 * 1024

/**
 * Raw DEFLATE (level 1, on libuv's thread pool) of the bytes `pieces` make
 * up, as one stream fed piece by piece: the delta is never joined into one
 * buffer. Returns the compressed bytes in pieces.
 */
async function deflatePieces (pieces: readonly Uint8Array[]): Promise<Buffer[]> {
  const out: Buffer[] = []
  await pipeline(Readable.from(pieces, { objectMode: false }), createDeflateRaw({ level: 1, chunkSize: DEFLATE_OUT_BYTES }), async (compressed: AsyncIterable<Buffer>) => {
    for await (const z of compressed) out.push(z)
  })
  return out
}

/** What an error thrown mid-exchange means, as a SyncError (PeerBusyError passes through). */
export function classify (err: unknown): Error {
  if (err instanceof SyncError || err instanceof PeerBusyError) return err
  const e = err as Error
  const name = e?.name ?? ''
  if (name === 'TimeoutError' || name === 'AbortError') return new SyncError('timeout', 'no progress within the sync timeout', { cause: err })
  if (name === 'InvalidDataLengthError' || name === 'StreamBufferError') return new SyncError('too_large', e.message, { cause: err })
  if (name === 'DecodeError' || name === 'InvalidMessageLengthError' || name === 'InvalidDataLengthLengthError') return new SyncError('malformed', e.message, { cause: err })
  if (name === 'InvalidStateError' || name === 'MissingDependencyError') return new SyncError('rejected', e.message, { cause: err })
  if (/EOF|reset|closed|abort|StreamState/i.test(`${name} ${e?.message ?? ''}`)) return new SyncError('closed', e.message, { cause: err })
  return new SyncError('internal', e?.message ?? String(err), { cause: err })
}

const svEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((v, i) => v === b[i])

/** Applies a peer's delta; a refusal is a SyncError('rejected'). */
async function applyDelta (replica: SyncReplica, delta: Uint8Array, opts: SyncOptions): Promise<void> {
  opts.onApplying?.(true)
  try {
    if (replica.applyDelta != null) await replica.applyDelta(delta)
    else replica.apply(delta)
  } catch (err) {
    throw new SyncError('rejected', `the peer's delta was refused: ${(err as Error).message}`, { cause: err })
  } finally {
    opts.onApplying?.(false)
  }
}

/** How long (ms) a peer may take to apply `bytes` we sent before it answers. */
const applyAllowance = (bytes: number, opts: SyncOptions): number => Math.ceil(bytes / (1024 * 1024) * opts.applyMsPerMiB)

/** Runs the initiator side on an opened stream. */
export async function syncInitiator (stream: Stream, replica: SyncReplica, opts: SyncOptions): Promise<SyncResult> {
  const x = new Exchange(stream, opts)
  const t0 = performance.now()
  const mySv = await x.hello(replica)
  let theirs: Hello
  try {
    theirs = await x.readHello(replica)
  } catch (err) {
    if (err instanceof PeerBusyError) await stream.close().catch(() => {})
    throw err
  }
  const incoming = await x.readDiff()
  const t1 = performance.now()
  await applyDelta(replica, incoming, opts)
  const t2 = performance.now()
  const delta = replica.diff(theirs.sv)
  const t3 = performance.now()
  await x.sendDiff(delta, theirs.maxDelta)
  const phases = { encodeMs: t3 - t2, sendMs: performance.now() - t3, receiveMs: t1 - t0, applyMs: t2 - t1 }
  await stream.close({ signal: AbortSignal.timeout(opts.timeoutMs) }).catch(() => {})
  return { peerController: theirs.controllerId, wasInSync: svEqual(mySv, theirs.sv), bytesSent: x.bytesSent, bytesReceived: incoming.length, phases }
}

/** Runs the responder side on an incoming stream. */
export async function syncResponder (stream: Stream, replica: SyncReplica, opts: SyncOptions): Promise<SyncResult> {
  const x = new Exchange(stream, opts)
  const theirs = await x.readHello(replica)
  const t0 = performance.now()
  const mySv = await x.hello(replica)
  const delta = replica.diff(theirs.sv)
  const t1 = performance.now()
  await x.sendDiff(delta, theirs.maxDelta)
  const t2 = performance.now()
  // The initiator checks and applies what we sent before it answers.
  const incoming = await x.readDiff(applyAllowance(lengthOf(delta), opts))
  const t3 = performance.now()
  await applyDelta(replica, incoming, opts)
  const phases = { encodeMs: t1 - t0, sendMs: t2 - t1, receiveMs: t3 - t2, applyMs: performance.now() - t3 }
  await stream.close({ signal: AbortSignal.timeout(opts.timeoutMs) }).catch(() => {})
  return { peerController: theirs.controllerId, wasInSync: svEqual(mySv, theirs.sv), bytesSent: x.bytesSent, bytesReceived: incoming.length, phases }
}

/** Answers an exchange this controller cannot take now (it is in another one). */
export async function refuseSync (stream: Stream, replica: SyncReplica, opts: SyncOptions): Promise<void> {
  const x = new Exchange(stream, opts)
  await x.readHello(replica)
  await x.write(Uint8Array.of(BUSY))
  await stream.close({ signal: AbortSignal.timeout(opts.timeoutMs) }).catch(() => {})
}

export { DecodeError }
