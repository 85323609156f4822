/**
 * Reading a data dir's snapshot ahead of FileStore.load(), off the main
 * thread: the `capmesh controller` command starts it before it loads the
 * controller's modules, so the tens of MB a large registry's snapshot holds
 * are read while those load. Nothing but node:fs here: the command imports
 * this file before Yjs, libp2p or fastify.
 *
 * The read happens before the data dir is claimed, so load() uses the bytes
 * only if the file is still the one read (its stamp: device, inode, size,
 * change and modification times). A controller that was still stopping
 * when the read began may have replaced the snapshot since (a rename: a new
 * inode) and emptied the log; load() then reads it again.
 */
import { close, closeSync, fstatSync, openSync, read, statSync, type BigIntStats } from 'node:fs'
import { join } from 'node:path'

/** The snapshot's file name in the store's folder. */
export const SNAPSHOT_FILE = 'snapshot.bin'

/** A snapshot file's bytes, and the stamp of the file they were read from. */
export interface SnapshotRead {
  bytes: Buffer
  stamp: string
}

/** What identifies a file's version: replaced (rename) or rewritten, it changes. */
function stampOf (s: BigIntStats): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.ctimeNs}:${s.mtimeNs}`
}

/** The stamp of the file at `path` now, or null if there is none. */
export function snapshotStamp (path: string): string | null {
  try {
    return stampOf(statSync(path, { bigint: true }))
  } catch {
    return null
  }
}

/**
 * Reads `<storeDir>/snapshot.bin` in the background. Resolves with its bytes
 * and stamp, null if there is none or it cannot be read (load() then reads
 * it itself, and reports what is wrong). The file is opened and sized now,
 * and its read handed to the thread pool as one request (a regular file is
 * read whole by it), not as readFile's 512 KiB requests, each of which
 * waits for a turn of a main thread that is busy loading modules.
 */
export async function readSnapshotAhead (storeDir: string): Promise<SnapshotRead | null> {
  let fd: number
  try {
    fd = openSync(join(storeDir, SNAPSHOT_FILE), 'r')
  } catch {
    return null
  }
  let stats: BigIntStats
  let bytes: Buffer
  try {
    // The stamp of the descriptor read from: exactly the file these bytes are.
    stats = fstatSync(fd, { bigint: true })
    bytes = Buffer.allocUnsafe(Number(stats.size))
  } catch {
    // Larger than a Buffer can be, say: load() reads it and says what is wrong.
    closeSync(fd)
    return null
  }
  return await new Promise(resolve => {
    const finish = (value: SnapshotRead | null): void => {
      close(fd, () => { resolve(value) })
    }
    const from = (done: number): void => {
      if (done === bytes.length) {
        finish({ bytes, stamp: stampOf(stats) })
        return
      }
      read(fd, bytes, done, bytes.length - done, done, (err, n) => {
        // Shorter than it was (changed meanwhile: its stamp tells load() to read it itself).
        if (err != null || n === 0) finish(null)
        else from(done + n)
      })
    }
    from(0)
  })
}
