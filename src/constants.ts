/**
 * Every default in one place. Each value says what it trades off; the
 * `local` preset in config.ts overrides only what tests and simulations need
 * to be fast.
 */

/** A controller id: letters, digits, `.`, `_`, `-`; at most 64, not starting with a symbol. */
export const CONTROLLER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** HTTPS bind address. Loopback by default: exposing a controller is a decision. */
export const DEFAULT_HOST = '127.0.0.1'
/** HTTPS port of the first controller (nodes/local uses 9000–9002). */
export const DEFAULT_HTTPS_PORT = 9000
/** libp2p TCP port (nodes/local uses 9100–9102). */
export const DEFAULT_P2P_PORT = 9100
/** Root of per-controller data dirs: `.capmesh/<id>`. */
export const DEFAULT_DATA_ROOT = '.capmesh'
/** The mesh key's file name in the TLS dir (the default `--mesh-key`). */
export const MESH_KEY_FILE = 'mesh.key'
/** The peer allow list's file name in the TLS dir (the default `--peer-allow`). */
export const PEER_ALLOW_FILE = 'peers.allow'
/** A silent peer is pinged; no answer within this long (or the unhealthy window, if longer) and its connection is closed (ms). */
export const SILENT_PING_TIMEOUT_MS = 2000
/** The controller's peer key (its libp2p identity) in its data dir. */
export const PEER_KEY_FILE = 'peer.key'
/** The registry's store (snapshot and update log) in a controller's data dir. */
export const REGISTRY_STORE_DIR = 'registry'

/** How often workers are expected to heartbeat (platform default). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 30_000
/** No heartbeat for this long: `unhealthy`, no longer routed to (platform default). */
export const DEFAULT_UNHEALTHY_AFTER_MS = 60_000
/** No heartbeat for this long: removed from the registry (platform default). */
export const DEFAULT_STALE_AFTER_MS = 120_000

/** Largest request body accepted on the worker/route endpoints. A registration with a few hundred capabilities fits. */
export const DEFAULT_BODY_LIMIT_BYTES = 256 * 1024
/**
 * Most registrations in one `POST /register/batch` (the whole body still within the body limit:
 * ~700 registrations of one small capability fit in the default). One batch is one registry
 * transaction, so this also bounds how long one request holds the event loop (~10 ms).
 */
export const MAX_REGISTER_BATCH = 1000
/** Registrations the agent's `registerBatch` sends per `/register/batch` request, and the most bytes it puts in one (below the default body limit). */
export const DEFAULT_AGENT_BATCH_SIZE = 200
export const DEFAULT_AGENT_BATCH_BYTES = 192 * 1024
/**
 * Largest state `/state/import` takes, in bytes of Yjs update (a binary
 * body; a JSON body may be that in base64, 4/3 of it). The same as
 * DEFAULT_MAX_SYNC_BYTES: what the mesh promises to carry (~800,000
 * workers; 100,000 workers of one capability are ~33 MB) must import too.
 */
export const DEFAULT_IMPORT_BODY_LIMIT_BYTES = 256 * 1024 * 1024
/** How long an `idempotency_key` keeps answering with the same worker. */
export const DEFAULT_IDEMPOTENCY_TTL_MS = 5 * 60_000
/** Most idempotency keys remembered at once; the oldest is forgotten first. */
export const DEFAULT_IDEMPOTENCY_MAX_KEYS = 100_000
/**
 * Requests a second one identity may make before 429s. Generous on purpose: a worker
 * heartbeats once per heartbeat interval, and a busy client may route thousands of times a
 * second; this stops a runaway caller from taking a controller's whole CPU (~20k requests a
 * second on 2 cores), it does not meter ordinary use.
 */
export const DEFAULT_RATE_LIMIT_PER_SECOND = 10_000
/** Callers whose rate-limit window is kept (least recently seen dropped first): @fastify/rate-limit's default. */
export const RATE_LIMIT_KEYS = 5000
/**
 * Shed new requests (503 + Retry-After) while the event loop is this late: a controller that
 * falls behind answers late everything it takes, heartbeats included, and late heartbeats make
 * agents fail over; shedding early tells them to wait instead.
 */
