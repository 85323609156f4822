/**
 * How registry writes keep their traces across the mesh (only when the mesh
 * is given a Tracer; @opentelemetry/api alone, no SDK here).
 *
 * - **Writer**: Replica.onLocalUpdate calls the mesh synchronously inside
 *   the write, so the active context then is the write's (the request's
 *   span, or an apply span when applying a peer's update caused the write).
 *   `WriteTraces` keeps the sampled ones of a tick's batch, and they travel
 *   in the envelope with the merged update (or the sync hint).
 * - **Receiver**: applying a gossip update is one `capmesh.apply` span per
 *   carried context, each a child of its write's span: one trace shows the
 *   registration at its controller and its arrival at every other one.
 *   During the apply the active span is all of them at once (`FanoutSpan`),
 *   so attributes added then (the worker ids) reach each, and a write the
 *   apply causes carries the first one on.
 * - **Anti-entropy** does not know which writes a delta carries (it is the
 *   difference of two states). What it can link to are writes this
 *   controller was told of but could not apply: a gossip update dropped as
 *   out of order, or the writes a sync hint announced. `PendingLinks` keeps
 *   those for a while and the next anti-entropy apply that changes the
 *   registry links to them. Writes lost whole (a partition) cannot be
 *   linked: their apply is a `capmesh.sync.apply` span of its own trace.
 */
import {
  ROOT_CONTEXT, SpanKind, TraceFlags, context, isSpanContextValid, trace,
  type Attributes, type AttributeValue, type Exception, type Link, type Span, type SpanContext, type SpanStatus, type TimeInput, type Tracer
} from '@opentelemetry/api'
import { MAX_GOSSIP_TRACE_CONTEXTS, MAX_PENDING_SYNC_LINKS, PENDING_SYNC_LINK_TTL_MS, SPAN_ATTR } from '../constants.ts'
import type { TraceContext } from './envelope.ts'
import { failSpan } from '../utils/spans.ts'

/** The sampled trace contexts of the local writes of one batch (deduplicated, at most MAX_GOSSIP_TRACE_CONTEXTS). */
export class WriteTraces {
  private list: TraceContext[] = []

  /** Notes the active context's span, if it is valid and sampled. Call synchronously inside the write. */
  captureActive (): void {
    const sc = trace.getSpanContext(context.active())
    if (sc == null || (sc.traceFlags & TraceFlags.SAMPLED) === 0 || !isSpanContextValid(sc)) return
    if (this.list.length >= MAX_GOSSIP_TRACE_CONTEXTS || this.list.some(t => t.spanId === sc.spanId)) return
    this.list.push({ traceId: sc.traceId, spanId: sc.spanId, traceFlags: TraceFlags.SAMPLED })
  }

  /** The batch's contexts; starts a new batch. */
  take (): TraceContext[] {
    const out = this.list
    if (out.length > 0) this.list = []
    return out
  }
}

/** Contexts of writes heard of but not applied, for the next anti-entropy apply to link to. */
export class PendingLinks {
  private list: Array<{ t: TraceContext, at: number }> = []

  add (traces: TraceContext[] | undefined): void {
    if (traces == null || traces.length === 0) return
    const now = performance.now()
    for (const t of traces) {
      if (this.list.some(p => p.t.spanId === t.spanId)) continue
      this.list.push({ t, at: now })
    }
    if (this.list.length > MAX_PENDING_SYNC_LINKS) this.list.splice(0, this.list.length - MAX_PENDING_SYNC_LINKS)
  }

  /** The links still fresh; empties the list. */
  take (): Link[] {
    const since = performance.now() - PENDING_SYNC_LINK_TTL_MS
    const out = this.list.filter(p => p.at >= since).map(p => ({ context: remote(p.t) }))
    this.list = []
    return out
  }

  get size (): number { return this.list.length }
}

const remote = (t: TraceContext): SpanContext => ({ traceId: t.traceId, spanId: t.spanId, traceFlags: t.traceFlags, isRemote: true })

export interface ApplyInfo {
  controllerId: string
  from: string
  topic: string
  bytes: number
}

