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
import { pino, type Logger } from 'pino'
import { buildApi, type Api } from '../api/index.ts'
import type { ControllerConfig } from '../config.ts'
import { ConfigError, InvalidStateError } from '../errors.ts'
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
  private app: Api | null = null
  private tls: TlsMaterial | null = null
  private sweepTimer: NodeJS.Timeout | null = null
  private snapshotQueued = false
  private restored = 0

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

    this.core.on('expired', (id, state) => { this.log.info({ worker: id, state }, 'worker expired') })
    this.core.registry.on('invalid', reason => { this.log.warn({ reason }, 'ignored malformed registry data') })

    this.app = await buildApi({
      core: this.core,
      tls: this.tls,
      bodyLimit: cfg.bodyLimit,
      importBodyLimit: cfg.importBodyLimit,
      logger: this.log.child({ component: 'api' }, { level: cfg.logLevel === 'debug' || cfg.logLevel === 'trace' ? cfg.logLevel : 'warn' }),
      health: () => this.healthExtras()
    })
    await this.app.listen({ host: cfg.host, port: cfg.httpsPort })

    const tick = Math.min(1000, Math.max(20, Math.floor(cfg.unhealthyAfterMs / 10)))
    this.sweepTimer = setInterval(() => { this.core.sweep() }, tick)
    this.sweepTimer.unref()
    this.log.info({ url: this.url, ca: this.tls.caPath, dataDir: cfg.dataDir, workers: this.core.registry.size, restored: this.restored }, `controller ${cfg.id} listening on ${this.url} (curl --cacert ${this.tls.caPath})`)
    return this
  }

  async stop (): Promise<void> {
    if (this.sweepTimer != null) clearInterval(this.sweepTimer)
    this.sweepTimer = null
    await this.app?.close()
    this.app = null
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

  private queueSnapshot (): void {
    if (this.snapshotQueued) return
    this.snapshotQueued = true
    setImmediate(() => {
      this.snapshotQueued = false
      this.store?.snapshot(this.core.registry.encodeState())
    })
  }

  private healthExtras (): Record<string, unknown> {
    return {
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
