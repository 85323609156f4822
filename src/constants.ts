/**
 * Every default in one place. Each value says what it trades off; the
 * `local` preset in config.ts overrides only what tests and simulations need
 * to be fast.
 */

/** HTTPS bind address. Loopback by default: exposing a controller is a decision. */
export const DEFAULT_HOST = '127.0.0.1'
/** HTTPS port of the first controller (nodes/local uses 9000–9002). */
export const DEFAULT_HTTPS_PORT = 9000
/** libp2p TCP port (nodes/local uses 9100–9102). */
export const DEFAULT_P2P_PORT = 9100
/** Root of per-controller data dirs: `.capmesh/<id>`. */
export const DEFAULT_DATA_ROOT = '.capmesh'

/** How often workers are expected to heartbeat (platform default). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 30_000
/** No heartbeat for this long: `unhealthy`, no longer routed to (platform default). */
export const DEFAULT_UNHEALTHY_AFTER_MS = 60_000
/** No heartbeat for this long: removed from the registry (platform default). */
export const DEFAULT_STALE_AFTER_MS = 120_000

/** Largest request body accepted on the worker/route endpoints. A registration with a few hundred capabilities fits. */
export const DEFAULT_BODY_LIMIT_BYTES = 256 * 1024
/** Largest `/state/import` body (a whole registry, base64). 100k workers encode to ~19 MB. */
export const DEFAULT_IMPORT_BODY_LIMIT_BYTES = 64 * 1024 * 1024
/** How long an `idempotency_key` keeps answering with the same worker. */
export const DEFAULT_IDEMPOTENCY_TTL_MS = 5 * 60_000
/** Most idempotency keys remembered at once; the oldest is forgotten first. */
export const DEFAULT_IDEMPOTENCY_MAX_KEYS = 100_000
/** `/workers` page size when the client gives no `limit`. */
export const DEFAULT_WORKERS_PAGE = 1000
/** Most workers `/workers` returns in one page. */
export const MAX_WORKERS_PAGE = 10_000

/**
 * Rewrite the data dir's snapshot once the update log is larger than this
 * many bytes and larger than the last snapshot (amortised O(1) per write).
 */
export const DEFAULT_LOG_COMPACT_BYTES = 1024 * 1024
/** fsync the update log on every write. Off: survives kill -9 (the OS has the bytes), not power loss. */
export const DEFAULT_FSYNC = false

/**
 * Own registry segment is rebuilt in a new generation once its dead entries
 * (deleted keys, overwrites) exceed this fraction of its live entries; keeps
 * the encoded registry within ~1.5x of a fresh encoding under any churn.
 */
export const DEFAULT_SEGMENT_GARBAGE_RATIO = 0.5
/** ... but never for fewer dead entries than this (small registries are cheap anyway). */
export const DEFAULT_SEGMENT_MIN_GARBAGE = 256
/** A non-owner deregistration leaves a tombstone this long (then drops it at compaction). */
export const DEFAULT_TOMBSTONE_TTL_MS = 10 * 60_000

/** Limits on what a registration may carry (validation). */
export const MAX_CAPABILITIES_PER_WORKER = 256
export const MAX_ID_LENGTH = 256
export const MAX_URL_LENGTH = 2048
