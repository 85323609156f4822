/**
 * Crash-safe persistence of the registry document in the data dir.
 *
 * Two files: `snapshot.bin` (a whole-document Yjs update, replaced by
 * write-to-temp + fsync + rename) and `updates.log` (every update since the
 * snapshot, appended as `[u32 length][u32 crc32][bytes]` records). A kill -9
 * at any moment leaves a loadable state: a torn last record fails its
 * length or checksum and is cut off on the next load; a crash between the
 * snapshot rename and the log truncation only replays updates the snapshot
 * already holds, which Yjs applies idempotently.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, writevSync, fstatSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { DEFAULT_FSYNC, DEFAULT_LOG_COMPACT_BYTES } from '../constants.ts'
import { StoreError } from '../errors.ts'

export interface FileStoreInit {
  /** Folder holding `snapshot.bin` and `updates.log` (created if missing). */
  dir: string
  /** fsync after every append (power-loss safety at a latency cost). @default false */
  fsync?: boolean
  /** Log size that triggers a snapshot, if also larger than the last snapshot. @default 1 MiB */
  compactBytes?: number
}

export interface LoadResult {
  /** Updates to apply in order: the snapshot first, then the log records. */
  updates: Uint8Array[]
  /** Bytes cut off the end of the log because the last record was torn. */
  truncatedBytes: number
}

const HEADER = 8

export class FileStore {
  readonly dir: string
  private readonly fsync: boolean
  private readonly compactBytes: number
  private logFd: number | null = null
  private logBytes = 0
  private snapshotBytes = 0

  constructor (init: FileStoreInit) {
    this.dir = init.dir
    this.fsync = init.fsync ?? DEFAULT_FSYNC
    this.compactBytes = init.compactBytes ?? DEFAULT_LOG_COMPACT_BYTES
  }

  private get snapshotPath (): string { return join(this.dir, 'snapshot.bin') }
  private get logPath (): string { return join(this.dir, 'updates.log') }

  /** Reads snapshot and log, repairs a torn log tail, and opens the log for appending. */
  load (): LoadResult {
    try {
      mkdirSync(this.dir, { recursive: true })
      const updates: Uint8Array[] = []
      if (existsSync(this.snapshotPath)) {
        const snap = readFileSync(this.snapshotPath)
        const body = readRecord(snap, 0)
        if (body == null) throw new StoreError(`snapshot ${this.snapshotPath} is corrupt (checksum mismatch)`)
        updates.push(body)
        this.snapshotBytes = snap.length
      }
      let truncatedBytes = 0
      this.logFd = openSync(this.logPath, 'a+')
      const log = existsSync(this.logPath) ? readFileSync(this.logPath) : Buffer.alloc(0)
      let offset = 0
      while (offset < log.length) {
        const body = readRecord(log, offset)
        if (body == null) break
        updates.push(body)
        offset += HEADER + body.length
      }
      if (offset < log.length) {
        truncatedBytes = log.length - offset
        ftruncateSync(this.logFd, offset)
      }
      this.logBytes = offset
      return { updates, truncatedBytes }
    } catch (err) {
      if (err instanceof StoreError) throw err
      throw new StoreError(`cannot load registry from ${this.dir}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Appends one update. Synchronous on purpose: the caller acknowledges only after it returns. */
  append (update: Uint8Array): void {
    if (this.logFd == null) throw new StoreError('store is not open (call load() first)')
    writeRecord(this.logFd, update)
    if (this.fsync) fsyncSync(this.logFd)
    this.logBytes += HEADER + update.length
  }

  /** True when the log has grown enough that a snapshot pays for itself. */
  wantsSnapshot (): boolean {
    return this.logBytes > this.compactBytes && this.logBytes > this.snapshotBytes
  }

  /** Replaces the snapshot with `state` (a whole-document update) and empties the log. */
  snapshot (state: Uint8Array): void {
    if (this.logFd == null) throw new StoreError('store is not open (call load() first)')
    const tmp = `${this.snapshotPath}.${process.pid}.tmp`
    const fd = openSync(tmp, 'w')
    try {
      writeRecord(fd, state)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.snapshotPath)
    // The snapshot holds everything the log did: from here on a crash replays nothing twice that matters.
    ftruncateSync(this.logFd, 0)
    if (this.fsync) fsyncSync(this.logFd)
    this.logBytes = 0
    this.snapshotBytes = HEADER + state.length
  }

  /** Sizes on disk, for /health and benchmarks. */
  stats (): { logBytes: number, snapshotBytes: number } {
    return { logBytes: this.logFd == null ? 0 : fstatSync(this.logFd).size, snapshotBytes: this.snapshotBytes }
  }

  close (): void {
    if (this.logFd != null) {
      closeSync(this.logFd)
      this.logFd = null
    }
  }
}

/**
 * Writes `[length][crc32][body]` at the file's position: header and body in
 * one writev, without copying the body into a record first (a whole-registry
 * snapshot or import is tens of MB, and a copy was that much more at the
 * peak). A write cut short is a torn record, cut off at the next load.
 */
function writeRecord (fd: number, body: Uint8Array): void {
  const header = Buffer.allocUnsafe(HEADER)
  header.writeUInt32LE(body.length, 0)
  header.writeUInt32LE(crc32(body), 4)
  let done = writevSync(fd, [header, body])
  // writev may write less than asked (large buffers, signals): finish the rest.
  while (done < HEADER + body.length) {
    const rest = done < HEADER ? [header.subarray(done), body] : [body.subarray(done - HEADER)]
    done += writevSync(fd, rest)
  }
}

/** The record at `offset`, or null if it is torn or fails its checksum. */
function readRecord (buf: Buffer, offset: number): Uint8Array | null {
  if (offset + HEADER > buf.length) return null
  const len = buf.readUInt32LE(offset)
  const sum = buf.readUInt32LE(offset + 4)
  if (offset + HEADER + len > buf.length) return null
  const body = buf.subarray(offset + HEADER, offset + HEADER + len)
  // A view, not a copy: the snapshot is tens of MB at 100,000 workers, and is applied once and dropped.
  return crc32(body) === sum ? new Uint8Array(body.buffer, body.byteOffset, body.length) : null
}
