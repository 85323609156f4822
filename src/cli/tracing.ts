/**
 * Tracing of `capmesh` commands that call controllers (route, status,
 * state export and import) and of `capmesh worker`, through tracing/.
 *
 * - With OTEL_* asking for an exporter (tracing/config.ts), a command is a
 *   span of service `capmesh-cli` and its calls carry it: the controllers'
 *   spans are its children.
 * - With `TRACEPARENT` (and `TRACESTATE`) set, the convention for handing a
 *   trace to a child process, the command continues that trace: its span is
 *   a child of it, or, without an exporter, its calls carry it unchanged.
 * - Neither: nothing is loaded, as before.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, propagation } from '@opentelemetry/api'
import { TRACE_SERVICE_CLI, TRACE_SERVICE_WORKER } from '../constants.ts'
import { startTracing, type Tracing, type TracingEnv } from '../tracing/index.ts'

/** Runs a command's action as described above. */
export function traced<A extends unknown[]> (command: string, action: (...args: A) => Promise<void>, env: TracingEnv = process.env): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const parentGiven = env.TRACEPARENT != null && env.TRACEPARENT.trim() !== ''
    const tracing = await startTracing({ serviceName: TRACE_SERVICE_CLI, register: true, contextOnly: parentGiven, env })
    if (tracing == null) {
      await action(...args)
      return
    }
    // An unparseable TRACEPARENT is ignored: the command starts a trace of its own.
    const parent = parentGiven ? propagation.extract(ROOT_CONTEXT, { traceparent: env.TRACEPARENT, tracestate: env.TRACESTATE }) : ROOT_CONTEXT
    try {
      if (tracing.exporting == null) {
        await context.with(parent, () => action(...args))
        return
      }
      await tracing.tracer.startActiveSpan(`capmesh ${command}`, { kind: SpanKind.CLIENT, attributes: { 'process.command_args': [command] } }, parent, async span => {
        try {
          await action(...args)
          if (process.exitCode != null && process.exitCode !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: `exit code ${process.exitCode}` })
        } catch (err) {
          span.recordException(err as Error)
          span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
          throw err
        } finally {
          span.end()
        }
      })
    } finally {
      await tracing.shutdown().catch(() => {})
    }
  }
}

/** Tracing for `capmesh worker` (its agent's spans), registered for the whole process; null when off. Shut it down on stop. */
export async function workerTracing (env: TracingEnv = process.env): Promise<Tracing | null> {
  return await startTracing({ serviceName: TRACE_SERVICE_WORKER, register: true, env })
}
