/**
 * What travels on the gossip topics, in a small versioned binary envelope:
 *
 *   0xCA 0x03 <kind:u8> <idLen:u8> <controller id, utf8> [traces] <payload>
 *
 * kinds: 1 = a registry update (payload: replica update bytes), 2 = a
 * message of a subscribed topic (the liveness topic's digests: membership/
 * owns their payload), 3 = a sync hint ("I changed more than fits a
 * message: pull from me", empty payload).
 *
 * `traces`, in kinds 1 and 3 only (never in 2), is the trace context of the
 * writes the message carries, so that applying them elsewhere joins their
 * traces:
 *
 *   <n:u8> n × ( <trace id: 16 bytes> <span id: 8 bytes> <flags:u8> )
 *
 * the fields of a W3C `traceparent` (version 00) in binary; n = 0 when no
 * write was traced (one byte), at most MAX_GOSSIP_TRACE_CONTEXTS. A trace or
 * span id of all zeros, or flags other than 0 or 1, is malformed.
 * `tracestate` does not travel.
 *
 * Decoding checks every byte it reads; anything else is a DecodeError.
 */
import { MAX_GOSSIP_TRACE_CONTEXTS } from '../constants.ts'
import { CONTROLLER_ID } from '../wire/capability.ts'

export const MAGIC = 0xca
/**
 * The wire format: 2 = entries stored as JSON text, digests introduce peers (capmesh 0.2);
 * 3 = entries carry the identity that registered them, deltas are chunked, updates and hints
 * carry the trace context of their writes (capmesh 0.3).
 * Controllers of different formats do not see each other's messages (topics and the sync
 * protocol carry the number too).
 */
export const VERSION = 3

export const Kind = { update: 1, message: 2, hint: 3 } as const
export type Kind = typeof Kind[keyof typeof Kind]

/** A write's trace context as the envelope carries it: a W3C traceparent's fields (hex ids, as @opentelemetry/api's SpanContext has them). */
export interface TraceContext {
  /** 32 lower-case hex digits, not all zero. */
  traceId: string
  /** 16 lower-case hex digits, not all zero. */
  spanId: string
  /** 1 = sampled, 0 = not. */
  traceFlags: number
}

/** Bytes of one trace context in the envelope. */
export const TRACE_CONTEXT_BYTES = 25

export interface Envelope {
  kind: Kind
  controllerId: string
  payload: Uint8Array
  /** Trace contexts of the writes carried (kinds update and hint only). @default none */
  traces?: TraceContext[]
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

const HEX_TRACE_ID = /^[0-9a-f]{32}$/
const HEX_SPAN_ID = /^[0-9a-f]{16}$/
const ZERO_TRACE_ID = '0'.repeat(32)
const ZERO_SPAN_ID = '0'.repeat(16)

/** Whether a kind carries the trace-context list. */
const traced = (kind: number): boolean => kind === Kind.update || kind === Kind.hint

/** Throws unless `t` is what the envelope can carry (a programming error: the mesh sends only valid contexts). */
function checkTrace (t: TraceContext): void {
  if (!HEX_TRACE_ID.test(t.traceId) || t.traceId === ZERO_TRACE_ID) throw new TypeError(`not a trace id: ${t.traceId}`)
  if (!HEX_SPAN_ID.test(t.spanId) || t.spanId === ZERO_SPAN_ID) throw new TypeError(`not a span id: ${t.spanId}`)
  if (t.traceFlags !== 0 && t.traceFlags !== 1) throw new TypeError(`trace flags must be 0 or 1, got ${t.traceFlags}`)
}

export function encodeEnvelope (e: Envelope): Uint8Array {
  const id = enc.encode(e.controllerId)
  const traces = e.traces ?? []
  if (!traced(e.kind) && traces.length > 0) throw new TypeError(`kind ${e.kind} carries no trace contexts`)
  if (traces.length > MAX_GOSSIP_TRACE_CONTEXTS) throw new TypeError(`at most ${MAX_GOSSIP_TRACE_CONTEXTS} trace contexts, got ${traces.length}`)
  const traceBytes = traced(e.kind) ? 1 + traces.length * TRACE_CONTEXT_BYTES : 0
  const out = new Uint8Array(4 + id.length + traceBytes + e.payload.length)
  out[0] = MAGIC
  out[1] = VERSION
  out[2] = e.kind
  let at = writeControllerId(out, 3, id)
  if (traced(e.kind)) {
    out[at++] = traces.length
    for (const t of traces) {
      checkTrace(t)
      out.set(Buffer.from(t.traceId, 'hex'), at)
      out.set(Buffer.from(t.spanId, 'hex'), at + 16)
      out[at + 24] = t.traceFlags
      at += TRACE_CONTEXT_BYTES
    }
  }
  out.set(e.payload, at)
  return out
}

const allZero = (b: Uint8Array): boolean => b.every(x => x === 0)

/** Reads the trace-context list at `offset`; returns the contexts and where the payload starts. */
function readTraces (data: Uint8Array, offset: number): { traces: TraceContext[], end: number } {
  if (offset >= data.length) throw new DecodeError('envelope: missing trace-context count')
  const n = data[offset]
  if (n > MAX_GOSSIP_TRACE_CONTEXTS) throw new DecodeError(`envelope: ${n} trace contexts, more than ${MAX_GOSSIP_TRACE_CONTEXTS}`)
  const end = offset + 1 + n * TRACE_CONTEXT_BYTES
  if (end > data.length) throw new DecodeError('envelope: truncated trace contexts')
  const traces: TraceContext[] = []
  for (let at = offset + 1; at < end; at += TRACE_CONTEXT_BYTES) {
    const traceId = data.subarray(at, at + 16)
    const spanId = data.subarray(at + 16, at + 24)
    const traceFlags = data[at + 24]
    if (allZero(traceId)) throw new DecodeError('envelope: a trace context with an all-zero trace id')
    if (allZero(spanId)) throw new DecodeError('envelope: a trace context with an all-zero span id')
    if (traceFlags !== 0 && traceFlags !== 1) throw new DecodeError(`envelope: trace flags ${traceFlags} (0 or 1)`)
    traces.push({ traceId: Buffer.from(traceId).toString('hex'), spanId: Buffer.from(spanId).toString('hex'), traceFlags })
  }
  return { traces, end }
}

export function decodeEnvelope (data: Uint8Array, maxBytes: number): Envelope {
  if (data.length > maxBytes) throw new DecodeError(`message of ${data.length} bytes exceeds ${maxBytes}`)
  if (data.length < 4) throw new DecodeError('message too short')
  if (data[0] !== MAGIC) throw new DecodeError('not a capmesh envelope (bad magic)')
  if (data[1] !== VERSION) throw new DecodeError(`unsupported envelope version ${data[1]}`)
  const kind = data[2]
  if (kind !== Kind.update && kind !== Kind.message && kind !== Kind.hint) throw new DecodeError(`unknown kind ${kind}`)
  const { controllerId, end } = readControllerId(data, 3, 'envelope')
  if (!traced(kind)) return { kind, controllerId, payload: data.subarray(end) }
  const { traces, end: payloadAt } = readTraces(data, end)
  if (kind === Kind.hint && payloadAt !== data.length) throw new DecodeError('envelope: a sync hint carries no payload')
  return { kind, controllerId, payload: data.subarray(payloadAt), traces }
}
