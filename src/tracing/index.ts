/**
 * tracing — OpenTelemetry for capmesh processes, off unless asked for
 * (`--otlp-endpoint`, or the standard OTEL_* variables). This folder owns
 * the set-up: whether it is on (config.ts, pure), and the SDK (sdk.ts: a
 * TracerProvider with a batch processor, the OTLP/HTTP exporter, the
 * resource, the W3C propagator), loaded only when it is. Everything else
 * uses @opentelemetry/api alone and receives the Tracer it should use: the
 * API's tracing plugin, the mesh's apply spans, the worker agent.
 *
 * @example
 * const tracing = await startTracing({ serviceName: 'capmesh-controller', instanceId: 'a', endpoint: 'https://collector:4318', ca: [meshCa] })
 * // null: off, nothing loaded. Otherwise: tracing.tracer, tracing.propagator; await tracing.shutdown() on stop.
 */
export { samplerSpec, tracesExport, tracesUrl, type SamplerSpec, type TracesExport, type TracingEnv } from './config.ts'
export { startTracing, tracingWanted, type Tracing, type TracingInit } from './start.ts'
