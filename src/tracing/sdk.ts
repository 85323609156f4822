/**
 * The OpenTelemetry SDK side of tracing, loaded (by start.ts, with a
 * dynamic import) only when tracing is on: a TracerProvider with a batch
 * span processor, the OTLP/HTTP exporter (JSON bodies) or the console one,
 * a resource naming the service and the instance, and the W3C trace-context
 * propagator. With tracing off none of this is ever loaded.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { rootCertificates } from 'node:tls'
import { context, propagation, trace, type TextMapPropagator, type Tracer } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { envDetector, detectResources, resourceFromAttributes } from '@opentelemetry/resources'
import {
  AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, ConsoleSpanExporter, ParentBasedSampler, TraceIdRatioBasedSampler,
  TracerProvider, type ReadableSpan, type Sampler, type SpanExporter
} from '@opentelemetry/sdk-trace'
import { ConfigError } from '../errors.ts'
import { batchSettings, samplerSpec, type SamplerSpec, type TracesExport, type TracingEnv } from './config.ts'
import type { Tracing, TracingInit } from './start.ts'

/** Export failures are logged at most this often: a collector that is down must not flood the log. */
const FAILURE_LOG_INTERVAL_MS = 60_000
/** Longest a shutdown waits for the last export: a collector that is down must not hold up a stopping process. */
const SHUTDOWN_TIMEOUT_MS = 5000

function sampler (spec: SamplerSpec): Sampler {
  switch (spec.kind) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return new TraceIdRatioBasedSampler(spec.ratio)
    case 'parentbased_always_on': return new ParentBasedSampler({ root: new AlwaysOnSampler() })
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(spec.ratio) })
  }
}

/** A PEM file an OTEL_EXPORTER_OTLP_* variable names (signal-specific first), or undefined. */
function pemFromEnv (env: TracingEnv, what: string): string | undefined {
  const name = env[`OTEL_EXPORTER_OTLP_TRACES_${what}`] != null ? `OTEL_EXPORTER_OTLP_TRACES_${what}` : `OTEL_EXPORTER_OTLP_${what}`
  const file = env[name]
  if (file == null || file.trim() === '') return undefined
  try {
    return readFileSync(resolve(file), 'utf8')
  } catch (err) {
    throw new ConfigError(`${name}: cannot read ${file}: ${(err as Error).message}`)
  }
}

/**
 * The OTLP/HTTP exporter. An https endpoint is verified (never turned off)
 * against the system's roots, the CAs the caller trusts (a controller: the
 * mesh's CA) and OTEL_EXPORTER_OTLP_CERTIFICATE; OTEL_EXPORTER_OTLP_CLIENT_*
 * present a client certificate. Giving the agent options ourselves means the
 * exporter no longer reads those variables, hence this.
 */
function otlpExporter (url: string | null, init: TracingInit, env: TracingEnv): SpanExporter {
  const extraCa = pemFromEnv(env, 'CERTIFICATE')
  const cert = pemFromEnv(env, 'CLIENT_CERTIFICATE')
  const key = pemFromEnv(env, 'CLIENT_KEY')
  return new OTLPTraceExporter({
    ...(url != null ? { url } : {}),
    httpAgentOptions: {
      keepAlive: true,
      ca: [...rootCertificates, ...(init.ca ?? []), ...(extraCa != null ? [extraCa] : [])],
      ...(cert != null && key != null ? { cert, key } : {})
    }
  })
}

/** Passes spans on to `inner`, logging failed exports (rate-limited): without it a down collector loses spans silently. */
class LoggingExporter implements SpanExporter {
  private readonly inner: SpanExporter
  private readonly onFailure: TracingInit['onExportFailure']
  private lastLogged = -Infinity
  private failures = 0
  constructor (inner: SpanExporter, onFailure: TracingInit['onExportFailure']) {
    this.inner = inner
    this.onFailure = onFailure
  }

  export (spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, result => {
      if (result.code !== ExportResultCode.SUCCESS) {
        this.failures++
        const now = performance.now()
        if (now - this.lastLogged >= FAILURE_LOG_INTERVAL_MS) {
          this.lastLogged = now
          this.onFailure?.(result.error ?? new Error('export failed'), { spans: spans.length, failures: this.failures })
        }
      }
      done(result)
    })
  }

  async shutdown (): Promise<void> { await this.inner.shutdown() }
  async forceFlush (): Promise<void> { await this.inner.forceFlush?.() }
}

let contextManagerSet = false

/**
 * Async context for the whole process (AsyncLocalStorage), once: it is what
 * lets a request's span reach the registry write it causes. Kept if the
 * embedding application registered its own.
 */
function ensureContextManager (): void {
  if (contextManagerSet) return
  contextManagerSet = true
  const manager = new AsyncLocalStorageContextManager()
  if (context.setGlobalContextManager(manager)) manager.enable()
}

export function createTracing (exp: TracesExport | null, init: TracingInit, env: TracingEnv): Tracing {
  ensureContextManager()
  const propagator: TextMapPropagator = new W3CTraceContextPropagator()
  if (init.register === true) propagation.setGlobalPropagator(propagator)
  if (exp == null) {
    // Context only (a CLI passing TRACEPARENT on): no provider, the API's no-op tracer.
    return { tracer: trace.getTracer('capmesh'), propagator, exporting: null, shutdown: async () => {}, forceFlush: async () => {} }
  }
  const exporter = exp.kind === 'console' ? new ConsoleSpanExporter() : otlpExporter(exp.url, init, env)
  const own = resourceFromAttributes({
    'service.name': init.serviceName,
    ...(init.instanceId != null ? { 'service.instance.id': init.instanceId } : {}),
    ...init.attributes
  })
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults.
  const resource = own.merge(detectResources({ detectors: [envDetector] }))
  const provider = new TracerProvider({
    resource,
    sampler: sampler(samplerSpec(env)),
    spanProcessors: [new BatchSpanProcessor({ exporter: new LoggingExporter(exporter, init.onExportFailure), ...batchSettings(env) })]
  })
  if (init.register === true) trace.setGlobalTracerProvider(provider)
  const tracer: Tracer = provider.getTracer('capmesh')
  let stopped: Promise<void> | null = null
  return {
    tracer,
    propagator,
    exporting: exp.kind === 'console' ? 'console' : exp.url ?? 'OTEL_EXPORTER_OTLP_* (or http://localhost:4318/v1/traces)',
    // Flushes what is queued, then stops: the last spans of a stopping controller are not lost.
    shutdown: async () => {
      stopped ??= new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`the last export did not finish within ${SHUTDOWN_TIMEOUT_MS} ms`)) }, SHUTDOWN_TIMEOUT_MS)
        timer.unref()
        provider.shutdown().then(resolve, reject).finally(() => { clearTimeout(timer) })
      })
      await stopped
    },
    forceFlush: async () => { await provider.forceFlush() }
  }
}
