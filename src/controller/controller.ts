/**
 * The composition root: the one place that builds a running controller.
 * It claims the data dir and replays the registry from it, prepares TLS and
 * the mesh key, starts the mesh (gossip) around the core's replica and
 * membership, serves the API and the metrics over HTTPS, and runs the
 * timers. Everything else sees the controller through `view`.
 *
 * Start-up order matters: the data dir is claimed, the registry is replayed
 * from disk (restored workers are `pending`), and only then does the HTTPS
 * listener open, so no request ever sees a half-loaded registry.
 *
 * Files an operator changes while it runs — the route policy, the peer
 * allow list, the mesh key ring — are re-read by `reload()` (SIGHUP); the
 * last two also when they change (a stat every MESH_FILES_POLL_MS), so a
 * key rotation or a new controller needs no signal. A file that does not
 * parse leaves what is in force and is logged, once per version.
 *
 * Tracing (tracing/, off unless `--otlp-endpoint` or OTEL_* ask for it) is
 * started once TLS is ready (an https collector may be signed by the mesh
 * CA); its tracer goes to the API and the mesh, and it is flushed and shut
 * down last on stop.
 */
import { EventEmitter } from 'node:events'
import { networkInterfaces } from 'node:os'
import { trace } from '@opentelemetry/api'
import { pino, type Logger } from 'pino'
import { buildApi, type Api } from '../api/index.ts'
import type { ControllerConfig } from '../config.ts'
import { ControllerCore, controllerView, type ControllerView, type NodeFacts, type ViewEvents } from '../core/index.ts'
import { Admission, ensureMeshKey, isWildcard, loadOrCreatePeerKey, Mesh, meshKeyId, PeerSeals, readMeshKeys, type NetworkFaults, type PeerView, type Resolve } from '../gossip/index.ts'
import {
  createTokenVerifier, defaultRoutePolicy, loadPolicy, loadSubjectMap, loadTokenKeys, policyWithDenials, type RoutePolicy
} from '../identity/index.ts'
import { LIVENESS_CHANGES_TOPIC, LIVENESS_TOPIC, type Digest, type WordChanges } from '../membership/index.ts'
import { controllerMetrics, type ControllerMetrics } from '../metrics/index.ts'
import { ensureTls, loadTlsFiles, uncovered, type TlsMaterial } from '../tls/index.ts'
import type { PeerStatus, SyncHealth } from '../wire/index.ts'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEFAULT_OVERLOAD_RETRY_AFTER_S, MAX_SPAN_WORKER_IDS, MESH_FILES_POLL_MS, PEER_KEY_FILE, REGISTRY_STORE_DIR, SILENT_PING_TIMEOUT_MS, SPAN_ATTR, TRACE_SERVICE_CONTROLLER } from '../constants.ts'
import { TlsError } from '../errors.ts'
import type { WorkerChange } from '../registry/index.ts'
import { readSnapshotAhead, type SnapshotRead } from '../registry/read-ahead.ts'
import { startTracing, type Tracing } from '../tracing/index.ts'
import { fileStamp } from '../utils/files.ts'
import { claimDataDir, Persistence, releaseDataDir, snapshotMacKey } from './persistence.ts'

export interface ControllerInit {
  config: ControllerConfig
  /** Logger to use instead of one made from `config.logLevel`. */
  logger?: Logger
  /** Simulated partitions, loss and delay for tests and simulations (gossip/faults.ts). @default none */
  faults?: NetworkFaults
  /** Looks up the DNS names of bootstrap and peer addresses (tests give a map). @default the system's resolver */
  resolve?: Resolve
  /**
   * `false`: write no seals and check none (registry/seal.ts). Only for
   * benchmarks measuring what seals cost, with every controller of the mesh
   * alike; never in a deployment. @default seals on
   */
  seals?: false
  /**
   * The data dir's snapshot, its read begun before the controller's modules
   * loaded (`capmesh controller` does: readSnapshotAhead). Used if the file
   * is still the one read. @default read in start(), alongside the TLS and
   * key files
   */
  snapshotAhead?: Promise<SnapshotRead | null>
}

