/**
 * Starting tracing for a process part (a controller, the CLI, a demo
 * worker): decide from the flag and the environment (config.ts), and only
 * if it is on, load the SDK (sdk.ts). Off, this returns null having loaded
 * nothing: callers keep @opentelemetry/api's no-op tracer and add no hooks.
 */
import type { TextMapPropagator, Tracer } from '@opentelemetry/api'
import { tracesExport, type TracingEnv } from './config.ts'

export interface TracingInit {
  /** service.name of the spans (OTEL_SERVICE_NAME overrides it). */
  serviceName: string
  /** service.instance.id: the controller id. @default none */
  instanceId?: string
  /** More resource attributes. @default none */
  attributes?: Record<string, string>
  /** An OTLP/HTTP base URL (`--otlp-endpoint`): turns tracing on whatever the environment says. @default from OTEL_* */
  endpoint?: string
  /** PEM CAs an https endpoint may be signed by, besides the system's roots (a controller: its mesh CA). @default none */
  ca?: string[]
  /**
   * Also install the W3C propagator and the provider as the process's
   * globals, so that code using only @opentelemetry/api (the worker agent,
   * the HTTPS client) traces and propagates through them. A controller does
   * not: several may share a process, each with its own provider. @default false
   */
  register?: boolean
  /** Continue with context propagation only (no spans) when no exporter is configured: a CLI run with TRACEPARENT set. @default false */
  contextOnly?: boolean
  /** An export failed (called at most once a minute). @default ignored */
  onExportFailure?: (err: Error, info: { spans: number, failures: number }) => void
  /** The environment to read. @default process.env */
  env?: TracingEnv
}

export interface Tracing {
  /** This part's tracer: spans go to its exporter (a no-op tracer when only propagating context). */
  tracer: Tracer
  /** W3C trace context (`traceparent`, `tracestate`). */
  propagator: TextMapPropagator
  /** Where spans go, for the start-up log; null when only propagating context. */
  exporting: string | null
  /** Exports what is queued and stops. */
  shutdown: () => Promise<void>
  /** Exports what is queued now. */
  forceFlush: () => Promise<void>
}

/**
 * Tracing as the flag and the environment ask for, or null (off: nothing
 * loaded). Throws ConfigError on a bad OTEL_* value or endpoint.
 */
export async function startTracing (init: TracingInit): Promise<Tracing | null> {
  const env = init.env ?? process.env
  const exp = tracesExport(init.endpoint, env)
  if (exp == null && init.contextOnly !== true) return null
  const { createTracing } = await import('./sdk.ts')
  return createTracing(exp, init, env)
}

/** Whether startTracing would export spans (without loading anything). */
export function tracingWanted (endpoint: string | undefined, env: TracingEnv = process.env): boolean {
  return tracesExport(endpoint, env) != null
}
