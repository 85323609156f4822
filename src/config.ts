/**
 * Controller options, declared once. CONTROLLER_OPTIONS says, per option,
 * its config-file key (and `--kebab-case` flag), how a value is parsed and
 * checked, what it means and its default (from constants.ts); from that one
 * table derive the ControllerConfig type, the config-file parser and its
 * errors, the `capmesh controller` flags with their help text, and the
 * option table in docs/operations.md (a test keeps it in step).
 *
 * Layers: defaults, then an optional JSON config file, then flags. Every
 * value is validated; a bad one is a ConfigError that names it.
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join, resolve } from 'node:path'
import * as C from './constants.ts'
import { ConfigError } from './errors.ts'
import { formatDuration, parseDuration } from './utils/duration.ts'

const { CONTROLLER_ID } = C
export { CONTROLLER_ID }

type Parser<T> = (value: unknown, where: string) => T

const str: Parser<string> = (v, k) => {
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`${k}: expected a non-empty string, got ${JSON.stringify(v)}`)
  return v
}
const controllerId: Parser<string> = (v, k) => {
  const s = str(v, k)
  if (!CONTROLLER_ID.test(s)) throw new ConfigError(`${k}: "${s}" must match ${CONTROLLER_ID} (letters, digits, . _ -; at most 64)`)
  return s
}
const port: Parser<number> = (v, k) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${k}: expected a port 0-65535, got ${JSON.stringify(v)}`)
  return n
}
const bytes: Parser<number> = (v, k) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1024) throw new ConfigError(`${k}: expected a byte count ≥ 1024, got ${JSON.stringify(v)}`)
  return n
}
/** A non-negative integer (0 usually turns the thing off). */
const count: Parser<number> = (v, k) => {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new ConfigError(`${k}: expected an integer ≥ 0, got ${JSON.stringify(v)}`)
  return n
}
/** A positive integer. */
const positive: Parser<number> = (v, k) => {
  const n = count(v, k)
  if (n < 1) throw new ConfigError(`${k}: expected an integer ≥ 1, got ${JSON.stringify(v)}`)
  return n
}
/** A byte count, or 0 for none. */
const countBytes: Parser<number> = (v, k) => count(v, k) === 0 ? 0 : bytes(v, k)
/** A duration, or 0 for never. */
const durationOrZero: Parser<number> = (v, k) => v === 0 || v === '0' ? 0 : duration(v, k)
const duration: Parser<number> = (v, k) => {
  if (typeof v !== 'string' && typeof v !== 'number') throw new ConfigError(`${k}: expected a duration like "2s", got ${JSON.stringify(v)}`)
  const ms = parseDuration(v, k)
  if (ms <= 0) throw new ConfigError(`${k}: must be greater than 0`)
  return ms
}
const bool: Parser<boolean> = (v, k) => {
  if (v === true || v === 'true') return true
  if (v === false || v === 'false') return false
  throw new ConfigError(`${k}: expected true or false, got ${JSON.stringify(v)}`)
}
/** A list given as an array (a config file, a repeated flag) or a string, each item possibly comma-separated; null if not strings. */
function commaList (v: unknown): string[] | null {
  const items = typeof v === 'string' ? [v] : v
  if (!Array.isArray(items) || items.some(x => typeof x !== 'string')) return null
  return (items as string[]).flatMap(x => x.split(',')).map(x => x.trim()).filter(x => x.length > 0)
}
/**
 * A controller's p2p address: `/ip4/A/tcp/P`, `/ip6/A/tcp/P` or `/dns4|dns6|dns/NAME/tcp/P`,
 * optionally `/p2p/<peer id>`. Checked by shape here (so a controller's command line does not load
 * the multiaddr library); the mesh parses it again when it dials.
 */