export class Controller {
  readonly config: ControllerConfig
  /** The in-memory core (for tests; other code uses `view`). */
  readonly core: ControllerCore
  /** What the API, metrics, CLI and simulations see. */
  readonly view: ControllerView
  readonly log: Logger
  private readonly events = new EventEmitter<ViewEvents>()
  private readonly faults: NetworkFaults | undefined
  private readonly resolve: Resolve | undefined
  private snapshotAhead: Promise<SnapshotRead | null> | undefined
  /** Signs this controller's segments with its peer key (loaded at start) and names each owner's signer. */
  readonly seals: PeerSeals
  private persistence: Persistence | null = null
  private mesh: Mesh | null = null
  private app: Api | null = null
  private tls: TlsMaterial | null = null
  /** The mesh keys in force (the primary first), and the key file's stamp when last read. */
  private meshKeys: Uint8Array[] = []
  private meshKeysStamp: string | null = null
  /** The peer allow list in force. */
  private admission: Admission | null = null
  private metrics: ControllerMetrics | null = null
  private tracing: Tracing | null = null
  private timers: NodeJS.Timeout[] = []
  private restored = 0
  /** The route policy in force (the file's, with --deny-identity), replaced on reloadPolicy(). */
  private policy: RoutePolicy = defaultRoutePolicy()

  constructor (init: ControllerInit) {
    const cfg = this.config = init.config
    this.log = init.logger ?? pino({ level: cfg.logLevel, base: { controller: cfg.id } })
    this.faults = init.faults
    this.resolve = init.resolve
    this.snapshotAhead = init.snapshotAhead
    this.seals = new PeerSeals(owner => owner === cfg.id ? this.seals.self : this.admission?.recheckController(owner))
    this.core = new ControllerCore({
      seals: init.seals === false ? false : this.seals,
      controllerId: cfg.id,
      heartbeatIntervalMs: cfg.heartbeatIntervalMs,
      unhealthyAfterMs: cfg.unhealthyAfterMs,
      staleAfterMs: cfg.staleAfterMs,
      digestIntervalMs: cfg.digestIntervalMs,
      digestKeepaliveMs: cfg.digestKeepaliveMs,
      idempotencyTtlMs: cfg.idempotencyTtlMs,
      watchLogSize: cfg.watchLogSize
    })
    this.view = controllerView(this.core, this.facts(), this.events)
  }

  /** `https://host:port` once started. */
  get url (): string {
    const addr = this.app?.server.address()
    if (addr == null || typeof addr === 'string') throw new Error('controller is not listening')
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
    return `https://${host}:${addr.port}`
  }

  get port (): number {
    const addr = this.app?.server.address()
    return addr != null && typeof addr !== 'string' ? addr.port : 0
  }

  /** PEM of the CA clients should trust, and where it is on disk. */
  get ca (): { pem: string, path: string } {
    if (this.tls == null) throw new Error('controller is not started')
    return { pem: this.tls.ca, path: this.tls.caPath }
  }

  /** The libp2p side (peer id, addresses, exchanges), for tests and benchmarks. */
  get p2p (): Mesh {
    if (this.mesh == null) throw new Error('controller is not started')
    return this.mesh
  }

