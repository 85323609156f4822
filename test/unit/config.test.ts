import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CONTROLLER_OPTIONS, controllerFlags, localPreset, optionsMarkdown, parseRawConfig, readConfigFile, resolveControllerConfig } from '../../src/config.ts'
import { ConfigError } from '../../src/errors.ts'
import { formatDuration, parseDuration } from '../../src/utils/duration.ts'

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).name).toBe('ConfigError')
    expect((err as ConfigError).code).toBe('CAPMESH_ERR_CONFIG')
    return err as ConfigError
  }
  throw new Error('expected a ConfigError')
}

describe('parseDuration', () => {
  it.each([
    ['500ms', 500], ['2s', 2000], ['1.5s', 1500], ['1.5m', 90_000], ['1h', 3_600_000], ['250', 250], [' 3s ', 3000], ['0', 0], [750, 750]
  ] as Array<[string | number, number]>)('%j → %i ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms)
  })

  it.each(['', 'abc', '5d', '-1s', '1e3', 's', '2 s', '1,5s'])('rejects %j', input => {
    configError(() => parseDuration(input, 'stale-after'))
  })

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY])('rejects the number %d', input => {
    configError(() => parseDuration(input))
  })

  it('formatDuration writes what parseDuration reads back', () => {
    for (const ms of [5, 999, 1000, 1500, 59_000, 60_000, 90_000]) expect(parseDuration(formatDuration(ms))).toBe(ms)
  })
})

describe('parseRawConfig', () => {
  it('reads camelCase and kebab-case keys, parsing durations, ports, sizes and booleans', () => {
    expect(parseRawConfig({
      id: 'a', 'https-port': '9001', heartbeatInterval: '1s', 'unhealthy-after': '3s', staleAfter: 6000,
      'body-limit': '4096', fsync: 'true', 'log-level': 'debug', dataDir: 'x', 'idempotency-ttl': '1m'
    }, 'flag')).toEqual({
      id: 'a', httpsPort: 9001, heartbeatIntervalMs: 1000, unhealthyAfterMs: 3000, staleAfterMs: 6000,
      bodyLimit: 4096, fsync: true, logLevel: 'debug', dataDir: 'x', idempotencyTtlMs: 60_000
    })
  })

  it('skips undefined values (flags not given)', () => {
    expect(parseRawConfig({ id: undefined, host: '::1' }, 'flag')).toEqual({ host: '::1' })
  })

  it.each([
    ['an unknown option', { colour: 'blue' }],
    ['a port out of range', { httpsPort: 70000 }],
    ['a negative port', { httpsPort: -1 }],
    ['a port that is not a number', { httpsPort: 'http' }],
    ['a fractional port', { httpsPort: 1.5 }],
    ['a body limit under 1 KiB', { bodyLimit: 1023 }],
    ['a body limit that is not a number', { bodyLimit: '1MB' }],
    ['a zero duration', { heartbeatInterval: '0s' }],
    ['a malformed duration', { staleAfter: 'soon' }],
    ['a duration of the wrong type', { unhealthyAfter: true }],
    ['a non-boolean fsync', { fsync: 'yes' }],
    ['an unknown log level', { logLevel: 'verbose' }],
    ['an empty id', { id: '' }],
    ['a non-string host', { host: 127001 }]
  ])('rejects %s', (_name, input) => {
    configError(() => parseRawConfig(input as Record<string, unknown>, 'flag'))
  })
})

