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
 */
import { EventEmitter } from 'node:events'
import { networkInterfaces } from 'node:os'
import { pino, type Logger } from 'pino'
import { buildApi, type Api } from '../api/index.ts'
import type { ControllerConfig } from '../config.ts'
import { ControllerCore, controllerView, type ControllerView, type NodeFacts, type ViewEvents } from '../core/index.ts'
import { ensureMeshKey, isWildcard, Mesh, meshKeyId, type NetworkFaults, type PeerView, type Resolve } from '../gossip/index.ts'
import { LIVENESS_TOPIC, type Digest } from '../membership/index.ts'
import { controllerMetrics, type ControllerMetrics } from '../metrics/index.ts'
import { ensureTls, loadTlsFiles, uncovered, type TlsMaterial } from '../tls/index.ts'
import type { PeerStatus, SyncHealth } from '../wire/index.ts'
import { claimDataDir, Persistence, releaseDataDir } from './persistence.ts'

export interface ControllerInit {
  config: ControllerConfig
  /** Logger to use instead of one made from `config.logLevel`. */
  logger?: Logger
  /** Simulated partitions, loss and delay for tests and simulations (gossip/faults.ts). @default none */
  faults?: NetworkFaults
  /** Looks up the DNS names of bootstrap and peer addresses (tests give a map). @default the system's resolver */
  resolve?: Resolve
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
  private persistence: Persistence | null = null
  private mesh: Mesh | null = null
  private app: Api | null = null
  private tls: TlsMaterial | null = null
  /** Public name of the mesh key (meshKeyId), shown in /mesh and /health. */
  private meshKeyId: string | null = null
  private metrics: ControllerMetrics | null = null
  private timers: NodeJS.Timeout[] = []
  private restored = 0

  constructor (init: ControllerInit) {
    const cfg = this.config = init.config
    this.log = init.logger ?? pino({ level: cfg.logLevel, base: { controller: cfg.id } })
    this.faults = init.faults
    this.resolve = init.resolve
    this.core = new ControllerCore({
      controllerId: cfg.id,
      heartbeatIntervalMs: cfg.heartbeatIntervalMs,
      unhealthyAfterMs: cfg.unhealthyAfterMs,
      staleAfterMs: cfg.staleAfterMs,
      digestIntervalMs: cfg.digestIntervalMs,
      digestKeepaliveMs: cfg.digestKeepaliveMs,
      idempotencyTtlMs: cfg.idempotencyTtlMs
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
    claimDataDir(cfg.dataDir)
    this.persistence = new Persistence({ dir: cfg.dataDir, fsync: cfg.fsync, registry: core.registry, log: this.log })
    this.restored = this.persistence.load()
    const names = certificateHosts(cfg.host, cfg.advertise)
    this.tls = cfg.tlsFiles != null ? loadTlsFiles(cfg.tlsFiles) : await ensureTls({ dir: cfg.tlsDir, hosts: names })
    if (this.tls.createdCa) this.log.info({ ca: this.tls.caPath }, 'created a local development CA')
    const missing = uncovered(this.tls.cert, cfg.advertise)
    if (missing.length > 0) this.log.warn({ cert: this.tls.certPath, missing }, `the TLS certificate does not cover ${missing.join(', ')}: clients reaching this controller by ${missing.length > 1 ? 'those' : 'that'} will fail to verify it`)
    const meshKey = ensureMeshKey(cfg.meshKey)
    this.meshKeyId = meshKeyId(meshKey.key)
    if (meshKey.created) this.log.info({ meshKey: cfg.meshKey }, 'created a mesh key: every controller of this mesh needs a copy of it')
    this.logEvents()

    const membership = core.membership
    const mesh = this.mesh = new Mesh({
      controllerId: cfg.id,
      replica: core.replica,
      dataDir: cfg.dataDir,
      meshKey: meshKey.key,
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
        }
      },
      faults: this.faults,
      log: this.log.child({ component: 'mesh' })
    })
    mesh.on('heard', (id, peerId) => { membership.heard(id, peerId) })
    mesh.on('sync', r => {
      membership.synced(r.peerController)
      this.events.emit('sync', { ok: true, bytesReceived: r.bytesReceived })
    })
    mesh.on('sync:failed', (_peer, reason) => { this.events.emit('sync', { ok: false, reason }) })
    mesh.on('gossip', (topic, result) => { this.events.emit('gossip', topic, result) })
    mesh.on('peer:connect', id => {
      this.log.debug({ peer: id }, 'peer connected')
      membership.connected(id)
    })
    membership.attach({
      publish: payload => { mesh.publish(LIVENESS_TOPIC, payload) },
      reachable: () => mesh.subscribers(LIVENESS_TOPIC) > 0,
      localAddrs: () => mesh.multiaddrs,
      introductions: () => mesh.introductions(),
      learnAddrs: (peerId, addrs) => { mesh.learnAddrs(peerId, addrs) },
      learnIntroduced: addrs => { mesh.learnIntroduced(addrs) }
    })
    this.metrics = controllerMetrics({ view: this.view, info: { controller_id: cfg.id, mesh_key_id: this.meshKeyId } })
    await mesh.start()

    this.app = await buildApi({
      view: this.view,
      tls: this.tls,
      bodyLimit: cfg.bodyLimit,
      importBodyLimit: cfg.importBodyLimit,
      metrics: this.metrics,
      logger: this.log.child({ component: 'api' }, { level: cfg.logLevel === 'debug' || cfg.logLevel === 'trace' ? cfg.logLevel : 'warn' })
    })
    await this.app.listen({ host: cfg.host, port: cfg.httpsPort })

    const sweepEvery = Math.min(1000, Math.max(20, Math.floor(cfg.unhealthyAfterMs / 10)))
    this.timers.push(setInterval(() => { core.sweep() }, sweepEvery))
    this.timers.push(setInterval(() => { core.tick() }, cfg.digestIntervalMs))
    for (const t of this.timers) t.unref()
    if (isWildcard(cfg.host) && cfg.advertise.length === 0) {
      this.log.warn({ host: cfg.host, announced: mesh.multiaddrs }, `bound to ${cfg.host} without --advertise: peers will see this host's interface addresses (${mesh.multiaddrs.map(a => a.split('/p2p/')[0]).join(', ') || 'none'}); give --advertise with the name or address they should use`)
    }
    this.log.info({ url: this.url, ca: this.tls.caPath, dataDir: cfg.dataDir, workers: core.registry.size, restored: this.restored, peerId: mesh.peerId, p2p: mesh.listenAddrs, advertised: mesh.multiaddrs }, `controller ${cfg.id} listening on ${this.url} (curl --cacert ${this.tls.caPath})`)
    return this
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
      meshKeyId: () => this.meshKeyId,
      config: () => ({ heartbeat_interval_ms: cfg.heartbeatIntervalMs, unhealthy_after_ms: cfg.unhealthyAfterMs, stale_after_ms: cfg.staleAfterMs })
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
