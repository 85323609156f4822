/**
 * Whether tracing is on and where spans go, from `--otlp-endpoint` and the
 * standard OTEL_* variables; and that off loads nothing.
 */
import { describe, expect, it } from 'vitest'
import { batchSettings, samplerSpec, tracesExport, tracesUrl } from '../../../src/tracing/config.ts'
import { startTracing, tracingWanted } from '../../../src/tracing/index.ts'

function configError (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    expect((err as Error).name).toBe('ConfigError')
    return err as Error
  }
  throw new Error('expected a ConfigError')
}

describe('tracesExport', () => {
  it('is off with nothing set', () => {
    expect(tracesExport(undefined, {})).toBeNull()
    expect(tracingWanted(undefined, {})).toBe(false)
  })

  it('--otlp-endpoint turns it on whatever the environment says, at <endpoint>/v1/traces', () => {
    expect(tracesExport('https://collector:4318', { OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'none' })).toEqual({ kind: 'otlp', url: 'https://collector:4318/v1/traces' })
  })

  it.each([
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318' }, { kind: 'otlp', url: null }],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c:4318/v1/traces' }, { kind: 'otlp', url: null }],
    [{ OTEL_TRACES_EXPORTER: 'otlp' }, { kind: 'otlp', url: null }],
    [{ OTEL_TRACES_EXPORTER: 'console' }, { kind: 'console' }],
    [{ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318' }, null],
    [{ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318' }, null],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: '  ' }, null],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, { kind: 'otlp', url: null }]
  ])('%j → %j', (env, expected) => {
    expect(tracesExport(undefined, env)).toEqual(expected)
  })

  it('refuses what it cannot do, naming the variable', () => {
    expect(configError(() => tracesExport(undefined, { OTEL_TRACES_EXPORTER: 'zipkin' })).message).toMatch(/OTEL_TRACES_EXPORTER/)
    expect(configError(() => tracesExport(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).message).toMatch(/grpc/)
  })
})

describe('tracesUrl', () => {
  it.each([
    ['https://c:4318', 'https://c:4318/v1/traces'],
    ['https://c:4318/', 'https://c:4318/v1/traces'],
    ['https://c/otlp', 'https://c/otlp/v1/traces'],
    ['https://c:4318/v1/traces', 'https://c:4318/v1/traces']
  ])('%s → %s', (endpoint, url) => {
    expect(tracesUrl(endpoint)).toBe(url)
  })

  it.each(['collector:4318', 'ftp://c/x', ''])('rejects %j', endpoint => {
    configError(() => tracesUrl(endpoint))
  })
})

describe('samplerSpec and batchSettings', () => {
  it('reads OTEL_TRACES_SAMPLER(_ARG), parent-based always-on by default', () => {
    expect(samplerSpec({})).toEqual({ kind: 'parentbased_always_on' })
    expect(samplerSpec({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' })).toEqual({ kind: 'parentbased_traceidratio', ratio: 0.25 })
    configError(() => samplerSpec({ OTEL_TRACES_SAMPLER: 'jaeger_remote' }))
    configError(() => samplerSpec({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' }))
  })

  it('reads OTEL_BSP_*', () => {
    expect(batchSettings({})).toEqual({})
    expect(batchSettings({ OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_BSP_MAX_QUEUE_SIZE: '4096' })).toEqual({ scheduledDelayMillis: 50, maxQueueSize: 4096 })
    configError(() => batchSettings({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 'lots' }))
  })
})

describe('startTracing', () => {
  it('off: null (nothing set up; callers keep the API no-op)', async () => {
    expect(await startTracing({ serviceName: 'x', env: {} })).toBeNull()
  })
})
