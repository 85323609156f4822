/**
 * One way to mark an OpenTelemetry span failed, shared by the agent, the
 * CLI and the mesh (only `@opentelemetry/api`: a no-op without an SDK).
 */
import { SpanStatusCode, type Span } from '@opentelemetry/api'

/** Records `err` on `span` and sets its status to ERROR with the error's message. */
export function failSpan (span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err))
  span.recordException(e)
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message })
}
