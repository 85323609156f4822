/**
 * What travels on the gossip topics, in a small versioned binary envelope:
 *
 *   0xCA 0x03 <kind:u8> <idLen:u8> <controller id, utf8> <payload>
 *
 * kinds: 1 = a registry update (payload: replica update bytes), 2 = a
 * message of a subscribed topic (the liveness topic's digests: membership/
 * owns their payload), 3 = a sync hint ("I changed more than fits a
 * message: pull from me", empty payload).
 * Decoding checks every byte it reads; anything else is a DecodeError.
 */
import { CONTROLLER_ID } from '../wire/capability.ts'

export const MAGIC = 0xca
/**
 * The wire format: 2 = entries stored as JSON text, digests introduce peers (capmesh 0.2);
 * 3 = entries carry the identity that registered them, deltas are chunked (capmesh 0.3).
 * Controllers of different formats do not see each other's messages (topics and the sync
 * protocol carry the number too).
 */
export const VERSION = 3

export const Kind = { update: 1, message: 2, hint: 3 } as const
export type Kind = typeof Kind[keyof typeof Kind]

export interface Envelope {
  kind: Kind
  controllerId: string
  payload: Uint8Array
}

export class DecodeError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DecodeError'
  }
}

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

/**
 * A controller id as a wire field: one length byte, then UTF-8. Shared by the
 * gossip envelope and the sync protocol's HELLO frame.
 */
export function writeControllerId (out: Uint8Array, offset: number, id: Uint8Array): number {
  out[offset] = id.length
  out.set(id, offset + 1)
  return offset + 1 + id.length
}

/** Reads the field written by writeControllerId at `offset`; returns the id and where the rest starts. */
export function readControllerId (data: Uint8Array, offset: number, what: string): { controllerId: string, end: number } {
  if (offset >= data.length) throw new DecodeError(`${what}: missing controller id`)
  const len = data[offset]
  const end = offset + 1 + len
  if (end > data.length) throw new DecodeError(`${what}: truncated controller id`)
  let controllerId: string
  try {
    controllerId = dec.decode(data.subarray(offset + 1, end))
  } catch {
    throw new DecodeError(`${what}: controller id is not utf-8`)
  }
  if (!CONTROLLER_ID.test(controllerId)) throw new DecodeError(`${what}: invalid controller id`)
  return { controllerId, end }
}

export function encodeEnvelope (e: Envelope): Uint8Array {
  const id = enc.encode(e.controllerId)
  const out = new Uint8Array(4 + id.length + e.payload.length)
  out[0] = MAGIC
  out[1] = VERSION
  out[2] = e.kind
  out.set(e.payload, writeControllerId(out, 3, id))
  return out
}

export function decodeEnvelope (data: Uint8Array, maxBytes: number): Envelope {
  if (data.length > maxBytes) throw new DecodeError(`message of ${data.length} bytes exceeds ${maxBytes}`)
  if (data.length < 4) throw new DecodeError('message too short')
  if (data[0] !== MAGIC) throw new DecodeError('not a capmesh envelope (bad magic)')
  if (data[1] !== VERSION) throw new DecodeError(`unsupported envelope version ${data[1]}`)
  const kind = data[2]
  if (kind !== Kind.update && kind !== Kind.message && kind !== Kind.hint) throw new DecodeError(`unknown kind ${kind}`)
  const { controllerId, end } = readControllerId(data, 3, 'envelope')
  return { kind, controllerId, payload: data.subarray(end) }
}