export const DEFAULT_MAX_EVENT_LOOP_DELAY_MS = 1000
/** Retry-After (seconds) of a request shed under pressure. */
export const DEFAULT_OVERLOAD_RETRY_AFTER_S = 2
/** `/workers` page size when the client gives no `limit`. */
export const DEFAULT_WORKERS_PAGE = 1000
/** Most workers `/workers` returns in one page. */
export const MAX_WORKERS_PAGE = 10_000

/**
 * Changes a controller keeps in memory for `/watch` and blocking `/workers` queries (a ring:
 * the oldest is forgotten first). A watcher that reconnects within this many changes resumes
 * where it stopped; one further behind gets a full snapshot first, and one that falls this far
 * behind while connected (it reads too slowly) is cut off. ~200 bytes each plus the worker
 * records they share with the registry: 10,000 cost a few MB.
 */
export const DEFAULT_WATCH_LOG_SIZE = 10_000
/**
 * Watchers (`/watch` streams and blocking `/workers` queries together) one controller serves at
 * once; past it, 503 + Retry-After. Each costs a TLS connection and up to `watch-buffer` bytes
 * (plus a snapshot while one is being sent).
 */
export const DEFAULT_MAX_WATCHERS = 1000
/**
 * Bytes a watcher's connection may hold unsent before the controller stops writing to it (it
 * catches up from the change log as it reads). Above the kernel's own socket buffers; a larger
 * value lets a slow reader fall further behind before it is cut off, at that much memory each.
 */
export const DEFAULT_WATCH_BUFFER_BYTES = 256 * 1024
/** A `: keepalive` comment goes to every watcher this often, so proxies and clients see a live stream. */
export const DEFAULT_WATCH_KEEPALIVE_MS = 15_000
/**
 * A watcher whose connection stays over `watch-buffer` for this many keepalive intervals in a
 * row (it does not read at all) is cut off, with an `overflow` event saying why.
 */
export const WATCH_STALLED_KEEPALIVES = 4
/** After its last (`overflow`) event, a cut-off watcher has this long to read it before its connection is destroyed. */
export const WATCH_CLOSE_GRACE_MS = 5000
/** Retry-After (seconds) of a watcher refused because the controller serves `max-watchers` already. */
export const WATCH_RETRY_AFTER_S = 5
/** A blocking `GET /workers?index=N` without `wait` waits at most this long (Consul waits 5 minutes; many HTTP clients give up sooner). */
export const DEFAULT_WATCH_WAIT_MS = 60_000
/** The longest `wait` a blocking `GET /workers` accepts; a longer one is a 400. */
export const MAX_WATCH_WAIT_MS = 5 * 60_000

/**
 * Rewrite the data dir's snapshot once the update log is larger than this
 * many bytes and larger than the last snapshot (amortised O(1) per write).
 */
export const DEFAULT_LOG_COMPACT_BYTES = 1024 * 1024
/** Rewrite the snapshot once the log outgrew it and no write came for this long (ms): writes come in bursts. */
export const SNAPSHOT_DELAY_MS = 5000
/** ... or this long after the log first outgrew it, whatever the writes do (bounds the log's size). */
export const SNAPSHOT_MAX_DELAY_MS = 30_000
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
/** Largest stored entry (its JSON text); a registration body is at most DEFAULT_BODY_LIMIT_BYTES. */
export const MAX_ENTRY_BYTES = 256 * 1024
export const MAX_CAPABILITIES_PER_WORKER = 256
export const MAX_ID_LENGTH = 256
export const MAX_URL_LENGTH = 2048
/**
 * Deepest nesting accepted in any JSON a client or peer sends (schemas in a
 * capability included). Yjs and JSON serialisation recurse: a 5,000-deep
 * document would overflow the stack later, far from where it came in.
 */
export const MAX_JSON_DEPTH = 64

