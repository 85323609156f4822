/**
 * Whether and where a process exports spans, decided from `--otlp-endpoint`
 * and the standard OpenTelemetry environment variables. Pure: it reads the
 * environment it is given and loads no SDK, so a process with tracing off
 * pays for nothing but this.
 *
 * Precedence: an explicit endpoint (the controller's `--otlp-endpoint`)
 * turns tracing on whatever the environment says. Otherwise
 * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off;
 * `OTEL_TRACES_EXPORTER=console` prints spans; `OTEL_TRACES_EXPORTER=otlp`,
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
 * export over OTLP/HTTP (JSON bodies). Nothing set: off.
 */
import { ConfigError } from '../errors.ts'

/** Where spans go. `url` null: the exporter's own reading of the environment (or its default, http://localhost:4318/v1/traces). */
export type TracesExport =
  | { kind: 'otlp', url: string | null }
  | { kind: 'console' }

/** The environment variables tracing reads (process.env, or a test's). */
export type TracingEnv = Record<string, string | undefined>

const TRACES_PATH = 'v1/traces'

/** The traces URL of an OTLP/HTTP base endpoint: `<endpoint>/v1/traces`, unless it already ends so. */
export function tracesUrl (endpoint: string): string {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    throw new ConfigError(`otlp-endpoint: "${endpoint}" is not a URL (e.g. https://collector:4318)`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(`otlp-endpoint: "${endpoint}" must be an http(s) URL (OTLP/HTTP)`)
  if (url.pathname.replace(/\/+$/, '').endsWith(`/${TRACES_PATH}`)) return url.href
  return new URL(url.pathname.endsWith('/') ? TRACES_PATH : `${url.pathname}/${TRACES_PATH}`, url).href
}

const set = (v: string | undefined): v is string => v != null && v.trim() !== ''

/** Where this process's spans go, or null: tracing off. */
export function tracesExport (endpoint: string | undefined, env: TracingEnv): TracesExport | null {
  if (endpoint != null) return { kind: 'otlp', url: tracesUrl(endpoint) }
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return null
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL)?.trim()
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map(s => s.trim().toLowerCase()).filter(s => s.length > 0)
  for (const e of exporters) {
    if (e !== 'otlp' && e !== 'console' && e !== 'none') throw new ConfigError(`OTEL_TRACES_EXPORTER: "${e}" is not supported (otlp, console or none)`)
  }
  if (exporters.includes('none')) return null
  const otlp = exporters.includes('otlp') || (exporters.length === 0 && (set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_ENDPOINT)))
  if (otlp) {
    // The exporter speaks OTLP/HTTP with JSON bodies; a gRPC collector port would never answer it.
    if (protocol === 'grpc') throw new ConfigError('OTEL_EXPORTER_OTLP_PROTOCOL: grpc is not supported; capmesh exports OTLP/HTTP (JSON): point it at the collector\'s HTTP port (4318) and set the protocol to http/json')
    return { kind: 'otlp', url: null }
  }
  if (exporters.includes('console')) return { kind: 'console' }
  return null
}

/** The sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG ask for (the OpenTelemetry names). */
export type SamplerSpec =
  | { kind: 'always_on' | 'always_off' | 'parentbased_always_on' | 'parentbased_always_off' }
  | { kind: 'traceidratio' | 'parentbased_traceidratio', ratio: number }

export function samplerSpec (env: TracingEnv): SamplerSpec {
  const name = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase()
  switch (name) {
    case 'always_on':
    case 'always_off':
    case 'parentbased_always_on':
    case 'parentbased_always_off':
      return { kind: name }
    case 'traceidratio':
    case 'parentbased_traceidratio': {
      const arg = env.OTEL_TRACES_SAMPLER_ARG
      const ratio = set(arg) ? Number(arg) : 1
      if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new ConfigError(`OTEL_TRACES_SAMPLER_ARG: expected a ratio 0-1, got "${arg}"`)
      return { kind: name, ratio }
    }
    default:
      throw new ConfigError(`OTEL_TRACES_SAMPLER: "${name}" is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)`)
  }
}

/** The batch span processor's settings from OTEL_BSP_* (the SDK no longer reads them itself). */
export interface BatchSettings {
  scheduledDelayMillis?: number
  maxQueueSize?: number
  maxExportBatchSize?: number
  exportTimeoutMillis?: number
}

export function batchSettings (env: TracingEnv): BatchSettings {
  const int = (name: string, min: number): number | undefined => {
    const v = env[name]
    if (!set(v)) return undefined
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name}: expected an integer ≥ ${min}, got "${v}"`)
    return n
  }
  const out: BatchSettings = {
    scheduledDelayMillis: int('OTEL_BSP_SCHEDULE_DELAY', 0),
    maxQueueSize: int('OTEL_BSP_MAX_QUEUE_SIZE', 1),
    maxExportBatchSize: int('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 1),
    exportTimeoutMillis: int('OTEL_BSP_EXPORT_TIMEOUT', 1)
  }
  for (const k of Object.keys(out) as Array<keyof BatchSettings>) if (out[k] === undefined) delete out[k]
  return out
}
