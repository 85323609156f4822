/**
 * A running controller: the in-memory core, persisted to its data dir,
 * served over HTTPS, with the health timers running.
 *
 * Start-up order matters: the data dir is claimed, the registry is replayed
 * from disk (restored workers are `pending`), and only then does the HTTPS
 * listener open, so no request ever sees a half-loaded registry.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pino, type Logger } from 'pino'
import { buildApi, type Api, type SyncHealth } from '../api/index.ts'
import type { ControllerConfig } from '../config.ts'
import { SNAPSHOT_DELAY_MS, SNAPSHOT_MAX_DELAY_MS } from '../constants.ts'
import { ConfigError, InvalidStateError } from '../errors.ts'
import { Mesh, ensureMeshKey, meshKeyId, type Digest } from '../gossip/index.ts'
import { controllerMetrics, type ControllerMetrics } from '../metrics/index.ts'
import { FileStore, Origin } from '../registry/index.ts'
import { ensureTls, loadTlsFiles, type TlsMaterial } from '../tls/index.ts'
import { ControllerCore } from './core.ts'

export interface ControllerInit {
  config: ControllerConfig
  /** Logger to use instead of one made from `config.logLevel`. */
  logger?: Logger
}

export class Controller {
  readonly config: ControllerConfig
  readonly core: ControllerCore
  readonly log: Logger
  private store: FileStore | null = null
  private mesh: Mesh | null = null
  private digestTimer: NodeJS.Timeout | null = null
  private app: Api | null = null
  private tls: TlsMaterial | null = null
  /** Public name of the mesh key (meshKeyId), shown in /mesh and /health. */
  private meshKeyId: string | null = null
  private sweepTimer: NodeJS.Timeout | null = null
  private snapshotTimer: NodeJS.Timeout | null = null
  /** When the current wish for a snapshot began (monotonic ms), null if none. */
  private snapshotWantedSince: number | null = null
  private restored = 0
  private metrics: ControllerMetrics | null = null
  /** What peers last heard in a digest, to send the next one only when it says something new. */
  private readonly published = { key: '', hash: '', hashAtLastTick: '', at: -Infinity, force: true }
  /** A digest is owed to peers that connected (monotonic ms to send it at, and when the first was owed); null if none. */
  private owed: { at: number, since: number } | null = null