/** Anti-entropy with one random peer this often; also runs on every new connection. */
export const DEFAULT_SYNC_INTERVAL_MS = 5000
/** Re-dial missing peers this often (capped back-off: at most 4x). Bounds how fast a healed partition reconnects. */
export const DEFAULT_RECONNECT_INTERVAL_MS = 1000
/**
 * gossipsub mesh degree and gossip fan-out. Controllers keep a full mesh (each dials every other
 * it hears of) and flood-publish, so a message's first copy reaches every peer in one hop. Mesh
 * forwarding and IHAVE gossip only cover a link that is missing for a moment (a controller
 * joining, a link being re-dialled), which anti-entropy covers too: kept to a minimum. With
 * gossipsub's defaults (D = 6) every message reached each controller ~7 times, at ~0.2-0.5 ms of
 * CPU per copy.
 */
export const GOSSIP_MESH_DEGREE = { D: 1, Dlo: 1, Dhi: 2, Dout: 0, Dscore: 0, Dlazy: 2, gossipFactor: 0, idontwantMinDataSize: 16 * 1024 }
/**
 * Inbound connections libp2p accepts per second from one host, and in the handshake at once
 * (libp2p: 5 and 10). After a heal every controller of the other side dials at once (16 at
 * N = 32), and controllers often share a host: most were refused, dialled again, refused again.
 */
export const INBOUND_CONNECTIONS_PER_SECOND = 256
/**
 * How often libp2p pings each connection to find dead links (its default, 10 s, was ~100 pings a
 * second at 32 controllers). Controllers already hear from each other; a minute is soon enough.
 */
export const CONNECTION_PING_INTERVAL_MS = 60_000
/**
 * Most keys a mesh key file (the key ring) may hold. Every accepted key costs each new
 * connection one trial decryption of 20 bytes (a few µs); a rotation needs two.
 */
export const MAX_MESH_KEYS = 8
/**
 * A controller looks at its mesh key file and its peer allow list this often (a `stat`, and a
 * read only when the file changed): a key rotation or an allow-list edit takes effect without
 * a signal (SIGHUP reloads at once). A peer the allow list does not know is also looked up
 * again at once, on the file as it is now, before it is refused.
 */
export const MESH_FILES_POLL_MS = 2000
/** A refused peer (not in the allow list) is logged at most once per this window; the rest are counted. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000
/** Refused peers remembered for /mesh (the least recently refused is forgotten first). */
export const MAX_REFUSED_PEERS = 1024
/** The mesh-key nonce exchange at the start of every connection must finish within this (@libp2p/pnet: 1 s; a loaded machine mid-heal is slower). */
export const MESH_KEY_HANDSHAKE_TIMEOUT_MS = 5_000
/** Concurrent inbound sync streams per connection (libp2p caps streams per protocol). */
export const SYNC_MAX_INBOUND_STREAMS = 16
/** Mean pause before asking a BUSY peer for an exchange again; it grows with each BUSY answer. */
export const SYNC_BUSY_PAUSE_MS = 40
/**
 * An exchange that moved no bytes for this long no longer makes its controller busy (a stalled
 * one). One that is still moving a large delta stays busy however long it takes: a second
 * exchange meanwhile would pull the same delta again.
 */
export const SYNC_BUSY_WINDOW_MS = 3000
/** BUSY answers after which a wanted exchange is left to the periodic one. */
export const SYNC_MAX_BUSY_RETRIES = 8
/**
 * A periodic exchange goes to a peer whose registry hash (from its digests, or from the last
 * exchange) differs from this controller's; when every peer agrees, only every this many
 * periods, with a random one: the net for a lost digest. At rest a mesh then exchanges almost
 * nothing.
 */
export const SYNC_IDLE_EVERY = 10
/** Most controller addresses one digest may introduce (and so the largest mesh a newcomer learns from one digest). */
export const MAX_INTRODUCED_PEERS = 256
/**
 * While the controller a bootstrap name led to stays connected, the name is looked up again this
 * often: if it now resolves elsewhere (the name moved to another controller), that is dialled.
 * Unconnected bootstrap names are looked up on every dial anyway. A lookup is cheap, but in
 * Kubernetes each one can be several queries to the cluster DNS (search domains).
 */