describe('resolveControllerConfig', () => {
  it('fills the platform defaults', () => {
    const cfg = resolveControllerConfig({})
    expect(cfg).toMatchObject({
      id: 'controller',
      host: '127.0.0.1',
      httpsPort: 9000,
      dataDir: resolve('.capmesh/controller'),
      tlsDir: resolve('.capmesh/controller/tls'),
      heartbeatIntervalMs: 30_000,
      unhealthyAfterMs: 60_000,
      staleAfterMs: 120_000,
      bodyLimit: 256 * 1024,
      importBodyLimit: 256 * 1024 * 1024,
      fsync: false,
      logLevel: 'info'
    })
    expect(cfg.tlsFiles).toBeUndefined()
  })

  it('derives the data and TLS dirs from the id, later layers winning', () => {
    const cfg = resolveControllerConfig({ id: 'a', httpsPort: 1 }, { id: 'b', dataDir: '/tmp/x' }, { httpsPort: 2 })
    expect(cfg).toMatchObject({ id: 'b', httpsPort: 2, dataDir: '/tmp/x', tlsDir: '/tmp/x/tls' })
    expect(resolveControllerConfig({ id: 'n1' }).dataDir).toBe(resolve('.capmesh/n1'))
  })

  it('keeps the mesh key in the TLS dir unless told otherwise', () => {
    expect(resolveControllerConfig({ dataDir: '/tmp/x' }).meshKey).toBe('/tmp/x/tls/mesh.key')
    expect(resolveControllerConfig({ tlsDir: '/tmp/shared' }).meshKey).toBe('/tmp/shared/mesh.key')
    expect(resolveControllerConfig(parseRawConfig({ 'mesh-key': 'keys/m.key' }, 'flag')).meshKey).toBe(resolve('keys/m.key'))
    configError(() => parseRawConfig({ 'mesh-key': '' }, 'flag'))
  })

  it('takes given TLS files together', () => {
    const cfg = resolveControllerConfig({ tlsCert: 'c.pem', tlsKey: 'k.pem', tlsCa: 'ca.pem' })
    expect(cfg.tlsFiles).toEqual({ cert: resolve('c.pem'), key: resolve('k.pem'), ca: resolve('ca.pem') })
  })

  it.each([
    ['an id with a space', { id: 'my controller' }],
    ['an id starting with a dot', { id: '.hidden' }],
    ['an id over 64 characters', { id: 'x'.repeat(65) }],
    ['unhealthy-after equal to the heartbeat interval', { heartbeatIntervalMs: 60_000 }],
    ['unhealthy-after shorter than the heartbeat interval', { heartbeatIntervalMs: 1000, unhealthyAfterMs: 500, staleAfterMs: 5000 }],
    ['stale-after equal to unhealthy-after', { staleAfterMs: 60_000 }],
    ['stale-after shorter than unhealthy-after', { heartbeatIntervalMs: 100, unhealthyAfterMs: 1000, staleAfterMs: 900 }],
    ['a TLS certificate without its key and CA', { tlsCert: 'c.pem' }],
    ['a TLS key and CA without a certificate', { tlsKey: 'k.pem', tlsCa: 'ca.pem' }]
  ])('rejects %s', (_name, raw) => {
    configError(() => resolveControllerConfig(raw))
  })

  it('the local preset resolves to short timeouts on ephemeral ports, overridable', () => {
    const cfg = resolveControllerConfig(localPreset({ id: 't' }))
    expect(cfg).toMatchObject({ id: 't', httpsPort: 0, heartbeatIntervalMs: 200, unhealthyAfterMs: 600, staleAfterMs: 1200, logLevel: 'silent' })
    expect(resolveControllerConfig(localPreset({ staleAfterMs: 5000 })).staleAfterMs).toBe(5000)
  })
})

describe('readConfigFile', () => {
  let dir: string
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'capmesh-config-')) })
  afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

  const file = (name: string, text: string): string => {
    const p = join(dir, name)
    writeFileSync(p, text)
    return p
  }

  it('reads a JSON object of options; flags override it', () => {
    const raw = readConfigFile(file('a.json', JSON.stringify({ id: 'a', 'https-port': 9005, 'stale-after': '3m', heartbeatInterval: '10s' })))
    expect(raw).toEqual({ id: 'a', httpsPort: 9005, staleAfterMs: 180_000, heartbeatIntervalMs: 10_000 })
    expect(resolveControllerConfig(raw, parseRawConfig({ 'https-port': '9009' }, 'flag'))).toMatchObject({ id: 'a', httpsPort: 9009, staleAfterMs: 180_000 })
  })

  it.each([
    ['a missing file', (): string => join(dir, 'nope.json')],
    ['invalid JSON', (): string => file('bad.json', '{"id": ')],
    ['a JSON array', (): string => file('arr.json', '[1, 2]')],
    ['JSON null', (): string => file('null.json', 'null')],
    ['an unknown key', (): string => file('typo.json', '{"stale_after": "2s"}')],
    ['a bad value', (): string => file('val.json', '{"httpsPort": "eighty"}')]
  ])('rejects %s', (_name, path) => {
    configError(() => readConfigFile(path()))
  })
})

