/**
 * Anti-entropy over a libp2p stream protocol (`/capmesh/sync/2.0.0`).
 * Gossip is lossy while a partition lasts; this is what makes the mesh
 * converge anyway. Four length-prefixed frames:
 *
 *   initiator → responder  HELLO(controller id, state vector)
 *   responder → initiator  HELLO(controller id, state vector)
 *   responder → initiator  DIFF(what the initiator lacks)
 *   initiator → responder  DIFF(what the responder lacks)
 *
 * Both sides validate a DIFF before it touches the document (Registry.
 * applyUpdate); a malformed frame aborts the stream and changes nothing.
 *
 * A controller takes part in one exchange at a time. One that is already
 * busy answers a HELLO with BUSY instead (never waits, so two controllers
 * dialling each other cannot deadlock): exchanges that overlap would each
 * carry a delta computed against a state vector the other is about to
 * make stale, and after a heal every copy of the same large delta costs a
 * full decode and validation.
 */
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import * as Y from 'yjs'
import { Origin, type Registry } from '../registry/index.ts'
import { DecodeError, readControllerId, writeControllerId } from './envelope.ts'

export const SYNC_PROTOCOL = '/capmesh/sync/2.0.0'

const HELLO = 1
const DIFF = 2
const BUSY = 3

/** The peer is in another exchange; try again shortly. */
export class PeerBusyError extends Error {
  constructor () {
    super('the peer is busy with another sync exchange')
    this.name = 'PeerBusyError'
  }
}

export interface SyncResult {
  /** The other side's controller id. */
  peerController: string
  /** State vectors were equal before the exchange. */
  wasInSync: boolean
  bytesSent: number
  bytesReceived: number
}

export interface SyncOptions {
  /** Largest frame accepted (bytes). */
  maxFrameBytes: number
  signal: AbortSignal
}

const enc = new TextEncoder()

function hello (controllerId: string, sv: Uint8Array): Uint8Array {
  const id = enc.encode(controllerId)
  const out = new Uint8Array(2 + id.length + sv.length)
  out[0] = HELLO
  out.set(sv, writeControllerId(out, 1, id))
  return out
}

function readHello (frame: Uint8Array): { controllerId: string, sv: Uint8Array } {
  if (frame.length < 2 || frame[0] !== HELLO) throw new DecodeError('expected a HELLO frame')
  const { controllerId, end } = readControllerId(frame, 1, 'HELLO')
  const sv = frame.subarray(end)
  try {
    Y.decodeStateVector(sv)
  } catch {
    throw new DecodeError('HELLO carries a malformed state vector')
  }
  return { controllerId, sv }
}

function diff (update: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + update.length)
  out[0] = DIFF
  out.set(update, 1)
  return out
}

function readDiff (frame: Uint8Array): Uint8Array {
  if (frame.length < 1 || frame[0] !== DIFF) throw new DecodeError('expected a DIFF frame')
  return frame.subarray(1)
}

const svEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((v, i) => v === b[i])

/** Runs the initiator side on an opened stream. */
export async function syncInitiator (stream: Stream, registry: Registry, opts: SyncOptions): Promise<SyncResult> {
  const lp = lpStream(stream, { maxDataLength: opts.maxFrameBytes })
  const o = { signal: opts.signal }
  const mySv = registry.encodeStateVector()
  const h = hello(registry.controllerId, mySv)
  await lp.write(h, o)
  const first = (await lp.read(o)).subarray()
  if (first.length === 1 && first[0] === BUSY) {
    await stream.close(o)
    throw new PeerBusyError()
  }
  const theirs = readHello(first)
  const incoming = readDiff((await lp.read(o)).subarray())
  registry.applyUpdate(incoming, Origin.remote)
  const out = diff(registry.encodeDiff(theirs.sv))
  await lp.write(out, o)
  await stream.close(o)
  return { peerController: theirs.controllerId, wasInSync: svEqual(mySv, theirs.sv), bytesSent: h.length + out.length, bytesReceived: incoming.length }
}

/** Runs the responder side on an incoming stream. */
export async function syncResponder (stream: Stream, registry: Registry, opts: SyncOptions): Promise<SyncResult> {
  const lp = lpStream(stream, { maxDataLength: opts.maxFrameBytes })
  const o = { signal: opts.signal }
  const theirs = readHello((await lp.read(o)).subarray())
  const mySv = registry.encodeStateVector()
  const h = hello(registry.controllerId, mySv)
  const out = diff(registry.encodeDiff(theirs.sv))
  await lp.writeV([h, out], o)
  const incoming = readDiff((await lp.read(o)).subarray())
  registry.applyUpdate(incoming, Origin.remote)
  await stream.close(o)
  return { peerController: theirs.controllerId, wasInSync: svEqual(mySv, theirs.sv), bytesSent: h.length + out.length, bytesReceived: incoming.length }
}

/** Answers an exchange this controller cannot take now (it is in another one). */
export async function refuseSync (stream: Stream, opts: SyncOptions): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: opts.maxFrameBytes })
  readHello((await lp.read({ signal: opts.signal })).subarray())
  await lp.write(Uint8Array.of(BUSY), { signal: opts.signal })
  await stream.close({ signal: opts.signal })
}