export const BOOTSTRAP_RECHECK_INTERVAL_MS = 30_000
/** Failed dials after which a controller known only from another's digest is forgotten. */
export const MAX_INTRODUCED_DIALS = 5
/** Largest gossip message; bigger updates (a compaction of a large segment) travel by sync instead. */
export const DEFAULT_MAX_GOSSIP_BYTES = 1024 * 1024
/**
 * Largest anti-entropy delta a controller accepts from a peer (`--max-sync-bytes`): a whole
 * registry must fit, since a controller that joins late or lost its data dir needs all of it
 * (100,000 workers of one capability each encode to ~32 MB). A larger delta is refused before
 * it is sent, loudly (docs/internals.md, "Size limits on the p2p path").
 */
export const DEFAULT_MAX_SYNC_BYTES = 256 * 1024 * 1024
/**
 * A sync delta travels in frames of at most this size: below @libp2p/utils' 4 MiB default
 * read buffer, and small enough that neither side holds much beyond the delta itself.
 */
export const SYNC_CHUNK_BYTES = 1024 * 1024
/**
 * Deltas of this size or more travel compressed on /capmesh/sync/3.1.0 (raw DEFLATE, level 1): a
 * registry's delta shrinks ~25-fold, and every byte not sent is a byte the mesh-key cipher, noise
 * and yamux do not process at both ends. Below it, compressing saves less than it costs.
 */
export const SYNC_DEFLATE_MIN_BYTES = 64 * 1024
/** A sync exchange whose reads or writes make no progress for this long is abandoned (and retried later). */
export const DEFAULT_SYNC_TIMEOUT_MS = 15_000
/**
 * Extra wait (ms per MiB sent) for the peer's answer after sending it a delta: it checks and
 * applies the delta first (~50 ms per MiB measured; this allows 10x that on a loaded machine).
 */
export const SYNC_APPLY_MS_PER_MIB = 500
/** After a failed exchange with a peer, the next waits this long, doubling per failure in a row. */
export const SYNC_FAILURE_BACKOFF_MS = 1000
/** ... up to this; a delta too large for the peer waits this long at once (retrying will not shrink it). */
export const SYNC_FAILURE_BACKOFF_MAX_MS = 60_000
/** Failed exchanges in a row with a connected peer after which this controller reports itself behind. */
export const SYNC_BEHIND_AFTER_FAILURES = 3
/** A sync failure is logged at most once per (peer, reason) in this window; the rest are counted. */
export const SYNC_FAILURE_LOG_INTERVAL_MS = 60_000
/**
 * A controller looks at its liveness digest this often and publishes it when
 * it changed: bounds how stale a remote worker's health can be. An unchanged
 * digest is not sent again (every message costs each peer ~0.2 ms of CPU in
 * the libp2p stack: at 32 controllers, digests every second kept two cores
 * busy at rest), except as a keepalive.
 */
export const DEFAULT_DIGEST_INTERVAL_MS = 1000
/**
 * A digest larger than this (workers listed as not healthy, or with a load) is split into
 * parts of about this size, each its own gossip message (below DEFAULT_MAX_GOSSIP_BYTES with
 * room to spare: ~1,000 listed workers of the longest ids, ~10,000 of typical ones per part).
 */
export const DIGEST_PART_BYTES = 256 * 1024
/** Most parts one digest is split into (a power of two): 256 MiB of digest, far beyond any registry. */
export const MAX_DIGEST_PARTS = 1024
/** Keepalive digests per unhealthy window: one lost keepalive never makes a live controller look silent. */
export const DIGEST_KEEPALIVES_PER_UNHEALTHY_WINDOW = 4

/**
 * Self-preservation (as Netflix Eureka): if more than this fraction of the
 * workers a controller tracks are silent at once, it assumes it is cut off
 * and stops evicting them (they stay listed, unhealthy, not routed to).
 */