  async start (): Promise<this> {
    const cfg = this.config
    const core = this.core
    // Read off the main thread while the TLS and key files are prepared (FileStore.load checks it is still the file).
    let snapshotAhead: Promise<SnapshotRead | null> | null = this.snapshotAhead ?? readSnapshotAhead(join(cfg.dataDir, REGISTRY_STORE_DIR))
    this.snapshotAhead = undefined
    claimDataDir(cfg.dataDir)
    this.tls = cfg.tlsFiles != null ? loadTlsFiles(cfg.tlsFiles) : await ensureTls({ dir: cfg.tlsDir, hosts: certificateHosts(cfg.host, cfg.advertise) })
    if (this.tls.createdCa) this.log.info({ ca: this.tls.caPath }, 'created a local development CA')
    const missing = uncovered(this.tls.cert, cfg.advertise)
    if (missing.length > 0) this.log.warn({ cert: this.tls.certPath, missing }, `the TLS certificate does not cover ${missing.join(', ')}: clients reaching this controller by ${missing.length > 1 ? 'those' : 'that'} will fail to verify it`)
    this.meshKeysStamp = fileStamp(cfg.meshKey)
    this.tracing = await startTracing({
      serviceName: TRACE_SERVICE_CONTROLLER,
      instanceId: cfg.id,
      attributes: { [SPAN_ATTR.controllerId]: cfg.id },
      endpoint: cfg.otlpEndpoint,
      ca: [this.tls.ca],
      onExportFailure: (err, info) => { this.log.warn({ err: err.message, ...info }, 'could not export spans to the OTLP collector (logged once a minute)') }
    })
    if (this.tracing != null) {
      this.log.info({ exporting: this.tracing.exporting, heartbeats: cfg.traceHeartbeats }, 'tracing on')
      core.registry.on('change', annotateSpan)
    }
    const meshKey = ensureMeshKey(cfg.meshKey)
    this.meshKeys = meshKey.keys
    if (meshKey.created) this.log.info({ meshKey: cfg.meshKey }, 'created a mesh key: every controller of this mesh needs a copy of it')
    // A bad allow list stops the start, naming file:line. A missing one admits nobody (the mesh says so once started).
    const admission = this.admission = new Admission({ file: cfg.peerAllow })
    admission.load()
    // A development TLS dir (it holds the CA key: `npm start`, `capmesh local`, tests, simulations): each
    // controller adds itself to the allow list. In a deployed one the operator keeps the list.
    const admitSelf = cfg.tlsFiles == null && existsSync(join(cfg.tlsDir, 'ca-key.pem'))
    admission.on('change', ({ added, removed }) => {
      this.log.info({ file: admission.file, added, removed, controllers: admission.size }, `peer allow list changed: ${added.length} peers admitted, ${removed.length} removed`)
      // Entries sealed by a key no longer admitted for their owner (a controller removed, or one that came back with a new peer id) are not routed to.
      const dropped = core.registry.dropUnadmitted()
      if (dropped > 0) this.log.info({ segments: dropped }, `dropped ${dropped} segments sealed by keys the allow list no longer admits for their owner`)
    })
    // The peer key and the allow list before the data dir: replaying it checks seals, and new writes are sealed.
    const peerKey = await loadOrCreatePeerKey(join(cfg.dataDir, PEER_KEY_FILE))
    this.seals.use(peerKey)
    const refusedAtLoad: Array<'unsigned' | 'malformed'> = []
    const onRefused = (origin: string, unsigned: boolean): void => { if (origin === 'load') refusedAtLoad.push(unsigned ? 'unsigned' : 'malformed') }
    core.on('refused', onRefused)
    this.persistence = new Persistence({ dir: cfg.dataDir, fsync: cfg.fsync, registry: core.registry, log: this.log, macKey: snapshotMacKey(peerKey.raw) })
    this.restored = this.persistence.load(await snapshotAhead)
    snapshotAhead = null // its tens of MB go with it
    core.off('refused', onRefused)
    this.logEvents()

    const membership = core.membership
    const mesh = this.mesh = new Mesh({
      controllerId: cfg.id,
      replica: core.replica,
      dataDir: cfg.dataDir,
      privateKey: peerKey,
      meshKeys: meshKey.keys,
      admission,
      admitSelf,
      host: cfg.host,
      port: cfg.p2pPort,
      advertise: cfg.advertise,
      bootstrap: cfg.bootstrap,
      resolve: this.resolve,
      syncIntervalMs: cfg.syncIntervalMs,
      maxSyncBytes: cfg.maxSyncBytes,
      reconnectIntervalMs: cfg.reconnectIntervalMs,
      registryHash: () => core.registryHash,
      peerHash: peerId => membership.hashOf(peerId),
      topics: {
        [LIVENESS_TOPIC]: {
          check: payload => membership.decode(payload),
          deliver: (d: Digest, from) => { membership.receive(from.controllerId, from.peerId, d) }
        },
        [LIVENESS_CHANGES_TOPIC]: {
          check: payload => membership.decodeChanges(payload),
          deliver: (c: WordChanges, from) => { membership.receiveChanges(from.controllerId, from.peerId, c) }
        }
      },
      faults: this.faults,
      tracer: this.tracing?.tracer,
      log: this.log.child({ component: 'mesh' })
    })
    mesh.on('heard', (id, peerId) => { membership.heard(id, peerId) })
    mesh.on('sync', r => {
      membership.synced(r.peerController)
      this.events.emit('sync', { ok: true, bytesReceived: r.bytesReceived })
    })
    mesh.on('sync:failed', (_peer, reason) => { this.events.emit('sync', { ok: false, reason }) })
    mesh.on('gossip', (topic, result) => { this.events.emit('gossip', topic, result) })
    mesh.on('refused', (_peer, _address, reason) => { this.events.emit('refused', reason) })
    mesh.on('meshkey:mismatch', () => { this.events.emit('meshKeyMismatch') })
    mesh.on('peer:connect', id => {
      this.log.debug({ peer: id }, 'peer connected')
      membership.connected(id)
    })
    membership.attach({
      publish: payload => { mesh.publish(LIVENESS_TOPIC, payload) },
      publishChanges: payload => { mesh.publish(LIVENESS_CHANGES_TOPIC, payload) },
      changesUnderstood: () => mesh.subscribedToBoth(LIVENESS_TOPIC, LIVENESS_CHANGES_TOPIC),
      reachable: () => mesh.subscribers(LIVENESS_TOPIC) > 0,
      localAddrs: () => mesh.multiaddrs,
      introductions: () => mesh.introductions(),
      learnAddrs: (peerId, addrs) => { mesh.learnAddrs(peerId, addrs) },
      learnIntroduced: addrs => { mesh.learnIntroduced(addrs) }
    })
    // A member gone silent: its connection may be black-holed, holding stale messages (Mesh.checkSilent).
    core.on('member', (id, _from, to) => {
      const peer = to === 'silent' ? membership.get(id)?.peerId : null
      if (peer != null) mesh.checkSilent(peer, Math.max(SILENT_PING_TIMEOUT_MS, cfg.unhealthyAfterMs))
    })
    this.metrics = controllerMetrics({ view: this.view, info: { controller_id: cfg.id, mesh_key_id: meshKeyId(meshKey.key) } })
    // Refusals while replaying the data dir happened before there were metrics to count them.
    for (const kind of refusedAtLoad) this.events.emit('dataRefused', 'load', kind)
    // Identity: read every file now, so a bad one stops the start with its name.
    this.policy = this.loadPolicy()
    const verifyToken = cfg.tokenKey.length > 0 || cfg.jwks != null
      ? createTokenVerifier({ trustDomain: cfg.trustDomain, keys: loadTokenKeys(cfg.tokenKey), jwksFile: cfg.jwks })
      : undefined
    const subjectMap = cfg.subjectMap != null ? loadSubjectMap(cfg.subjectMap, cfg.trustDomain) : undefined
    if (cfg.auth === 'off') this.log.warn('auth is off: every caller may register, move and remove any worker, read and replace the registry (--auth required to ask who is calling)')
    await mesh.start()

    const policy = { allowsRoute: (...a: Parameters<RoutePolicy['allowsRoute']>) => this.policy.allowsRoute(...a), denies: (id: string) => this.policy.denies(id) }
    this.app = await buildApi({
      view: this.view,
      tls: { cert: this.tls.cert, key: this.tls.key, clientCas: [this.tls.ca, ...cfg.clientCa.map(f => readPem(f))] },
      auth: { mode: cfg.auth, trustDomain: cfg.trustDomain, subjectMap, verifyToken },
      policy,
      healthOpen: cfg.healthAuth === 'open',
      limits: { ratePerSecond: cfg.rateLimit, maxEventLoopDelayMs: cfg.maxEventLoopDelayMs, maxHeapBytes: cfg.maxHeapBytes, retryAfterSeconds: DEFAULT_OVERLOAD_RETRY_AFTER_S },
      bodyLimit: cfg.bodyLimit,
      importBodyLimit: cfg.importBodyLimit,
      metrics: this.metrics,
      watch: { maxWatchers: cfg.maxWatchers, bufferBytes: cfg.watchBufferBytes, keepaliveMs: cfg.watchKeepaliveMs },
      logger: this.log.child({ component: 'api' }, { level: cfg.logLevel === 'debug' || cfg.logLevel === 'trace' ? cfg.logLevel : 'warn' }),
      audit: this.log.child({ component: 'audit' }),
      tracing: this.tracing == null ? undefined : { tracer: this.tracing.tracer, propagator: this.tracing.propagator, heartbeatEvery: cfg.traceHeartbeats, controllerId: cfg.id }
    })
    await this.app.listen({ host: cfg.host, port: cfg.httpsPort })

    const sweepEvery = Math.min(1000, Math.max(20, Math.floor(cfg.unhealthyAfterMs / 10)))
    this.timers.push(setInterval(() => { core.sweep() }, sweepEvery))
    this.timers.push(setInterval(() => { core.tick() }, cfg.digestIntervalMs))
    this.timers.push(setInterval(() => { this.reloadChangedFiles() }, MESH_FILES_POLL_MS))
    for (const t of this.timers) t.unref()
    if (isWildcard(cfg.host) && cfg.advertise.length === 0) {
      this.log.warn({ host: cfg.host, announced: mesh.multiaddrs }, `bound to ${cfg.host} without --advertise: peers will see this host's interface addresses (${mesh.multiaddrs.map(a => a.split('/p2p/')[0]).join(', ') || 'none'}); give --advertise with the name or address they should use`)
    }
    this.log.info({ url: this.url, ca: this.tls.caPath, dataDir: cfg.dataDir, workers: core.registry.size, restored: this.restored, peerId: mesh.peerId, p2p: mesh.listenAddrs, advertised: mesh.multiaddrs }, `controller ${cfg.id} listening on ${this.url} (curl --cacert ${this.tls.caPath})`)
    return this
  }

