/**
 * The gossip envelope's trace-context field: what encodes decodes back, and
 * decoding stays strict (every malformed field is a DecodeError).
 */
import { describe, expect, it } from 'vitest'
import { MAX_GOSSIP_TRACE_CONTEXTS } from '../../../src/constants.ts'
import { decodeEnvelope, DecodeError, encodeEnvelope, Kind, TRACE_CONTEXT_BYTES, VERSION, type TraceContext } from '../../../src/gossip/envelope.ts'

const MAX = 1024 * 1024
const payload = Uint8Array.of(1, 2, 3, 4)
const ctx = (i: number, flags = 1): TraceContext => ({ traceId: (i + 1).toString(16).padStart(32, 'a'), spanId: (i + 1).toString(16).padStart(16, 'b'), traceFlags: flags })
const id = [...new TextEncoder().encode('a')]

/** `0xCA 0x03 kind 1 'a'` followed by `rest`. */
const raw = (kind: number, rest: number[]): Uint8Array => Uint8Array.from([0xca, VERSION, kind, 1, ...id, ...rest])
const context = (traceByte: number, spanByte: number, flags: number): number[] => [...new Array(16).fill(traceByte), ...new Array(8).fill(spanByte), flags]

function decodeError (data: Uint8Array): DecodeError {
  try {
    decodeEnvelope(data, MAX)
  } catch (err) {
    expect((err as Error).name).toBe('DecodeError')
    return err as DecodeError
  }
  throw new Error('expected a DecodeError')
}

describe('envelope trace contexts', () => {
  it.each([0, 1, 3, MAX_GOSSIP_TRACE_CONTEXTS])('an update with %i trace contexts decodes to what was encoded', n => {
    const traces = Array.from({ length: n }, (_, i) => ctx(i, i % 2))
    const data = encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload, traces })
    expect(data.length).toBe(4 + 1 + 1 + n * TRACE_CONTEXT_BYTES + payload.length)
    expect(decodeEnvelope(data, MAX)).toEqual({ kind: Kind.update, controllerId: 'a', payload, traces })
  })

  it('an untraced update costs one byte (n = 0); a hint carries contexts and no payload; a message has no field', () => {
    expect(encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload })).toEqual(raw(Kind.update, [0, ...payload]))
    const hint = encodeEnvelope({ kind: Kind.hint, controllerId: 'a', payload: new Uint8Array(0), traces: [ctx(0)] })
    expect(decodeEnvelope(hint, MAX)).toMatchObject({ kind: Kind.hint, traces: [ctx(0)], payload: new Uint8Array(0) })
    expect(encodeEnvelope({ kind: Kind.message, controllerId: 'a', payload })).toEqual(raw(Kind.message, [...payload]))
    expect(decodeEnvelope(raw(Kind.message, [...payload]), MAX)).toEqual({ kind: Kind.message, controllerId: 'a', payload })
  })

  it.each([
    ['a missing count', raw(Kind.update, [])],
    ['more contexts than allowed', raw(Kind.update, [MAX_GOSSIP_TRACE_CONTEXTS + 1, ...new Array((MAX_GOSSIP_TRACE_CONTEXTS + 1) * TRACE_CONTEXT_BYTES).fill(1)])],
    ['a truncated context', raw(Kind.update, [1, ...context(1, 1, 1).slice(0, 24)])],
    ['a count larger than what follows', raw(Kind.update, [2, ...context(1, 1, 1)])],
    ['an all-zero trace id', raw(Kind.update, [1, ...context(0, 1, 1), ...payload])],
    ['an all-zero span id', raw(Kind.update, [1, ...context(1, 0, 1), ...payload])],
    ['flags other than 0 or 1', raw(Kind.update, [1, ...context(1, 1, 2), ...payload])],
    ['a hint with a payload', raw(Kind.hint, [0, 9])],
    ['a hint without its count', raw(Kind.hint, [])]
  ])('rejects %s', (_what, data) => {
    decodeError(data)
  })

  it('refuses to encode what it could not decode', () => {
    expect(() => encodeEnvelope({ kind: Kind.message, controllerId: 'a', payload, traces: [ctx(0)] })).toThrow(TypeError)
    expect(() => encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload, traces: Array.from({ length: MAX_GOSSIP_TRACE_CONTEXTS + 1 }, (_, i) => ctx(i)) })).toThrow(TypeError)
    expect(() => encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload, traces: [{ ...ctx(0), traceId: '0'.repeat(32) }] })).toThrow(TypeError)
    expect(() => encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload, traces: [{ ...ctx(0), spanId: 'XYZ' }] })).toThrow(TypeError)
    expect(() => encodeEnvelope({ kind: Kind.update, controllerId: 'a', payload, traces: [{ ...ctx(0), traceFlags: 3 }] })).toThrow(TypeError)
  })
})