export const DEFAULT_SELF_PRESERVATION_WORKER_RATIO = 0.15
/** ... the same when it loses contact with more than this fraction of its peers. */
export const DEFAULT_SELF_PRESERVATION_PEER_RATIO = 0.5
/** Self-preservation needs at least this many tracked workers (tiny registries would otherwise never evict). */
export const DEFAULT_SELF_PRESERVATION_MIN_WORKERS = 5
/** Evict anyway after this many stale windows in self-preservation: silent workers re-register when they return. */
export const DEFAULT_SELF_PRESERVATION_MAX_WINDOWS = 5

/** Agent: registration retries per controller before moving to the next (platform default). */
export const DEFAULT_AGENT_RETRIES = 3
/** Agent: first retry delay; doubles per retry, with jitter (platform default). */
export const DEFAULT_AGENT_RETRY_BASE_MS = 100
/** Agent: per-attempt timeout of a registration (platform default). */
export const DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS = 30_000
/** Agent: consecutive heartbeat failures before failing over. Bounds failover time at threshold x interval. */
export const DEFAULT_AGENT_FAILURE_THRESHOLD = 2
/** Agent: how long a failed controller is skipped (unless every other one failed too). */
export const DEFAULT_AGENT_QUARANTINE_MS = 30_000
/** Agent: /health round trips per controller when measuring closeness (median taken). */
export const DEFAULT_AGENT_PROBES = 3
/** Agent: re-measure closeness this often; 0 disables. */
export const DEFAULT_AGENT_REPROBE_MS = 60_000
/** Agent: move only to a controller this much faster (fraction of the current RTT) ... */
export const DEFAULT_AGENT_HYSTERESIS_RATIO = 0.5
/** ... and by at least this many ms, so loopback jitter never causes a move. */
export const DEFAULT_AGENT_HYSTERESIS_MIN_MS = 5

/**
 * Route client (capmesh/client), empty-push protection: an update that would leave a capability
 * with fewer routable workers than this is held (the client keeps routing to the workers it
 * had) until a second controller confirms it or a full snapshot arrives. 1: only a drop to
 * zero is held, the case Nacos users asked for after outages pushed empty lists; 0: nothing is.
 */
export const DEFAULT_ROUTE_CLIENT_HOLD_BELOW = 1
/** Route client: while an update is held, ask another controller to confirm it this often (the first time at once). */
export const DEFAULT_ROUTE_CLIENT_CONFIRM_INTERVAL_MS = 5000
/** Route client: a stream that hears nothing, not even a keepalive (every 15 s by default), for this long is reopened. */
export const DEFAULT_ROUTE_CLIENT_IDLE_TIMEOUT_MS = 45_000
/** Route client: the first wait before reopening a stream that failed; doubles per failure in a row, with jitter ... */
export const DEFAULT_ROUTE_CLIENT_RECONNECT_BASE_MS = 100
/** ... up to this. */
export const DEFAULT_ROUTE_CLIENT_RECONNECT_MAX_MS = 5000
/** Route client: per-request timeout (connecting and the headers of a stream; a confirmation's whole answer). */
export const DEFAULT_ROUTE_CLIENT_TIMEOUT_MS = 10_000

/**
 * CLI processes: how long a clean stop (on SIGTERM / Ctrl-C) may take before
 * the process exits anyway (code 1). A controller's stop closes its HTTPS
 * server, its libp2p node and its data dir; should any of them hang (a peer
 * that never finishes closing), the process must still go, as a supervisor
 * (or a harness that died) expects.
 */
export const STOP_GRACE_MS = 15_000

/** Identities (identity/, tls/): the roles a caller can hold. What each may do is the API's table. */
export const IDENTITY_ROLES = ['worker', 'client', 'operator', 'metrics'] as const
/** SPIFFE trust domain of capmesh identities (`spiffe://capmesh.local/worker/w1`) unless configured. */
export const DEFAULT_TRUST_DOMAIN = 'capmesh.local'
/** A trust domain: SPIFFE's characters (lower-case letters, digits, `.`, `-`, `_`). */
export const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/
/**
 * Names capmesh itself issues certificates for (`capmesh certs issue`):
 * SPIFFE's path-segment characters, starting with a letter or digit, so the
 * name is also a safe file name (`NAME.pem`). Names in certificates and
 * tokens from other issuers may be anything a worker id may be, minus
 * `/ % ? #` (identity/identity.ts).
 */