const TCP_MULTIADDR = /^\/(ip4\/\d{1,3}(\.\d{1,3}){3}|ip6\/[0-9A-Fa-f:.]+|dns[46]?\/[A-Za-z0-9.-]{1,253})\/tcp\/\d{1,5}(\/p2p\/[1-9A-HJ-NP-Za-km-z]{32,128})?$/
const multiaddrs: Parser<string[]> = (v, k) => {
  const list = commaList(v)
  if (list == null) throw new ConfigError(`${k}: expected a list of multiaddrs, got ${JSON.stringify(v)}`)
  for (const a of list) {
    const p = /\/tcp\/(\d+)/.exec(a)
    if (!TCP_MULTIADDR.test(a) || Number(p?.[1]) > 65535) throw new ConfigError(`${k}: "${a}" is not a TCP multiaddr like /ip4/127.0.0.1/tcp/9101 or /dns4/controller-b/tcp/9100 (optionally ending /p2p/<peer id>)`)
  }
  return list
}
/** A host name (RFC 1123 labels) or an IP address, not a wildcard. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const hosts: Parser<string[]> = (v, k) => {
  const list = commaList(v)
  if (list == null) throw new ConfigError(`${k}: expected a list of host names or IP addresses, got ${JSON.stringify(v)}`)
  for (const h of list) {
    if (h === '0.0.0.0' || h === '::') throw new ConfigError(`${k}: "${h}" is a wildcard, not an address peers can reach; give this host's name or IP`)
    if (isIP(h) === 0 && !HOST_NAME.test(h)) throw new ConfigError(`${k}: "${h}" is neither an IP address nor a host name (no port, no scheme: the ports are --https-port and --p2p-port)`)
  }
  return list
}
/** A closed set of words (`--auth required|off`). */
const oneOf = <T extends string>(...words: T[]): Parser<T> => (v, k) => {
  if (typeof v !== 'string' || !(words as string[]).includes(v)) throw new ConfigError(`${k}: expected ${words.join(' or ')}, got ${JSON.stringify(v)}`)
  return v as T
}
/** One or more non-empty strings (a repeatable flag, or a list in a config file). */
const strings: Parser<string[]> = (v, k) => {
  const list = typeof v === 'string' ? [v] : v
  if (!Array.isArray(list) || list.some(x => typeof x !== 'string' || x.length === 0)) throw new ConfigError(`${k}: expected a list of non-empty strings, got ${JSON.stringify(v)}`)
  return list as string[]
}
/** An http(s) URL (an OTLP/HTTP collector). */
const httpUrl: Parser<string> = (v, k) => {
  const s = str(v, k)
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new ConfigError(`${k}: "${s}" is not a URL (e.g. https://collector:4318)`)
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ConfigError(`${k}: "${s}" must be an http(s) URL`)
  return s
}
const trustDomain: Parser<string> = (v, k) => {
  const s = str(v, k)
  if (!C.TRUST_DOMAIN.test(s)) throw new ConfigError(`${k}: "${s}" is not a trust domain (lower-case letters, digits, . _ -)`)
  return s
}
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
type LogLevel = typeof LOG_LEVELS[number]
const logLevel: Parser<LogLevel> = (v, k) => {
  if (typeof v !== 'string' || !(LOG_LEVELS as readonly string[]).includes(v)) throw new ConfigError(`${k}: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v)}`)
  return v as LogLevel
}

/** The options resolved so far (a default may depend on earlier ones). */
type Resolving = Record<string, unknown> & { id: string, dataDir: string, tlsDir: string, heartbeatIntervalMs: number, unhealthyAfterMs: number, digestIntervalMs: number }

interface Option<K extends string, T> {
  /** The key in ControllerConfig and RawConfig (`heartbeatIntervalMs` for the option `heartbeatInterval`). */
  key: K
  parse: Parser<T>
  /** The value's placeholder in help: `<duration>`. */
  value: string
  description: string
  /** The default: a value, or one derived from the options resolved before this one; none if absent. */
  default?: T | ((c: Resolving) => T)
  /** The default as help and docs show it. @default the value, formatted */
  defaultText?: string
  /** A file or folder: resolved against the working directory. */
  path?: boolean
  /** The flag may be given several times (values collected). */
  repeatable?: boolean
}

const option = <K extends string, T>(o: Option<K, T>): Option<K, T> => o

