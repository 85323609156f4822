/**
 * Controller configuration: one typed object, filled from defaults
 * (constants.ts), an optional JSON config file, then command-line flags.
 * Every field is validated; a bad value is a ConfigError that names it.
 */
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import * as C from './constants.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { ConfigError } from './errors.ts'
import { parseDuration } from './utils/duration.ts'

export const CONTROLLER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export interface TlsFiles {
  /** PEM server certificate (chain). */
  cert: string
  /** PEM private key of `cert`. */
  key: string
  /** PEM CA certificate clients should trust. */
  ca: string
}

export interface ControllerConfig {
  /** Controller id, unique in the mesh: `[A-Za-z0-9._-]`, ≤ 64 chars. */
  id: string
  /** HTTPS bind address. @default '127.0.0.1' */
  host: string
  /** HTTPS port; 0 picks a free one. @default 9000 */
  httpsPort: number
  /** Data dir (registry snapshot + update log, TLS by default). @default `.capmesh/<id>` */
  dataDir: string
  /** TLS dir: created with a local CA and a server certificate if empty. @default `<dataDir>/tls` */
  tlsDir: string
  /** Given certificate files instead of the TLS dir. @default undefined */
  tlsFiles?: TlsFiles
  /**
   * The mesh key file (libp2p swarm key), shared by every controller of the
   * mesh: a p2p peer without it cannot connect. Created if missing.
   * @default `<tlsDir>/mesh.key`
   */
  meshKey: string
  /** Expected worker heartbeat interval (ms). @default 30000 */
  heartbeatIntervalMs: number
  /** No heartbeat for this long → `unhealthy` (ms). @default 60000 */
  unhealthyAfterMs: number
  /** No heartbeat for this long → removed (ms). @default 120000 */
  staleAfterMs: number
  /** Max request body (bytes) on the worker and route endpoints. @default 262144 */
  bodyLimit: number
  /** Max `/state/import` body (bytes). @default 67108864 */
  importBodyLimit: number
  /** Idempotency key lifetime (ms). @default 300000 */
  idempotencyTtlMs: number
  /** fsync every registry write. @default false */
  fsync: boolean
  /** Log level for the controller's pino logger. @default 'info' */
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** libp2p TCP port (bound on `host`); 0 picks a free one. @default 9100 */
  p2pPort: number
  /** Multiaddrs of other controllers to join (`/ip4/127.0.0.1/tcp/9101`, `/p2p/<id>` optional). @default [] */
  bootstrap: string[]
  /** Anti-entropy with a random peer this often (ms). @default 5000 */
  syncIntervalMs: number
  /** Largest anti-entropy delta accepted from a peer (bytes): the whole registry must fit. @default 268435456 */
  maxSyncBytes: number
  /** Re-dial lost peers this often (ms). @default 1000 */
  reconnectIntervalMs: number
  /**
   * Look at the liveness digest this often (ms); it goes out when it changed
   * (at most once per interval), or as a keepalive. @default min(1000, heartbeatInterval)
   */
  digestIntervalMs: number
  /** Publish the digest at least this often even when nothing changed (ms): peers' proof that this controller lives. @default max(digestInterval, unhealthyAfter / 4) */
  digestKeepaliveMs: number
}

/** Keys a config file or flag may set, with the parser for each. */
type Parser = (value: unknown, key: string) => unknown