  constructor (init: ControllerInit) {
    this.config = init.config
    this.log = init.logger ?? pino({ level: init.config.logLevel, base: { controller: init.config.id } })
    this.core = new ControllerCore({
      controllerId: this.config.id,
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
      unhealthyAfterMs: this.config.unhealthyAfterMs,
      staleAfterMs: this.config.staleAfterMs,
      idempotencyTtlMs: this.config.idempotencyTtlMs
    })
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

  async start (): Promise<this> {
    const cfg = this.config
    this.claimDataDir()
    this.loadRegistry()
    this.tls = cfg.tlsFiles != null ? loadTlsFiles(cfg.tlsFiles) : await ensureTls({ dir: cfg.tlsDir, hosts: [cfg.host] })
    if (this.tls.createdCa) this.log.info({ ca: this.tls.caPath }, 'created a local development CA')
    const meshKey = ensureMeshKey(cfg.meshKey)
    this.meshKeyId = meshKeyId(meshKey.key)
    if (meshKey.created) this.log.info({ meshKey: cfg.meshKey }, 'created a mesh key: every controller of this mesh needs a copy of it')

    this.core.on('expired', (id, state) => { this.log.info({ worker: id, state }, 'worker expired') })
    this.core.on('owner', (owner, from, to) => { this.log.info({ owner, from, to }, `controller ${owner} is ${to}`) })
    this.core.on('dropped', (owner, segments) => { this.log.info({ owner, segments }, `dropped the entries of controller ${owner} (gone for the stale window)`) })
    this.core.on('selfPreservation', (kind, on) => {
      this.log.warn({ kind, on }, on ? `self-preservation ON: too many ${kind} silent at once, not evicting` : `self-preservation off (${kind})`)
    })
    this.core.registry.on('republished', n => { this.log.info({ entries: n }, `put back ${n} entries a peer dropped while it thought this controller gone`) })
    this.core.registry.on('invalid', reason => { this.log.warn({ reason }, 'ignored malformed registry data') })

    this.mesh = new Mesh({
      registry: this.core.registry,
      dataDir: cfg.dataDir,
      meshKey: meshKey.key,
      host: cfg.host,
      port: cfg.p2pPort,
      bootstrap: cfg.bootstrap,
      syncIntervalMs: cfg.syncIntervalMs,
      maxSyncBytes: cfg.maxSyncBytes,
      reconnectIntervalMs: cfg.reconnectIntervalMs,
      registryHash: () => this.core.registryHash,
      log: this.log.child({ component: 'mesh' })
    })
    this.metrics = controllerMetrics({
      core: this.core,
      mesh: () => this.mesh,
      store: () => this.store?.stats() ?? null,
      info: { controller_id: cfg.id, mesh_key_id: this.meshKeyId }
    })
    this.metrics.watchMesh(this.mesh)
    this.mesh.on('digest', (id, d) => { this.core.onDigest(id, d) })
    this.mesh.on('heard', id => { this.core.onHeard(id) })
    this.mesh.on('peer:connect', id => {
      this.log.debug({ peer: id }, 'peer connected')
      // A new link (a controller joining, a partition healing): the peer must learn this controller's
      // word and the controllers it can introduce. Links come in bursts (a heal opens one to every
      // controller of the other side), so one digest goes out once the burst is over.
      const now = performance.now()
      const since = this.owed?.since ?? now
      this.owed = { at: Math.min(now + 2 * cfg.digestIntervalMs, since + 5 * cfg.digestIntervalMs), since }
    })
    await this.mesh.start()

    this.app = await buildApi({
      core: this.core,
      tls: this.tls,
      bodyLimit: cfg.bodyLimit,
      importBodyLimit: cfg.importBodyLimit,
      metrics: this.metrics,
      logger: this.log.child({ component: 'api' }, { level: cfg.logLevel === 'debug' || cfg.logLevel === 'trace' ? cfg.logLevel : 'warn' }),
      health: () => this.healthExtras(),
      mesh: () => this.meshStatus(),
      sync: () => this.syncHealth()
    })
    await this.app.listen({ host: cfg.host, port: cfg.httpsPort })

    const tick = Math.min(1000, Math.max(20, Math.floor(cfg.unhealthyAfterMs / 10)))
    this.sweepTimer = setInterval(() => { this.core.sweep() }, tick)
    this.sweepTimer.unref()
    this.digestTimer = setInterval(() => { this.tickDigest() }, cfg.digestIntervalMs)
    this.digestTimer.unref()
    this.log.info({ url: this.url, ca: this.tls.caPath, dataDir: cfg.dataDir, workers: this.core.registry.size, restored: this.restored, peerId: this.mesh.peerId, p2p: this.mesh.multiaddrs }, `controller ${cfg.id} listening on ${this.url} (curl --cacert ${this.tls.caPath})`)
    return this
  }

  /**
   * Publishes the liveness digest when it says something peers do not know:
   * a worker's state or load changed, self-preservation switched, the
   * registry hash changed and has held still for one interval (so a stream
   * of registrations does not make every controller publish), peers
   * connected (once the burst of connections is over), or
   * `digest-keepalive` passed since the last one.
   */
  private tickDigest (): void {
    if (this.mesh == null) return
    const d = this.core.digest()
    const p = this.published
    const key = digestKey(d)
    const settledHash = d.registry_hash !== p.hash && d.registry_hash === p.hashAtLastTick
    p.hashAtLastTick = d.registry_hash
    const now = performance.now()
    const owed = this.owed != null && now >= this.owed.at
    if (!p.force && !owed && key === p.key && !settledHash && now - p.at < this.config.digestKeepaliveMs) return
    this.mesh.publishDigest(d)
    Object.assign(p, { key, hash: d.registry_hash, at: now, force: false })
    if (owed) this.owed = null
  }

  /** The libp2p side (peer id, addresses, partitions for tests). */
  get p2p (): Mesh {
    if (this.mesh == null) throw new Error('controller is not started')
    return this.mesh
  }

  async stop (): Promise<void> {
    if (this.sweepTimer != null) clearInterval(this.sweepTimer)
    if (this.digestTimer != null) clearInterval(this.digestTimer)
    if (this.snapshotTimer != null) clearTimeout(this.snapshotTimer)
    this.sweepTimer = null
    this.digestTimer = null
    this.snapshotTimer = null
    await this.app?.close()
    this.app = null
    await this.mesh?.stop()
    this.mesh = null
    this.metrics?.close()
    this.metrics = null
    if (this.store != null) {
      this.store.snapshot(this.core.registry.encodeState())
      this.store.close()
      this.store = null
    }
    rmSync(join(this.config.dataDir, 'controller.pid'), { force: true })
  }

  /** Refuses to run two controllers on one data dir (a stale pid file from a kill -9 is taken over). */
  private claimDataDir (): void {
    const dir = this.config.dataDir
    mkdirSync(dir, { recursive: true })
    const pidFile = join(dir, 'controller.pid')
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8'))
      if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) {
        throw new ConfigError(`data dir ${dir} is in use by process ${pid}; give each controller its own --data-dir`)
      }
    }
    writeFileSync(pidFile, String(process.pid))
  }

  private loadRegistry (): void {
    const store = new FileStore({ dir: join(this.config.dataDir, 'registry'), fsync: this.config.fsync })
    const { updates, truncatedBytes } = store.load()
    if (truncatedBytes > 0) this.log.warn({ truncatedBytes }, 'cut a torn record off the end of the update log')
    const reg = this.core.registry
    for (const u of updates) {
      try {
        reg.applyUpdate(u, Origin.load)
      } catch (err) {
        if (!(err instanceof InvalidStateError)) throw err
        this.log.warn({ err: err.message }, 'skipped an unreadable record in the data dir')
      }
    }
    this.restored = reg.size
    this.store = store
    reg.on('update', (update, origin) => {
      if (origin === Origin.load) return
      store.append(update)
      if (store.wantsSnapshot()) this.queueSnapshot()
    })
  }

  /**
   * Rewrites the snapshot once the log outgrew it and writes have paused for
   * SNAPSHOT_DELAY_MS (at most SNAPSHOT_MAX_DELAY_MS after it first wanted
   * one). Nothing waits for it (the log already holds every update), and
   * encoding the whole registry in the middle of a heal or a burst of
   * registrations competes with applying them: it was a tenth of the CPU of
   * a heal.
   */
  private queueSnapshot (): void {
    const now = performance.now()
    this.snapshotWantedSince ??= now
    if (this.snapshotTimer != null) clearTimeout(this.snapshotTimer)
    const delay = Math.min(SNAPSHOT_DELAY_MS, this.snapshotWantedSince + SNAPSHOT_MAX_DELAY_MS - now)
    this.snapshotTimer = setTimeout(() => {
      this.snapshotTimer = null
      this.snapshotWantedSince = null
      this.store?.snapshot(this.core.registry.encodeState())
    }, Math.max(0, delay))
  }

  private meshStatus (): Record<string, unknown> {
    const m = this.mesh?.status()
    const owners: Record<string, unknown> = {}
    for (const [id, o] of this.core.owners.entries()) {
      owners[id] = {
        status: o.status,
        last_heard_ms_ago: o.lastHeard != null ? Math.round(performance.now() - o.lastHeard) : null,
        registry_hash: o.registryHash,
        registry_hash_matches: o.registryHash != null ? o.registryHash === this.core.registryHash : null,
        self_preservation: o.selfPreservation
      }
    }
    return {
      controller_id: this.config.id,
      peer_id: m?.peer_id ?? null,
      listen_addrs: m?.listen_addrs ?? [],
      connected_peers: m?.connected ?? 0,
      peers: m?.peers ?? [],
      owners,
      registry_hash: this.core.registryHash,
      sync: this.syncHealth(),
      self_preservation: this.core.selfPreservation,
      mesh_key_id: this.meshKeyId
    }
  }

  private syncHealth (): SyncHealth {
    const behind = (this.mesh?.behind() ?? []).map(b => ({
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

  private healthExtras (): Record<string, unknown> {
    return {
      mesh: {
        peer_id: this.mesh?.peerId ?? null,
        listen_addrs: this.mesh?.multiaddrs ?? [],
        connected_peers: this.mesh?.connectedPeers().length ?? 0,
        registry_hash: this.core.registryHash,
        self_preservation: this.core.selfPreservation,
        mesh_key_id: this.meshKeyId
      },
      store: this.store?.stats() ?? null,
      tls: { ca_path: this.tls?.caPath ?? null },
      config: {
        heartbeat_interval_ms: this.config.heartbeatIntervalMs,
        unhealthy_after_ms: this.config.unhealthyAfterMs,
        stale_after_ms: this.config.staleAfterMs
      }
    }
  }
}

/** What a digest says about liveness, as one comparable string. */
function digestKey (d: Digest): string {
  return JSON.stringify([d.self_preservation, d.exceptions, d.loads])
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Creates and starts a controller. */
export async function startController (init: ControllerInit): Promise<Controller> {
  return await new Controller(init).start()
}