/** Every controller option, in the order defaults are resolved (a derived default reads only earlier ones). */
export const CONTROLLER_OPTIONS = {
  id: option({ key: 'id', parse: controllerId, value: 'id', description: 'controller id, unique in the mesh', default: 'controller' }),
  host: option({ key: 'host', parse: str, value: 'host', description: 'HTTPS and p2p bind address; 0.0.0.0 or :: binds every interface (then give --advertise)', default: C.DEFAULT_HOST }),
  httpsPort: option({ key: 'httpsPort', parse: port, value: 'port', description: 'HTTPS port; 0 picks a free one', default: C.DEFAULT_HTTPS_PORT }),
  p2pPort: option({ key: 'p2pPort', parse: port, value: 'port', description: 'libp2p TCP port; 0 picks a free one', default: C.DEFAULT_P2P_PORT }),
  dataDir: option({ key: 'dataDir', parse: str, path: true, value: 'dir', description: 'data dir: registry snapshot and update log, peer key', default: c => join(C.DEFAULT_DATA_ROOT, c.id), defaultText: '.capmesh/<id>' }),
  tlsDir: option({ key: 'tlsDir', parse: str, path: true, value: 'dir', description: 'TLS dir; a local CA and a server certificate are created there if empty', default: c => join(c.dataDir, 'tls'), defaultText: '<data-dir>/tls' }),
  tlsCert: option({ key: 'tlsCert', parse: str, path: true, value: 'file', description: 'server certificate (PEM), with --tls-key and --tls-ca, instead of the TLS dir' }),
  tlsKey: option({ key: 'tlsKey', parse: str, path: true, value: 'file', description: 'private key of --tls-cert (PEM)' }),
  tlsCa: option({ key: 'tlsCa', parse: str, path: true, value: 'file', description: 'CA certificate clients trust (PEM)' }),
  meshKey: option({ key: 'meshKey', parse: str, path: true, value: 'file', description: 'mesh key shared by every controller of the mesh, or several (a key ring: the first is used, all are accepted; `capmesh mesh-key`); created if missing; re-read on SIGHUP and when it changes', default: c => join(c.tlsDir, C.MESH_KEY_FILE), defaultText: '<tls-dir>/mesh.key' }),
  peerAllow: option({ key: 'peerAllow', parse: str, path: true, value: 'file', description: 'peer allow list: the controllers admitted to the mesh, "<controller-id> <peer-id>" per line; a TLS dir holding ca-key.pem (development) gets each controller\'s own line at start; re-read on SIGHUP and when it changes', default: c => join(c.tlsDir, C.PEER_ALLOW_FILE), defaultText: '<tls-dir>/peers.allow' }),
  advertise: option({ key: 'advertise', parse: hosts, repeatable: true, value: 'host', description: 'host name or IP that peers and workers reach this controller at (repeatable, or a comma list): announced to peers with the p2p port, covered by the TLS certificate', default: [] as string[], defaultText: 'the --host address' }),
  auth: option({ key: 'auth', parse: oneOf('required', 'off'), value: 'mode', description: 'required: every caller presents an identity (client certificate or bearer token); off: nobody is asked (a warning at start)', default: 'required' as 'required' | 'off' }),
  trustDomain: option({ key: 'trustDomain', parse: trustDomain, value: 'domain', description: 'SPIFFE trust domain of the identities accepted (spiffe://<domain>/<role>/<name>)', default: C.DEFAULT_TRUST_DOMAIN }),
  clientCa: option({ key: 'clientCa', parse: strings, path: true, repeatable: true, value: 'file', description: 'another CA whose client certificates are trusted, besides the TLS dir\'s ca.pem (repeatable)', default: [] as string[], defaultText: 'none' }),
  subjectMap: option({ key: 'subjectMap', parse: str, path: true, value: 'file', description: 'JSON map from certificate subjects to identities, for client certificates without a SPIFFE id' }),
  tokenKey: option({ key: 'tokenKey', parse: strings, path: true, repeatable: true, value: 'file', description: 'PEM public key that signs bearer tokens (EdDSA or ES256; repeatable)', default: [] as string[], defaultText: 'none' }),
  jwks: option({ key: 'jwks', parse: str, path: true, value: 'file', description: 'JWKS file of the keys that sign bearer tokens' }),
  policy: option({ key: 'policy', parse: str, path: true, value: 'file', description: 'route policy: which client identities may route to which capabilities, and who is denied (reloaded on SIGHUP)' }),
  denyIdentity: option({ key: 'denyIdentity', parse: strings, repeatable: true, value: 'id', description: 'refuse this identity even with a valid certificate or token (repeatable)', default: [] as string[], defaultText: 'none' }),
  healthAuth: option({ key: 'healthAuth', parse: oneOf('open', 'required'), value: 'mode', description: 'open: GET /health needs no identity (load balancers); required: it does', default: 'open' as 'open' | 'required' }),
  bootstrap: option({ key: 'bootstrap', parse: multiaddrs, repeatable: true, value: 'multiaddr', description: 'another controller to join, e.g. /ip4/10.0.0.2/tcp/9100 or /dns4/c2/tcp/9100 (a name is looked up on every dial; repeatable)', default: [] as string[], defaultText: 'none' }),
  heartbeatInterval: option({ key: 'heartbeatIntervalMs', parse: duration, value: 'duration', description: 'expected worker heartbeat interval', default: C.DEFAULT_HEARTBEAT_INTERVAL_MS }),
  unhealthyAfter: option({ key: 'unhealthyAfterMs', parse: duration, value: 'duration', description: 'no heartbeat for this long: unhealthy, not routed to', default: C.DEFAULT_UNHEALTHY_AFTER_MS }),
  staleAfter: option({ key: 'staleAfterMs', parse: duration, value: 'duration', description: 'no heartbeat for this long: removed', default: C.DEFAULT_STALE_AFTER_MS }),
  digestInterval: option({ key: 'digestIntervalMs', parse: duration, value: 'duration', description: 'look at the liveness digest this often; it goes out when it changed', default: c => Math.min(C.DEFAULT_DIGEST_INTERVAL_MS, c.heartbeatIntervalMs), defaultText: 'min(1s, heartbeat-interval)' }),
  digestKeepalive: option({ key: 'digestKeepaliveMs', parse: duration, value: 'duration', description: 'publish the digest at least this often even unchanged', default: c => Math.max(c.digestIntervalMs, Math.floor(c.unhealthyAfterMs / C.DIGEST_KEEPALIVES_PER_UNHEALTHY_WINDOW)), defaultText: 'unhealthy-after / 4' }),
  syncInterval: option({ key: 'syncIntervalMs', parse: duration, value: 'duration', description: 'anti-entropy with a peer that seems to differ this often', default: C.DEFAULT_SYNC_INTERVAL_MS }),
  maxSyncBytes: option({ key: 'maxSyncBytes', parse: bytes, value: 'bytes', description: 'largest anti-entropy delta accepted from a peer; the whole registry must fit', default: C.DEFAULT_MAX_SYNC_BYTES }),
  reconnectInterval: option({ key: 'reconnectIntervalMs', parse: duration, value: 'duration', description: 're-dial lost peers this often', default: C.DEFAULT_RECONNECT_INTERVAL_MS }),
  rateLimit: option({ key: 'rateLimit', parse: count, value: 'n', description: 'requests a second one identity may make (429 + Retry-After past it); 0: no limit', default: C.DEFAULT_RATE_LIMIT_PER_SECOND }),
  maxEventLoopDelay: option({ key: 'maxEventLoopDelayMs', parse: durationOrZero, value: 'duration', description: 'shed requests (503 + Retry-After) while the event loop is this late; 0: never', default: C.DEFAULT_MAX_EVENT_LOOP_DELAY_MS }),
  maxHeap: option({ key: 'maxHeapBytes', parse: countBytes, value: 'bytes', description: 'shed requests (503 + Retry-After) while the heap holds more than this; 0: never', default: 0 }),
  bodyLimit: option({ key: 'bodyLimit', parse: bytes, value: 'bytes', description: 'largest request body outside /state/import', default: C.DEFAULT_BODY_LIMIT_BYTES }),
  importBodyLimit: option({ key: 'importBodyLimit', parse: bytes, value: 'bytes', description: 'largest state /state/import takes (bytes of update; a JSON body may be its base64, 4/3 of it)', default: C.DEFAULT_IMPORT_BODY_LIMIT_BYTES }),
  watchLogSize: option({ key: 'watchLogSize', parse: positive, value: 'n', description: 'changes kept for /watch and blocking /workers queries: a watcher this far behind (or reconnecting from further back) gets a snapshot, or is cut off while connected', default: C.DEFAULT_WATCH_LOG_SIZE }),
  maxWatchers: option({ key: 'maxWatchers', parse: count, value: 'n', description: '/watch streams and blocking /workers queries served at once (503 + Retry-After past it); 0: none', default: C.DEFAULT_MAX_WATCHERS }),
  watchBuffer: option({ key: 'watchBufferBytes', parse: bytes, value: 'bytes', description: 'unsent bytes a watcher\'s connection may hold before the controller stops writing to it until it reads', default: C.DEFAULT_WATCH_BUFFER_BYTES }),
  watchKeepalive: option({ key: 'watchKeepaliveMs', parse: duration, value: 'duration', description: 'a keepalive comment to every watcher this often; one that reads nothing for 4 of them is cut off', default: C.DEFAULT_WATCH_KEEPALIVE_MS }),
  idempotencyTtl: option({ key: 'idempotencyTtlMs', parse: duration, value: 'duration', description: 'how long an idempotency_key keeps its worker', default: C.DEFAULT_IDEMPOTENCY_TTL_MS }),
  fsync: option({ key: 'fsync', parse: bool, value: 'bool', description: 'fsync every registry write (power-loss safety, at a latency cost)', default: C.DEFAULT_FSYNC }),
  otlpEndpoint: option({ key: 'otlpEndpoint', parse: httpUrl, value: 'url', description: 'export OpenTelemetry spans over OTLP/HTTP (JSON) to this collector, at URL/v1/traces; https is verified against the system roots and the mesh CA. Unset: the OTEL_* variables decide (off when none is set)', defaultText: 'off' }),
  traceHeartbeats: option({ key: 'traceHeartbeats', parse: count, value: 'n', description: 'with tracing on, one heartbeat in n gets a span; 0: none', default: C.DEFAULT_TRACE_HEARTBEAT_EVERY }),
  logLevel: option({ key: 'logLevel', parse: logLevel, value: 'level', description: `log level: ${LOG_LEVELS.join(', ')}`, default: 'info' as LogLevel })
} as const

