/**
 * How gossip keeps a write's trace (gossip/tracing.ts), with the real SDK
 * recording into memory: the writer captures the sampled context active
 * during the write; an apply is a child span of each carried context, and
 * what is recorded during it reaches each; an anti-entropy apply is a span
 * only when it changed something, linked to the writes heard of but not
 * applied.
 */
import { ROOT_CONTEXT, context, trace, type Tracer } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { MAX_GOSSIP_TRACE_CONTEXTS, PENDING_SYNC_LINK_TTL_MS } from '../../../src/constants.ts'
import type { TraceContext } from '../../../src/gossip/envelope.ts'
import { PendingLinks, tracedApply, tracedSyncApply, WriteTraces } from '../../../src/gossip/tracing.ts'

const exporter = new InMemorySpanExporter()
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })
const tracer: Tracer = provider.getTracer('test')
const manager = new AsyncLocalStorageContextManager()

beforeAll(() => { context.setGlobalContextManager(manager.enable()) })
afterAll(async () => {
  context.disable()
  await provider.shutdown()
})
beforeEach(() => { exporter.reset() })

const tc = (i: number): TraceContext => ({ traceId: (i + 1).toString(16).padStart(32, '0'), spanId: (i + 1).toString(16).padStart(16, '0'), traceFlags: 1 })
const info = { controllerId: 'b', from: 'a', topic: 'capmesh/registry/3', bytes: 42 }

describe('WriteTraces (the writer)', () => {
  it('keeps the sampled span context active during each write, once each, up to the envelope\'s limit', () => {
    const w = new WriteTraces()
    w.captureActive() // no active span: nothing
    const span = tracer.startSpan('register')
    context.with(trace.setSpan(ROOT_CONTEXT, span), () => {
      w.captureActive()
      w.captureActive() // the same write's span twice: once
    })
    const unsampled = trace.setSpanContext(ROOT_CONTEXT, { ...tc(7), traceFlags: 0 })
    context.with(unsampled, () => { w.captureActive() })
    expect(w.take()).toEqual([{ traceId: span.spanContext().traceId, spanId: span.spanContext().spanId, traceFlags: 1 }])
    expect(w.take()).toEqual([])
    for (let i = 0; i < MAX_GOSSIP_TRACE_CONTEXTS + 5; i++) context.with(trace.setSpanContext(ROOT_CONTEXT, tc(i)), () => { w.captureActive() })
    expect(w.take()).toHaveLength(MAX_GOSSIP_TRACE_CONTEXTS)
  })
})

describe('tracedApply (a gossip update)', () => {
  it('is a consumer span, child of the write\'s span, with the receiving and sending controller', () => {
    const result = tracedApply(tracer, [tc(0)], info, () => {
      trace.getActiveSpan()?.setAttribute('capmesh.worker_ids', ['w1'])
      return 'applied'
    })
    expect(result).toBe('applied')
    const [s] = exporter.getFinishedSpans()
    expect(s.name).toBe('capmesh.apply')
    expect(s.spanContext().traceId).toBe(tc(0).traceId)
    expect(s.parentSpanContext?.spanId).toBe(tc(0).spanId)
    expect(s.attributes).toMatchObject({ 'capmesh.controller.id': 'b', 'capmesh.from': 'a', 'capmesh.worker_ids': ['w1'], 'capmesh.batch.traces': 1 })
  })

  it('a batch of traced writes is a span in each trace, each given what the apply recorded; a write it causes carries the first', () => {
    let during: string | undefined
    tracedApply(tracer, [tc(0), tc(1), tc(2)], info, () => {
      trace.getActiveSpan()?.setAttribute('capmesh.worker_ids', ['w1', 'w2', 'w3'])
      during = trace.getSpanContext(context.active())?.traceId
    })
    const spans = exporter.getFinishedSpans()
    expect(spans.map(s => s.spanContext().traceId).sort()).toEqual([tc(0), tc(1), tc(2)].map(t => t.traceId).sort())
    for (const s of spans) expect(s.attributes['capmesh.worker_ids']).toEqual(['w1', 'w2', 'w3'])
    expect(during).toBe(tc(0).traceId)
  })

  it('without trace contexts there is no span, and the apply runs in the root context (not the network callback\'s)', () => {
    const stray = trace.setSpanContext(ROOT_CONTEXT, tc(5))
    const active = context.with(stray, () => tracedApply(tracer, [], info, () => trace.getSpanContext(context.active())))
    expect(active).toBeUndefined()
    expect(exporter.getFinishedSpans()).toEqual([])
  })

  it('a failed apply ends its span with an error and throws', () => {
    expect(() => tracedApply(tracer, [tc(0)], info, () => { throw new Error('malformed') })).toThrow('malformed')
    const [s] = exporter.getFinishedSpans()
    expect(s.status.code).toBe(2)
    expect(s.events.map(e => e.name)).toContain('exception')
  })
})

describe('tracedSyncApply (anti-entropy)', () => {
  it('is a span only when the delta changed the registry, linked to the writes heard of but not applied', async () => {
    const pending = new PendingLinks()
    pending.add([tc(0), tc(1)])
    pending.add([tc(1)]) // heard twice: one link
    // An exchange that brought nothing: no span, the links wait.
    expect(await tracedSyncApply(tracer, pending, 'c', 2, async () => false)).toBe(false)
    expect(exporter.getFinishedSpans()).toEqual([])
    expect(pending.size).toBe(2)
    expect(await tracedSyncApply(tracer, pending, 'c', 5000, async () => true)).toBe(true)
    const [s] = exporter.getFinishedSpans()
    expect(s.name).toBe('capmesh.sync.apply')
    expect(s.parentSpanContext).toBeUndefined()
    expect(s.links.map(l => l.context.spanId)).toEqual([tc(0).spanId, tc(1).spanId])
    expect(s.attributes).toMatchObject({ 'capmesh.controller.id': 'c', 'capmesh.update.bytes': 5000, 'capmesh.changed': true })
    expect(pending.size).toBe(0)
  })

  it('with nothing to link to (writes lost whole, in a partition) the span stands alone', async () => {
    await tracedSyncApply(tracer, new PendingLinks(), 'c', 10, async () => true)
    const [s] = exporter.getFinishedSpans()
    expect(s.links).toEqual([])
  })

  it('forgets writes heard of too long ago', () => {
    vi.useFakeTimers({ toFake: ['performance'] })
    try {
      const pending = new PendingLinks()
      pending.add([tc(0)])
      vi.advanceTimersByTime(PENDING_SYNC_LINK_TTL_MS + 1)
      pending.add([tc(1)])
      expect(pending.take().map(l => l.context.spanId)).toEqual([tc(1).spanId])
    } finally {
      vi.useRealTimers()
    }
  })
})