/**
 * Applies a gossip update under one `capmesh.apply` span per carried trace
 * context (children of the writes' spans). Without any, the apply runs in
 * the root context: it must not join whatever context the network callback
 * happened to run in.
 */
export function tracedApply<T> (tracer: Tracer, traces: TraceContext[] | undefined, info: ApplyInfo, apply: () => T): T {
  if (traces == null || traces.length === 0) return context.with(ROOT_CONTEXT, apply)
  const attributes: Attributes = {
    [SPAN_ATTR.controllerId]: info.controllerId,
    [SPAN_ATTR.from]: info.from,
    [SPAN_ATTR.updateBytes]: info.bytes,
    [SPAN_ATTR.batchTraces]: traces.length,
    'messaging.system': 'gossipsub',
    'messaging.operation.type': 'process',
    'messaging.destination.name': info.topic
  }
  const spans = traces.map(t => tracer.startSpan('capmesh.apply', { kind: SpanKind.CONSUMER, attributes }, trace.setSpanContext(ROOT_CONTEXT, remote(t))))
  const active = spans.length === 1 ? spans[0] : new FanoutSpan(spans)
  try {
    return context.with(trace.setSpan(ROOT_CONTEXT, active), apply)
  } catch (err) {
    failSpan(active, err)
    throw err
  } finally {
    active.end()
  }
}

/**
 * Applies an anti-entropy delta; if it changed the registry (or failed), records a `capmesh.sync.apply` span over it, linked
 * to the pending writes. The span is made after the apply (its start time
 * given), since only then is it known whether the delta brought anything:
 * every exchange carries a delta, most of them nothing new.
 */
export async function tracedSyncApply (tracer: Tracer, pending: PendingLinks, controllerId: string, bytes: number, apply: () => Promise<boolean>): Promise<boolean> {
  const start = Date.now()
  let changed = false
  let error: Error | null = null
  try {
    changed = await context.with(ROOT_CONTEXT, apply)
    return changed
  } catch (err) {
    error = err as Error
    throw err
  } finally {
    // A delta that brought nothing keeps the pending links for a later one (the writes may still be on their way).
    if (changed || error != null) {
      const span = tracer.startSpan('capmesh.sync.apply', {
        kind: SpanKind.CONSUMER,
        startTime: start,
        links: pending.take(),
        attributes: { [SPAN_ATTR.controllerId]: controllerId, [SPAN_ATTR.updateBytes]: bytes, [SPAN_ATTR.changed]: changed }
      }, ROOT_CONTEXT)
      if (error != null) failSpan(span, error)
      span.end()
    }
  }
}

/**
 * Several spans acting as one while an update that carried several traced
 * writes is applied: what is recorded goes to each; its context (what a
 * write made meanwhile carries on) is the first one's.
 */
export class FanoutSpan implements Span {
  private readonly spans: Span[]
  constructor (spans: Span[]) { this.spans = spans }
  spanContext (): SpanContext { return this.spans[0].spanContext() }
  setAttribute (key: string, value: AttributeValue): this { for (const s of this.spans) s.setAttribute(key, value); return this }
  setAttributes (attributes: Attributes): this { for (const s of this.spans) s.setAttributes(attributes); return this }
  addEvent (name: string, attributesOrStartTime?: Attributes | TimeInput, startTime?: TimeInput): this {
    for (const s of this.spans) s.addEvent(name, attributesOrStartTime, startTime)
    return this
  }

  addLink (link: Link): this { for (const s of this.spans) s.addLink(link); return this }
  addLinks (links: Link[]): this { for (const s of this.spans) s.addLinks(links); return this }
  setStatus (status: SpanStatus): this { for (const s of this.spans) s.setStatus(status); return this }
  updateName (name: string): this { for (const s of this.spans) s.updateName(name); return this }
  end (endTime?: TimeInput): void { for (const s of this.spans) s.end(endTime) }
  isRecording (): boolean { return this.spans.some(s => s.isRecording()) }
  recordException (exception: Exception, time?: TimeInput): void { for (const s of this.spans) s.recordException(exception, time) }
}