type Options = typeof CONTROLLER_OPTIONS
type ValueOf<O> = O extends Option<string, infer T> ? T : never

/** What a config file or the flags may give, parsed, before defaults are filled in. */
export type RawConfig = { -readonly [N in keyof Options as Options[N]['key']]?: ValueOf<Options[N]> }

export interface TlsFiles {
  /** PEM server certificate (chain). */
  cert: string
  /** PEM private key of `cert`. */
  key: string
  /** PEM CA certificate clients should trust. */
  ca: string
}

/** A resolved controller configuration: every option (see CONTROLLER_OPTIONS), TLS files given together. */
export type ControllerConfig = Required<Omit<RawConfig, 'tlsCert' | 'tlsKey' | 'tlsCa'>> & {
  /** Given certificate files instead of the TLS dir. */
  tlsFiles?: TlsFiles
}

const kebab = (s: string): string => s.replace(/[A-Z]/g, c => `-${c.toLowerCase()}`)
const kebabToCamel = (s: string): string => s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())
const entries = Object.entries(CONTROLLER_OPTIONS) as Array<[string, Option<string, unknown>]>

/**
 * Parses a loose object (a config file's JSON, or the flags) into a
 * RawConfig. Keys are option names in camelCase or kebab-case; an unknown
 * key is an error, so a typo never goes unnoticed.
 */
