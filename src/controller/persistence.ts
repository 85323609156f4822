/**
 * A controller's data dir: the pid file that keeps two controllers off one
 * dir, and the registry's store (store.ts) wired to the core — replayed at
 * start, every update appended before it is acknowledged, the snapshot
 * rewritten once the log outgrew it and writes paused.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import { REGISTRY_STORE_DIR, SNAPSHOT_DELAY_MS, SNAPSHOT_MAX_DELAY_MS } from '../constants.ts'
import { ConfigError, InvalidStateError } from '../errors.ts'
import { FileStore, Origin, type Registry } from '../registry/index.ts'
import type { SnapshotRead } from '../registry/read-ahead.ts'

/** Refuses to run two controllers on one data dir (a stale pid file from a kill -9 is taken over). */
export function claimDataDir (dir: string): void {
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

export function releaseDataDir (dir: string): void {
  rmSync(join(dir, 'controller.pid'), { force: true })
}

function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * The key of this controller's snapshot MACs, derived from the raw bytes of
 * its peer key (a secret it already keeps in the data dir, 0600): no second
 * key file, and a new identity makes its old snapshots foreign, checked.
 */
export function snapshotMacKey (peerKeyRaw: Uint8Array): Uint8Array {
  return createHash('sha256').update('capmesh/snapshot-mac-key/1\0').update(peerKeyRaw).digest()
}

/** How often a due snapshot looks again whether a sliced apply has finished (ms). */
const SLICED_APPLY_POLL_MS = 100

export class Persistence {
  private readonly store: FileStore
  private readonly registry: Registry
  private readonly log: Logger
  private snapshotTimer: NodeJS.Timeout | null = null
  /** When the current wish for a snapshot began (monotonic ms), null if none. */
  private snapshotWantedSince: number | null = null
  private readonly onUpdate = (update: Uint8Array, origin: Origin): void => {
    if (origin === Origin.load) return
    this.store.append(update)
    if (this.store.wantsSnapshot()) this.queueSnapshot()
  }

  /**
   * `macKey`: this controller's secret for its snapshots' MACs (FileStore):
   * a snapshot it wrote itself is replayed without checking it again.
   * @default none: every snapshot is checked
   */
  constructor (init: { dir: string, fsync: boolean, registry: Registry, log: Logger, macKey?: Uint8Array }) {
    this.store = new FileStore({ dir: join(init.dir, REGISTRY_STORE_DIR), fsync: init.fsync, macKey: init.macKey })
    this.registry = init.registry
    this.log = init.log
  }

  /**
   * Replays the data dir into the registry (restored workers are pending),
   * then logs every later update. Returns the workers restored. A snapshot
   * this controller wrote (its MAC verifies) is applied without the checks
   * every other record gets, as its key file is read without question:
   * whoever could forge the MAC holds this controller's peer key, and could
   * sign as this controller to the whole mesh anyway. What that skips at
   * 100,000 workers: decoding the update once more, placing and chaining
   * every item, and a seal verification per segment (docs/internals.md,
   * "Where an import's time goes"). `ahead`: the snapshot read ahead
   * (readSnapshotAhead), used if the file has not changed since.
   */
  load (ahead?: SnapshotRead | null): number {
    const { updates, truncatedBytes, own = false } = this.store.load(ahead)
    if (truncatedBytes > 0) this.log.warn({ truncatedBytes }, 'cut a torn record off the end of the update log')
    for (const [i, u] of updates.entries()) {
      try {
        this.registry.applyUpdate(u, Origin.load, { own: own && i === 0 })
      } catch (err) {
        if (!(err instanceof InvalidStateError)) throw err
        this.log.warn({ err: err.message }, 'skipped an unreadable record in the data dir')
      }
    }
    this.registry.on('update', this.onUpdate)
    // The seal checks would have refused a segment whose signer the allow list no longer admits for
    // its owner (it changed while this controller was down); unchecked, it is dropped now, logged.
    if (own) {
      const dropped = this.registry.dropUnadmitted()
      if (dropped > 0) this.log.info({ segments: dropped }, `dropped ${dropped} segments of the snapshot sealed by keys the allow list no longer admits for their owner`)
    }
    return this.registry.size
  }

  /** Sizes on disk. */
  stats (): { logBytes: number, snapshotBytes: number } { return this.store.stats() }

  /**
   * Writes a final snapshot and closes the store. Not in the middle of a
   * sliced apply (a large import or catch-up): the document holds only part
   * of it then, while the log holds all of it, which the next start replays.
   */
  close (): void {
    if (this.snapshotTimer != null) clearTimeout(this.snapshotTimer)
    this.snapshotTimer = null
    this.registry.off('update', this.onUpdate)
    if (!this.registry.applyingSlices) this.store.snapshot(this.registry.encodePieces())
    this.store.close()
  }

  /**
   * Rewrites the snapshot once the log outgrew it and writes have paused for
   * SNAPSHOT_DELAY_MS (at most SNAPSHOT_MAX_DELAY_MS after it first wanted
   * one). Nothing waits for it (the log already holds every update), and
   * encoding the whole registry in the middle of a heal or a burst of
   * registrations competes with applying them: it was a tenth of the CPU of
   * a heal. Never while a sliced apply is in progress (see close).
   */
  private queueSnapshot (): void {
    const now = performance.now()
    this.snapshotWantedSince ??= now
    if (this.snapshotTimer != null) clearTimeout(this.snapshotTimer)
    const delay = Math.min(SNAPSHOT_DELAY_MS, this.snapshotWantedSince + SNAPSHOT_MAX_DELAY_MS - now)
    const fire = (): void => {
      // A snapshot now would hold part of a sliced apply and empty the log that holds all of it:
      // a crash then would bring back part of an import. It waits until the last slice is in.
      if (this.registry.applyingSlices) {
        this.snapshotTimer = setTimeout(fire, SLICED_APPLY_POLL_MS)
        return
      }
      this.snapshotTimer = null
      this.snapshotWantedSince = null
      this.store.snapshot(this.registry.encodePieces())
    }
    this.snapshotTimer = setTimeout(fire, Math.max(0, delay))
  }
}
