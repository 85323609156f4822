/**
 * A minimal OTLP/HTTP receiver for tests and benchmarks: an HTTPS server
 * (the certificate it is given, e.g. the mesh CA's server certificate) that
 * accepts `POST /v1/traces` with JSON bodies (what
 * @opentelemetry/exporter-trace-otlp-http sends) and answers 200 `{}`.
 * It counts what it receives and, with `keep`, keeps every span, flattened
 * with its resource's service name and instance id. Listens on 127.0.0.1.
 *
 *   const sink = await otlpSink({ cert, key, keep: true })
 *   // --otlp-endpoint sink.url ... then sink.spans
 *   await sink.close()
 */
import { createServer } from 'node:https'

/** One span as the receiver saw it. */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string | null
  name: string
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer (OTLP's SpanKind). */
  kind: number
  startMs: number
  endMs: number
  attributes: Record<string, unknown>
  links: Array<{ traceId: string, spanId: string }>
  /** service.name of the exporting process. */
  service: string | null
  /** service.instance.id (a controller's id). */
  instance: string | null
}

export interface OtlpSink {
  /** `https://127.0.0.1:<port>`: the base endpoint (the exporter adds /v1/traces). */
  url: string
  /** Spans received (with `keep`). */
  spans: ReceivedSpan[]
  /** Export requests and span count received, bodies' bytes. */
  stats: { requests: number, spans: number, bytes: number, rejected: number }
  close: () => Promise<void>
}

interface AnyValue { stringValue?: string, intValue?: string | number, doubleValue?: number, boolValue?: boolean, arrayValue?: { values?: AnyValue[] } }
interface KeyValue { key: string, value: AnyValue }

function valueOf (v: AnyValue | undefined): unknown {
  if (v == null) return null
  if (v.stringValue !== undefined) return v.stringValue
  if (v.intValue !== undefined) return Number(v.intValue)
  if (v.doubleValue !== undefined) return v.doubleValue
  if (v.boolValue !== undefined) return v.boolValue
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(valueOf)
  return null
}

/** Each span has one `"spanId"` key (links have theirs too; capmesh's counted spans have none). */
const SPAN_ID = Buffer.from('"spanId"')

const attrs = (list: KeyValue[] | undefined): Record<string, unknown> => Object.fromEntries((list ?? []).map(a => [a.key, valueOf(a.value)]))
const nanosToMs = (n: string | number): number => Number(BigInt(n) / 1000n) / 1000

/** Flattens an OTLP JSON ExportTraceServiceRequest. */
export function spansOf (body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = []
  const req = body as { resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }, scopeSpans?: Array<{ spans?: any[] }> }> }
  for (const rs of req.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes)
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId != null && s.parentSpanId !== '' ? s.parentSpanId : null,
          name: s.name,
          kind: s.kind,
          startMs: nanosToMs(s.startTimeUnixNano),
          endMs: nanosToMs(s.endTimeUnixNano),
          attributes: attrs(s.attributes),
          links: (s.links ?? []).map((l: { traceId: string, spanId: string }) => ({ traceId: l.traceId, spanId: l.spanId })),
          service: (resource['service.name'] as string | undefined) ?? null,
          instance: (resource['service.instance.id'] as string | undefined) ?? null
        })
      }
    }
  }
  return out
}

export async function otlpSink (init: { cert: string, key: string, keep?: boolean }): Promise<OtlpSink> {
  const spans: ReceivedSpan[] = []
  const stats = { requests: 0, spans: 0, bytes: 0, rejected: 0 }
  const server = createServer({ cert: init.cert, key: init.key }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const json = String(req.headers['content-type'] ?? '').includes('json')
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !json) {
        stats.rejected++
        res.writeHead(req.url === '/v1/traces' ? 415 : 404).end()
        return
      }
      stats.requests++
      stats.bytes += body.length
      if (init.keep === true) {
        let got: ReceivedSpan[]
        try {
          got = spansOf(JSON.parse(body.toString('utf8')))
        } catch {
          stats.rejected++
          res.writeHead(400).end()
          return
        }
        stats.spans += got.length
        spans.push(...got)
      } else {
        // A benchmark's sink: count spans without parsing (its CPU is the measured process's).
        for (let at = body.indexOf(SPAN_ID); at >= 0; at = body.indexOf(SPAN_ID, at + SPAN_ID.length)) stats.spans++
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    url: `https://127.0.0.1:${port}`,
    spans,
    stats,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
}