  /**
   * Reads every file an operator may change while the controller runs
   * (SIGHUP): the route policy, the peer allow list (a peer it no longer
   * admits is hung up on) and the mesh key ring (connections keyed with a
   * removed key are closed and re-dialled with the primary). Each is
   * reloaded on its own: a file that does not parse leaves what is in force
   * and is logged, and its error is returned.
   */
  reload (): { errors: string[] } {
    const errors: string[] = []
    const attempt = (refusal: string, fn: () => void): void => {
      try {
        fn()
      } catch (err) {
        errors.push((err as Error).message)
        this.log.error({ err: (err as Error).message }, refusal)
      }
    }
    attempt('route policy not reloaded: the file is invalid; the previous policy stays in force', () => { this.reloadPolicy() })
    attempt('peer allow list not reloaded: the file is invalid; the list in force is kept', () => { this.admission?.reload() })
    attempt('mesh keys not reloaded: the file is invalid; the keys in force are kept', () => { this.reloadMeshKeys(true) })
    return { errors }
  }

  /** The peer allow list and the mesh key file, re-read if they changed since last read (polled). */
  private reloadChangedFiles (): void {
    try {
      this.admission?.reloadIfChanged()
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'peer allow list not reloaded: the list in force is kept')
    }
    try {
      this.reloadMeshKeys(false)
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'mesh keys not reloaded: the keys in force are kept')
    }
  }

  /**
   * Reads the mesh key file (`force`: even if it seems unchanged) and hands
   * a changed ring to the mesh. Throws a ConfigError for a bad file, which
   * leaves the keys in force (and is not read again until it changes).
   */
  private reloadMeshKeys (force: boolean): void {
    const file = this.config.meshKey
    const stamp = fileStamp(file)
    if (!force && stamp === this.meshKeysStamp) return
    this.meshKeysStamp = stamp
    const keys = readMeshKeys(file)
    const hex = (ks: Uint8Array[]): string => ks.map(k => Buffer.from(k).toString('hex')).join(',')
    if (hex(keys) === hex(this.meshKeys)) return
    const before = this.meshKeys.map(meshKeyId)
    this.meshKeys = keys
    this.mesh?.setMeshKeys(keys)
    const ids = keys.map(meshKeyId)
    this.log.info({ file, primary: ids[0], accepted: ids, removed: before.filter(id => !ids.includes(id)) }, `mesh keys reloaded: primary ${ids[0]}, accepting ${ids.join(', ')}`)
  }

  /**
   * Reads the route policy file again (part of `reload()`). A file that does
   * not parse leaves the policy in force and throws: a typo never opens or
   * closes the mesh by accident.
   */
  reloadPolicy (): void {
    this.policy = this.loadPolicy()
    this.log.info({ policy: this.config.policy ?? null, deny: this.config.denyIdentity }, 'route policy reloaded')
  }

  private loadPolicy (): RoutePolicy {
    const cfg = this.config
    return policyWithDenials(cfg.policy != null ? loadPolicy(cfg.policy) : defaultRoutePolicy(), cfg.denyIdentity)
  }

  async stop (): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    this.timers = []
    await this.app?.close()
    this.app = null
    this.core.membership.attach(null)
    await this.mesh?.stop()
    this.mesh = null
    this.metrics?.close()
    this.metrics = null
    this.persistence?.close()
    this.persistence = null
    releaseDataDir(this.config.dataDir)
    if (this.tracing != null) {
      this.core.registry.off('change', annotateSpan)
      // Last: the spans of everything stopped above are exported, not lost (within TRACING_SHUTDOWN_MS).
      await this.tracing.shutdown().catch((err: Error) => { this.log.warn({ err: err.message }, 'tracing did not shut down cleanly') })
      this.tracing = null
    }
  }

  /** The core's events: logged, and passed on to the view's listeners. */
  private logEvents (): void {
    const core = this.core
    core.on('expired', (id, state) => {
      this.log.info({ worker: id, state }, 'worker expired')
      this.events.emit('expired', id, state)
    })
    core.on('member', (id, from, to) => {
      this.log.info({ owner: id, from, to }, `controller ${id} is ${to}`)
      this.events.emit('member', id, from, to)
    })
    core.on('dropped', (id, segments) => {
      this.log.info({ owner: id, segments }, `dropped the entries of controller ${id} (gone for the stale window)`)
      this.events.emit('dropped', id, segments)
    })
    core.on('selfPreservation', (kind, on) => {
      this.log.warn({ kind, on }, on ? `self-preservation ON: too many ${kind} silent at once, not evicting` : `self-preservation off (${kind})`)
      this.events.emit('selfPreservation', kind, on)
    })
    core.on('registry', change => { this.events.emit('registry', change) })
    core.on('republished', n => { this.log.info({ entries: n }, `put back ${n} entries a peer dropped while it thought this controller gone`) })
    core.on('invalid', reason => { this.log.warn({ reason }, 'ignored malformed registry data') })
    // Logged where the data came from (once per peer for gossip, rate-limited per peer for sync, the API's answer for an import, a warning per record replayed): counted here.
    core.on('refused', (origin, unsigned) => {
      if (origin === 'remote' || origin === 'import' || origin === 'load') this.events.emit('dataRefused', origin, unsigned ? 'unsigned' : 'malformed')
    })
  }

  /** What this process knows beside the core, for /health and /mesh. */
  private facts (): NodeFacts {
    const cfg = this.config
    return {
      peerId: () => this.mesh?.peerId ?? null,
      listenAddrs: () => this.mesh?.listenAddrs ?? [],
      advertisedAddrs: () => this.mesh?.multiaddrs ?? [],
      connectedPeers: () => this.mesh?.connectedPeers().length ?? 0,
      peers: () => (this.mesh?.peerStatus() ?? []).map(peerStatus),
      sync: () => syncHealth(this.mesh),
      store: () => this.persistence?.stats() ?? null,
      caPath: () => this.tls?.caPath ?? null,
      meshKeys: () => this.mesh?.meshKeys() ?? this.meshKeys.map((k, i) => ({ id: meshKeyId(k), primary: i === 0, accepted: true, connections: 0 })),
      admission: () => {
        const a = this.admission
        return {
          file: a?.file ?? null,
          controllers: (a?.entries() ?? []).map(e => ({ controller_id: e.controllerId, peer_id: e.peerId })),
          refused: (a?.refused() ?? []).map(r => ({ peer_id: r.peerId, address: r.address, count: r.count, last_at: new Date(r.lastAt).toISOString(), reason: r.reason }))
        }
      },
      config: () => ({ heartbeat_interval_ms: cfg.heartbeatIntervalMs, unhealthy_after_ms: cfg.unhealthyAfterMs, stale_after_ms: cfg.staleAfterMs }),
      auth: () => ({ mode: cfg.auth, trust_domain: cfg.trustDomain, health: cfg.healthAuth })
    }
  }
}

