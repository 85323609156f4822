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
import { statSync, type BigIntStats } from 'node:fs'
import { open } from 'node:fs/promises'
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
 * it itself, and reports what is wrong).
 */
export async function readSnapshotAhead (storeDir: string): Promise<SnapshotRead | null> {
  try {
    const file = await open(join(storeDir, SNAPSHOT_FILE), 'r')
    try {
      // The stamp of the file descriptor read from: exactly the file these bytes are.
      const stats = await file.stat({ bigint: true })
      // One read of the whole file where the system allows (a regular file: it does), not
      // readFile's 512 KiB chunks, each of which waits for a turn of a main thread busy loading modules.
      const bytes = Buffer.allocUnsafe(Number(stats.size))
      let done = 0
      while (done < bytes.length) {
        const { bytesRead } = await file.read(bytes, done, bytes.length - done, done)
        if (bytesRead === 0) return null
        done += bytesRead
      }
      return { bytes, stamp: stampOf(stats) }
    } finally {
      await file.close()
    }
  } catch {
    return null
  }
}