export const ISSUED_IDENTITY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
/**
 * Lifetime of an identity certificate (`capmesh certs issue --days`). Short
 * lifetimes limit what a stolen key is worth but need re-issuing; capmesh
 * does not rotate certificates itself yet, so a year.
 */
export const DEFAULT_IDENTITY_VALIDITY_DAYS = 365
/** Largest bearer token accepted (bytes): a token is parsed only below it. */
export const DEFAULT_TOKEN_MAX_BYTES = 8192
/** Clock skew allowed on a token's `exp` and `nbf` (seconds). */
export const DEFAULT_TOKEN_CLOCK_TOLERANCE_SEC = 30
/**
 * Verified tokens remembered (until their `exp`) so that a worker
 * heartbeating every second costs one signature check per token, not per
 * request; the least recently used is forgotten first.
 */
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000
/** Route-policy decisions remembered per (identity, capability); the oldest is forgotten first. */
export const DEFAULT_POLICY_CACHE_SIZE = 10_000

// Tracing (OpenTelemetry; off unless --otlp-endpoint or OTEL_* asks for it)
/** One heartbeat in this many gets a span: a worker heartbeats every 30 s, and a span each would outnumber everything else traced. */
export const DEFAULT_TRACE_HEARTBEAT_EVERY = 100
/** Trace contexts one gossip message carries at most (a tick's batch of traced writes); 25 bytes each. */
export const MAX_GOSSIP_TRACE_CONTEXTS = 16
/** Contexts of writes heard of but not applied (out of order, or announced by a sync hint) kept for the next anti-entropy apply to link to. */
export const MAX_PENDING_SYNC_LINKS = 64
/** How long such a context waits for an anti-entropy apply before it is forgotten (ms). */
export const PENDING_SYNC_LINK_TTL_MS = 60_000
/** Worker ids a span lists (`capmesh.worker_ids`); the count is always there. */
export const MAX_SPAN_WORKER_IDS = 32
/** service.name of a controller's spans (OTEL_SERVICE_NAME overrides it). */
export const TRACE_SERVICE_CONTROLLER = 'capmesh-controller'
/** service.name of the CLI's spans. */
export const TRACE_SERVICE_CLI = 'capmesh-cli'
/** service.name of `capmesh worker`'s spans (the demo worker and its agent). */
export const TRACE_SERVICE_WORKER = 'capmesh-worker'
/** Attribute names on capmesh's spans (one place, so that the controller, gossip and the agent agree). */
export const SPAN_ATTR = {
  /** The controller that made the span. */
  controllerId: 'capmesh.controller.id',
  /** The controller whose gossip message an apply span applies. */
  from: 'capmesh.from',
  /** The worker a request names (`worker_id` of its body). */
  workerId: 'capmesh.worker_id',
  /** Workers the registry change made under the span touched (at most MAX_SPAN_WORKER_IDS). */
  workerIds: 'capmesh.worker_ids',
  /** How many workers that change touched. */
  workersChanged: 'capmesh.workers_changed',
  /** The capmesh error code of a refused request. */
  error: 'capmesh.error',
  /** Traced writes one gossip message carried (one apply span each). */
  batchTraces: 'capmesh.batch.traces',
  /** Size of an applied update (bytes). */
  updateBytes: 'capmesh.update.bytes',
  /** Whether an anti-entropy apply changed the registry. */
  changed: 'capmesh.changed'
} as const

/**
 * Updates larger than this (a catch-up, an import) are applied in slices of
 * APPLY_SLICE_STRUCTS structs, yielding to the event loop between them, so
 * the controller keeps answering while it applies (registry/slices.ts).
 */
export const APPLY_IN_SLICES_BYTES = 1024 * 1024
/** Structs per slice: ~2,000 workers, a few tens of ms of apply each. */
export const APPLY_SLICE_STRUCTS = 4096
