/**
 * What travels on the gossip topics, in a small versioned binary envelope:
 *
 *   0xCA 0x02 <kind:u8> <idLen:u8> <controller id, utf8> <payload>
 *
 * kinds: 1 = a registry update (payload: Yjs update bytes), 2 = a liveness
 * digest (payload: JSON, see Digest), 3 = a sync hint ("I changed more than
 * fits a message: pull from me", empty payload).
 * Decoding checks every byte it reads; anything else is a DecodeError.
 */
import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { CONTROLLER_ID } from '../config.ts'

/** Most controller addresses one digest may introduce. */
export const MAX_INTRODUCED_PEERS = 256

export const MAGIC = 0xca
/** 2: registry entries are stored as JSON text, digests introduce peers (capmesh 0.2). */
export const VERSION = 2

export const Kind = { update: 1, digest: 2, hint: 3 } as const
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
  if (kind !== Kind.update && kind !== Kind.digest && kind !== Kind.hint) throw new DecodeError(`unknown kind ${kind}`)
  const { controllerId, end } = readControllerId(data, 3, 'envelope')
  return { kind, controllerId, payload: data.subarray(end) }
}

const StateCode = Type.Union([Type.Literal('u'), Type.Literal('d'), Type.Literal('p')])

/**
 * A controller's periodic word about the workers it owns. Compact on
 * purpose: every owned worker is healthy except those listed in
 * `exceptions` (u = unhealthy, d = draining, p = pending); `loads` lists
 * non-zero in-flight counts.
 */
export const Digest = Type.Object({
  /** Random per process start: a restart is visible as a new epoch. */
  epoch: Type.String({ maxLength: 32 }),
  seq: Type.Integer({ minimum: 0 }),
  /** Workers this controller owns. */
  owned: Type.Integer({ minimum: 0 }),
  exceptions: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), StateCode]), { maxItems: 1_000_000 }),
  loads: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), Type.Integer({ minimum: 0 })]), { maxItems: 1_000_000 }),
  /** Order-independent hash of the sender's live registry entries (hex). */
  registry_hash: Type.String({ maxLength: 64 }),
  /** Whether the sender is in self-preservation. */
  self_preservation: Type.Boolean(),
  /** The sender's libp2p listen addresses, so every controller can dial every other (full mesh). */
  addrs: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 16 })),
  /**
   * An address (with /p2p/<peer id>) of each controller the sender is connected to: a controller
   * that joins through one bootstrap peer learns the whole mesh from its first digest.
   */
  peers: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: MAX_INTRODUCED_PEERS }))
}, { additionalProperties: false })
export type Digest = Static<typeof Digest>

const checkDigest = Compile(Digest)

export function encodeDigest (d: Digest): Uint8Array {
  return enc.encode(JSON.stringify(d))
}

export function decodeDigest (payload: Uint8Array): Digest {
  let json: unknown
  try {
    json = JSON.parse(dec.decode(payload))
  } catch {
    throw new DecodeError('digest is not JSON')
  }
  if (!checkDigest.Check(json)) throw new DecodeError('digest does not match its schema')
  return json
}