const str: Parser = (v, k) => {
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`${k}: expected a non-empty string, got ${JSON.stringify(v)}`)
  return v
}
const port: Parser = (v, k) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${k}: expected a port 0-65535, got ${JSON.stringify(v)}`)
  return n
}
const bytes: Parser = (v, k) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1024) throw new ConfigError(`${k}: expected a byte count ≥ 1024, got ${JSON.stringify(v)}`)
  return n
}
const duration: Parser = (v, k) => {
  if (typeof v !== 'string' && typeof v !== 'number') throw new ConfigError(`${k}: expected a duration like "2s", got ${JSON.stringify(v)}`)
  const ms = parseDuration(v, k)
  if (ms <= 0) throw new ConfigError(`${k}: must be greater than 0`)
  return ms
}
const bool: Parser = (v, k) => {
  if (v === true || v === 'true') return true
  if (v === false || v === 'false') return false
  throw new ConfigError(`${k}: expected true or false, got ${JSON.stringify(v)}`)
}
const multiaddrs: Parser = (v, k) => {
  const list = typeof v === 'string' ? v.split(',').map(x => x.trim()).filter(x => x.length > 0) : v
  if (!Array.isArray(list) || list.some(x => typeof x !== 'string')) throw new ConfigError(`${k}: expected a list of multiaddrs, got ${JSON.stringify(v)}`)
  for (const a of list as string[]) {
    try {
      const ma = multiaddr(a)
      if (!ma.getComponents().some(c => c.name === 'tcp')) throw new Error('no /tcp/ part')
    } catch (err) {
      throw new ConfigError(`${k}: "${a}" is not a TCP multiaddr like /ip4/127.0.0.1/tcp/9101 (${(err as Error).message})`)
    }
  }
  return list
}
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
const logLevel: Parser = (v, k) => {
  if (typeof v !== 'string' || !LOG_LEVELS.includes(v)) throw new ConfigError(`${k}: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v)}`)
  return v
}

/**
 * Accepted config-file keys (camelCase, as in ControllerConfig, plus the
 * kebab-case flag spelling) and how each is parsed.
 */
const FIELDS: Record<string, [keyof RawConfig, Parser]> = {
  id: ['id', str],
  host: ['host', str],
  httpsPort: ['httpsPort', port],
  dataDir: ['dataDir', str],
  tlsDir: ['tlsDir', str],
  tlsCert: ['tlsCert', str],
  tlsKey: ['tlsKey', str],
  tlsCa: ['tlsCa', str],
  meshKey: ['meshKey', str],
  heartbeatInterval: ['heartbeatIntervalMs', duration],
  unhealthyAfter: ['unhealthyAfterMs', duration],
  staleAfter: ['staleAfterMs', duration],
  bodyLimit: ['bodyLimit', bytes],
  importBodyLimit: ['importBodyLimit', bytes],
  idempotencyTtl: ['idempotencyTtlMs', duration],
  fsync: ['fsync', bool],
  logLevel: ['logLevel', logLevel],
  p2pPort: ['p2pPort', port],
  bootstrap: ['bootstrap', multiaddrs],
  syncInterval: ['syncIntervalMs', duration],
  maxSyncBytes: ['maxSyncBytes', bytes],
  reconnectInterval: ['reconnectIntervalMs', duration],
  digestInterval: ['digestIntervalMs', duration],
  digestKeepalive: ['digestKeepaliveMs', duration]
}

/** What a config file or the flags may give before defaults are filled in. */
export interface RawConfig {
  id?: string
  host?: string
  httpsPort?: number
  dataDir?: string
  tlsDir?: string
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
  meshKey?: string
  heartbeatIntervalMs?: number
  unhealthyAfterMs?: number
  staleAfterMs?: number
  bodyLimit?: number
  importBodyLimit?: number
  idempotencyTtlMs?: number
  fsync?: boolean
  logLevel?: ControllerConfig['logLevel']
  p2pPort?: number
  bootstrap?: string[]
  syncIntervalMs?: number
  maxSyncBytes?: number
  reconnectIntervalMs?: number
  digestIntervalMs?: number
  digestKeepaliveMs?: number
}

const kebabToCamel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/**
 * Parses a loose object (a config file's JSON or commander's flags) into a
 * RawConfig. Unknown keys are errors, so a typo never goes unnoticed.
 */
export function parseRawConfig (input: Record<string, unknown>, source: string): RawConfig {
  const out: Record<string, unknown> = {}
  for (const [rawKey, value] of Object.entries(input)) {
    if (value === undefined) continue
    const key = kebabToCamel(rawKey)
    const field = FIELDS[key]
    if (field == null) throw new ConfigError(`${source}: unknown option "${rawKey}" (known: ${Object.keys(FIELDS).join(', ')})`)
    out[field[0]] = field[1](value, `${source}: ${rawKey}`)
  }
  return out as RawConfig
}

/** Reads and parses a JSON config file. Paths inside are relative to the working directory, like flags. */
export function readConfigFile (file: string): RawConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`)
  }
  if (json == null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`config file ${file}: expected a JSON object`)
  return parseRawConfig(json as Record<string, unknown>, file)
}

/**
 * Fills defaults and checks cross-field rules. `layers` are applied in
 * order, later ones winning (config file, then flags).
 */