describe('bootstrap addresses', () => {
  it.each([
    '/ip4/127.0.0.1/tcp/9101',
    '/ip4/10.1.2.3/tcp/9100/p2p/12D3KooWAQc6QgDki5uc4jnGTxRCtA5HF3H4z6No63brkFLMH73m',
    '/ip6/::1/tcp/9100',
    '/dns4/controller-b.mesh.local/tcp/9100',
    '/dns/c-2/tcp/1'
  ])('takes %s', a => {
    expect(parseRawConfig({ bootstrap: [a] }, 'flag').bootstrap).toEqual([a])
  })

  it.each([
    'localhost:9100', '/ip4/127.0.0.1/udp/9101', '/ip4/127.0.0.1/tcp/70000', '/ip4/127.0.0.1', '/ip4/1.2.3/tcp/1',
    '/ip4/127.0.0.1/tcp/9101/p2p/not a peer id', '/dns4/bad name/tcp/1', 'https://127.0.0.1:9000'
  ])('refuses %s, naming it', a => {
    expect(configError(() => parseRawConfig({ bootstrap: a }, 'flag')).message).toContain(a)
  })
})

describe('advertised addresses', () => {
  it('takes host names and IPs, repeated or as a comma list', () => {
    expect(parseRawConfig({ advertise: ['c1', 'c1.mesh.example.org,10.0.0.4'] }, 'flag').advertise).toEqual(['c1', 'c1.mesh.example.org', '10.0.0.4'])
    expect(parseRawConfig({ advertise: 'fd00::4, capmesh-0.capmesh.default.svc.cluster.local' }, 'file').advertise).toEqual(['fd00::4', 'capmesh-0.capmesh.default.svc.cluster.local'])
  })

  it.each(['0.0.0.0', '::', 'c1:9100', 'https://c1', 'bad name', '-c1', 'c1..mesh'])('refuses %s, naming it', h => {
    expect(configError(() => parseRawConfig({ advertise: [h] }, 'flag')).message).toContain(h)
  })

  it('needs a fixed p2p port (peers are told the port too)', () => {
    expect(configError(() => resolveControllerConfig({ advertise: ['c1'], p2pPort: 0 })).message).toMatch(/fixed p2p-port/)
    expect(resolveControllerConfig({ host: '0.0.0.0', advertise: ['c1'] })).toMatchObject({ host: '0.0.0.0', advertise: ['c1'], p2pPort: 9100 })
    expect(resolveControllerConfig({}).advertise).toEqual([])
  })
})

describe('the options, declared once', () => {
  it('docs/operations.md lists every option with its flag, config-file key and default, as CONTROLLER_OPTIONS declares them', () => {
    const doc = readFileSync(resolve(import.meta.dirname, '../../docs/operations.md'), 'utf8')
    const block = /<!-- options:begin -->\n([\s\S]*?)\n<!-- options:end -->/.exec(doc)?.[1]
    expect(block, 'the option table markers in docs/operations.md').toBeDefined()
    expect(block).toBe(optionsMarkdown())
  })

  it('every option is a flag of capmesh controller, with its default in the help', () => {
    const flags = controllerFlags()
    expect(flags.map(f => f.flags.split(' ')[0])).toEqual(Object.keys(CONTROLLER_OPTIONS).map(k => `--${k.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)}`))
    expect(flags.find(f => f.flags.startsWith('--stale-after'))?.description).toMatch(/\(default 2m\)$/)
    expect(flags.find(f => f.flags.startsWith('--bootstrap'))?.repeatable).toBe(true)
  })

  it('a flag and a config-file key of the same option parse to the same value', () => {
    for (const name of Object.keys(CONTROLLER_OPTIONS)) {
      const kebab = name.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)
      expect(Object.keys(parseRawConfig({ [kebab]: undefined }, 'flag'))).toEqual([])
    }
    expect(parseRawConfig({ 'max-sync-bytes': '65536' }, 'flag')).toEqual(parseRawConfig({ maxSyncBytes: 65536 }, 'file'))
  })
})
