/**
 * Small file helpers shared by the TLS dir (tls/), the mesh key ring and the
 * peer allow list (gossip/): a lock on a folder that several processes may
 * write at once, and atomic replacement of a file.
 */
import { chmodSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import lockfile from 'proper-lockfile'

/**
 * Runs `fn` holding the lock of folder `dir` (`<dir>/.lock`, proper-lockfile):
 * the one lock every writer of a TLS dir takes (the CA, server and identity
 * certificates, the allow list), so that controllers starting at once on one
 * dir never lose each other's writes. A lock left by a dead process is
 * taken over after 15 s.
 */
export async function withDirLock<T> (dir: string, fn: () => Promise<T> | T): Promise<T> {
  const release = await lockfile.lock(dir, { lockfilePath: join(dir, '.lock'), stale: 15_000, retries: { retries: 100, minTimeout: 20, maxTimeout: 250 } })
  try {
    return await fn()
  } finally {
    await release()
  }
}

/** Replaces `path` with `data` (mode `mode`) in one rename: a reader sees the old file or the new one, never part of either. */
export function writeFileAtomic (path: string, data: string | Uint8Array, mode: number): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`
  try {
    writeFileSync(tmp, data, { mode })
    chmodSync(tmp, mode)
    renameSync(tmp, path)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}

/**
 * What identifies a version of a file without reading it: inode, size and
 * modification time (a rename gives a new inode), or 'missing'. Polling a
 * file costs one stat; it is read only when this changes.
 */
export function fileStamp (path: string): string {
  try {
    const s = statSync(path)
    return `${s.ino}:${s.size}:${s.mtimeMs}`
  } catch {
    return 'missing'
  }
}