/**
 * The names and addresses the server certificate must cover (besides loopback): the advertised
 * ones; with none, the bound address, or bound to a wildcard, this host's interface addresses
 * (what peers are then told).
 */
function certificateHosts (host: string, advertise: string[]): string[] {
  if (advertise.length > 0) return [host, ...advertise]
  if (!isWildcard(host)) return [host]
  return Object.values(networkInterfaces()).flatMap(list => (list ?? []).filter(i => !i.internal).map(i => i.address.split('%')[0]))
}

/**
 * Names the workers a registry change touched on the span active when it
 * happened: a request's (the registration it made) or a mesh apply's (what
 * a peer's update brought). Registry changes are synchronous, so the active
 * span is the one that caused them.
 */
function annotateSpan (changes: WorkerChange[]): void {
  const span = trace.getActiveSpan()
  if (span == null || !span.isRecording()) return
  span.setAttribute(SPAN_ATTR.workerIds, changes.slice(0, MAX_SPAN_WORKER_IDS).map(c => c.workerId))
  span.setAttribute(SPAN_ATTR.workersChanged, changes.length)
}

function readPem (file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new TlsError(`cannot read client CA ${file}: ${(err as Error).message}`, { cause: err })
  }
}

function peerStatus (p: PeerView): PeerStatus {
  const f = p.syncFailure
  return {
    peer_id: p.peerId,
    controller_id: p.controllerId,
    connected: p.connected,
    last_sync_at: p.lastSyncAt != null ? new Date(p.lastSyncAt).toISOString() : null,
    last_sync_ms: p.lastSyncMs != null ? Math.round(p.lastSyncMs * 10) / 10 : null,
    in_sync: p.inSync,
    sync_state: p.syncState,
    sync_failures: f?.count ?? 0,
    last_sync_error: f == null ? null : { reason: f.reason, message: f.error, at: new Date(f.at).toISOString() },
    last_message_at: p.lastMessageAt != null ? new Date(p.lastMessageAt).toISOString() : null
  }
}

function syncHealth (mesh: Mesh | null): SyncHealth {
  const behind = (mesh?.behind() ?? []).map(b => ({
    peer_id: b.peerId,
    controller_id: b.controllerId,
    failures: b.failures,
    reason: b.reason,
    last_error: b.error,
    last_error_at: new Date(b.at).toISOString(),
    failing_since: new Date(b.since).toISOString()
  }))
  return { state: behind.length > 0 ? 'behind' : 'ok', behind }
}

/** Creates and starts a controller. */
export async function startController (init: ControllerInit): Promise<Controller> {
  return await new Controller(init).start()
}