export function resolveControllerConfig (...layers: RawConfig[]): ControllerConfig {
  const raw: RawConfig = Object.assign({}, ...layers)
  const id = raw.id ?? 'controller'
  if (!CONTROLLER_ID.test(id)) throw new ConfigError(`id: "${id}" must match ${CONTROLLER_ID} (letters, digits, . _ -; at most 64)`)
  const dataDir = resolve(raw.dataDir ?? join(C.DEFAULT_DATA_ROOT, id))
  const cfg: ControllerConfig = {
    id,
    host: raw.host ?? C.DEFAULT_HOST,
    httpsPort: raw.httpsPort ?? C.DEFAULT_HTTPS_PORT,
    dataDir,
    tlsDir: resolve(raw.tlsDir ?? join(dataDir, 'tls')),
    meshKey: '',
    heartbeatIntervalMs: raw.heartbeatIntervalMs ?? C.DEFAULT_HEARTBEAT_INTERVAL_MS,
    unhealthyAfterMs: raw.unhealthyAfterMs ?? C.DEFAULT_UNHEALTHY_AFTER_MS,
    staleAfterMs: raw.staleAfterMs ?? C.DEFAULT_STALE_AFTER_MS,
    bodyLimit: raw.bodyLimit ?? C.DEFAULT_BODY_LIMIT_BYTES,
    importBodyLimit: raw.importBodyLimit ?? C.DEFAULT_IMPORT_BODY_LIMIT_BYTES,
    idempotencyTtlMs: raw.idempotencyTtlMs ?? C.DEFAULT_IDEMPOTENCY_TTL_MS,
    fsync: raw.fsync ?? C.DEFAULT_FSYNC,
    logLevel: raw.logLevel ?? 'info',
    p2pPort: raw.p2pPort ?? C.DEFAULT_P2P_PORT,
    bootstrap: raw.bootstrap ?? [],
    syncIntervalMs: raw.syncIntervalMs ?? C.DEFAULT_SYNC_INTERVAL_MS,
    maxSyncBytes: raw.maxSyncBytes ?? C.DEFAULT_MAX_SYNC_BYTES,
    reconnectIntervalMs: raw.reconnectIntervalMs ?? C.DEFAULT_RECONNECT_INTERVAL_MS,
    digestIntervalMs: raw.digestIntervalMs ?? Math.min(C.DEFAULT_DIGEST_INTERVAL_MS, raw.heartbeatIntervalMs ?? C.DEFAULT_HEARTBEAT_INTERVAL_MS),
    digestKeepaliveMs: 0
  }
  if (cfg.digestIntervalMs >= cfg.unhealthyAfterMs) {
    throw new ConfigError(`digest-interval (${cfg.digestIntervalMs}ms) must be shorter than unhealthy-after (${cfg.unhealthyAfterMs}ms), or peers would mark this controller's workers unhealthy between digests`)
  }
  cfg.digestKeepaliveMs = raw.digestKeepaliveMs ?? Math.max(cfg.digestIntervalMs, Math.floor(cfg.unhealthyAfterMs / C.DIGEST_KEEPALIVES_PER_UNHEALTHY_WINDOW))
  if (cfg.digestKeepaliveMs < cfg.digestIntervalMs || cfg.digestKeepaliveMs >= cfg.unhealthyAfterMs) {
    throw new ConfigError(`digest-keepalive (${cfg.digestKeepaliveMs}ms) must be at least digest-interval (${cfg.digestIntervalMs}ms) and shorter than unhealthy-after (${cfg.unhealthyAfterMs}ms), or peers would take this controller for gone between keepalives`)
  }
  cfg.meshKey = resolve(raw.meshKey ?? join(cfg.tlsDir, C.MESH_KEY_FILE))
  const tls = [raw.tlsCert, raw.tlsKey, raw.tlsCa]
  if (tls.some(v => v != null)) {
    if (tls.some(v => v == null)) throw new ConfigError('tls-cert, tls-key and tls-ca must be given together')
    cfg.tlsFiles = { cert: resolve(raw.tlsCert!), key: resolve(raw.tlsKey!), ca: resolve(raw.tlsCa!) }
  }
  if (cfg.unhealthyAfterMs <= cfg.heartbeatIntervalMs) {
    throw new ConfigError(`unhealthy-after (${cfg.unhealthyAfterMs}ms) must be longer than heartbeat-interval (${cfg.heartbeatIntervalMs}ms)`)
  }
  if (cfg.maxSyncBytes > 0xffffffff) throw new ConfigError(`max-sync-bytes (${cfg.maxSyncBytes}) must be below 4 GiB (the sync protocol's size field is 32 bits)`)
  if (cfg.staleAfterMs <= cfg.unhealthyAfterMs) {
    throw new ConfigError(`stale-after (${cfg.staleAfterMs}ms) must be longer than unhealthy-after (${cfg.unhealthyAfterMs}ms)`)
  }
  return cfg
}

/**
 * Preset for tests and simulations: ephemeral ports, 200 ms heartbeats,
 * unhealthy after 600 ms, removed after 1.2 s, digests every 100 ms,
 * anti-entropy every 500 ms, re-dial every 250 ms, quiet logs.
 */
export function localPreset (overrides: RawConfig = {}): RawConfig {
  return {
    httpsPort: 0,
    p2pPort: 0,
    heartbeatIntervalMs: 200,
    unhealthyAfterMs: 600,
    staleAfterMs: 1200,
    digestIntervalMs: 100,
    syncIntervalMs: 500,
    reconnectIntervalMs: 250,
    logLevel: 'silent',
    ...overrides
  }
}