export function parseRawConfig (input: Record<string, unknown>, source: string): RawConfig {
  const out: Record<string, unknown> = {}
  for (const [rawKey, value] of Object.entries(input)) {
    if (value === undefined) continue
    const o = (CONTROLLER_OPTIONS as Record<string, Option<string, unknown>>)[kebabToCamel(rawKey)]
    if (o == null) throw new ConfigError(`${source}: unknown option "${rawKey}" (known: ${Object.keys(CONTROLLER_OPTIONS).join(', ')})`)
    out[o.key] = o.parse(value, `${source}: ${rawKey}`)
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
  const raw: Record<string, unknown> = Object.assign({}, ...layers)
  const cfg: Record<string, unknown> = {}
  for (const [name, o] of entries) {
    let v = raw[o.key]
    if (v !== undefined) v = o.parse(v, name)
    else v = typeof o.default === 'function' ? (o.default as (c: Resolving) => unknown)(cfg as Resolving) : o.default
    if (v !== undefined) cfg[o.key] = o.path !== true ? v : Array.isArray(v) ? v.map(x => resolve(x as string)) : resolve(v as string)
  }
  const { tlsCert, tlsKey, tlsCa, ...rest } = cfg
  const out = rest as ControllerConfig
  const tls = [tlsCert, tlsKey, tlsCa] as Array<string | undefined>
  if (tls.some(v => v != null)) {
    if (tls.some(v => v == null)) throw new ConfigError('tls-cert, tls-key and tls-ca must be given together')
    out.tlsFiles = { cert: tls[0]!, key: tls[1]!, ca: tls[2]! }
  }
  check(out)
  return out
}

/** The rules between options. */
function check (cfg: ControllerConfig): void {
  if (cfg.unhealthyAfterMs <= cfg.heartbeatIntervalMs) {
    throw new ConfigError(`unhealthy-after (${cfg.unhealthyAfterMs}ms) must be longer than heartbeat-interval (${cfg.heartbeatIntervalMs}ms)`)
  }
  if (cfg.staleAfterMs <= cfg.unhealthyAfterMs) {
    throw new ConfigError(`stale-after (${cfg.staleAfterMs}ms) must be longer than unhealthy-after (${cfg.unhealthyAfterMs}ms)`)
  }
  if (cfg.digestIntervalMs >= cfg.unhealthyAfterMs) {
    throw new ConfigError(`digest-interval (${cfg.digestIntervalMs}ms) must be shorter than unhealthy-after (${cfg.unhealthyAfterMs}ms), or peers would mark this controller's workers unhealthy between digests`)
  }
  if (cfg.digestKeepaliveMs < cfg.digestIntervalMs || cfg.digestKeepaliveMs >= cfg.unhealthyAfterMs) {
    throw new ConfigError(`digest-keepalive (${cfg.digestKeepaliveMs}ms) must be at least digest-interval (${cfg.digestIntervalMs}ms) and shorter than unhealthy-after (${cfg.unhealthyAfterMs}ms), or peers would take this controller for gone between keepalives`)
  }
  if (cfg.advertise.length > 0 && cfg.p2pPort === 0) throw new ConfigError('advertise needs a fixed p2p-port: peers are told the port along with the address')
  if (cfg.maxSyncBytes > 0xffffffff) throw new ConfigError(`max-sync-bytes (${cfg.maxSyncBytes}) must be below 4 GiB (the sync protocol's size field is 32 bits)`)
}

/** An option's default as help and docs show it. */
function defaultText (o: Option<string, unknown>): string | null {
  if (o.defaultText != null) return o.defaultText
  if (o.default === undefined) return null
  if (o.parse === duration) return formatDuration(o.default as number)
  return String(o.default)
}

/** The `capmesh controller` flags: `--kebab-name <value>`, description, default. */
export function controllerFlags (): Array<{ flags: string, description: string, repeatable: boolean }> {
  return entries.map(([name, o]) => {
    const d = defaultText(o)
    return { flags: `--${kebab(name)} <${o.value}>`, description: d == null ? o.description : `${o.description} (default ${d})`, repeatable: o.repeatable === true }
  })
}

/** The option table of docs/operations.md (Markdown), generated from CONTROLLER_OPTIONS. */
export function optionsMarkdown (): string {
  const rows = entries.map(([name, o]) => `| \`--${kebab(name)}\` | \`${name}\` | ${defaultText(o) == null ? '—' : `\`${defaultText(o)}\``} | ${o.description} |`)
  return ['| flag | config-file key | default | meaning |', '|---|---|---|---|', ...rows].join('\n')
}

/**
 * Preset for tests and in-process benchmarks: ephemeral ports, 200 ms
 * heartbeats, unhealthy after 600 ms, removed after 1.2 s, digests every
 * 100 ms, anti-entropy every 500 ms, re-dial every 250 ms, no load
 * shedding, quiet logs.
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
    // Tests share a busy machine and one event loop between controllers: no load shedding unless a test asks.
    maxEventLoopDelayMs: 0,
    logLevel: 'silent',
    ...overrides
  }
}
