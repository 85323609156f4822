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
 *
 * With a `macKey`, a snapshot is followed in its file by a second record: an
 * HMAC-SHA256 of the snapshot under that key (a secret of this controller,
 * derived from its peer key). A snapshot whose MAC verifies is one this
 * controller wrote itself, of a state it had checked as it came in, and is
 * replayed without checking it again (see LoadResult.own). Readers that do
 * not know the MAC read the first record and ignore the rest. A snapshot
 * whose MAC verifies is not put through its CRC32 as well: the MAC covers
 * the same bytes, and any change of them fails it (the CRC32 of a 32 MB
 * snapshot cost a restart ~40–70 ms).
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, writevSync, fstatSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { DEFAULT_FSYNC, DEFAULT_LOG_COMPACT_BYTES } from '../constants.ts'
import { StoreError } from '../errors.ts'
import { piecesLength } from './chunks.ts'
import { SNAPSHOT_FILE, snapshotStamp, type SnapshotRead } from './read-ahead.ts'
import { SEAL_VERSION } from './seal.ts'

export interface FileStoreInit {
  /** Folder holding `snapshot.bin` and `updates.log` (created if missing). */
  dir: string
  /** fsync after every append (power-loss safety at a latency cost). @default false */
  fsync?: boolean
  /** Log size that triggers a snapshot, if also larger than the last snapshot. @default 1 MiB */
  compactBytes?: number
  /**
   * Key of the MAC written after each snapshot, by which load() knows a
   * snapshot as this controller's own. @default none: no MAC is written,
   * and no snapshot is known as its own
   */
  macKey?: Uint8Array
}

export interface LoadResult {
  /** Updates to apply in order: the snapshot first, then the log records. */
  updates: Uint8Array[]
  /** Bytes cut off the end of the log because the last record was torn. */
  truncatedBytes: number
  /**
   * With a `macKey`: whether `updates[0]` is a snapshot this controller
   * wrote (its MAC verified under the key). Absent without a key.
   */
  own?: boolean
}

const HEADER = 8
/**
 * What the snapshot MAC covers, before the snapshot's bytes: its own
 * version and the seal format's. A change of either makes every controller
 * check its snapshot at its next start, as a snapshot of another seal
 * format is checked (and refused) like any other data. Bump the first when
 * what a replayed state must satisfy changes otherwise (new checks in
 * validate.ts or schema.ts).
 */
const MAC_DOMAIN = `capmesh/snapshot/1/seal/${SEAL_VERSION}\0`

export class FileStore {
  readonly dir: string
  private readonly fsync: boolean
  private readonly compactBytes: number
  private readonly macKey: Uint8Array | undefined
  private logFd: number | null = null
  private logBytes = 0
  private snapshotBytes = 0

  constructor (init: FileStoreInit) {
    this.dir = init.dir
    this.fsync = init.fsync ?? DEFAULT_FSYNC
    this.compactBytes = init.compactBytes ?? DEFAULT_LOG_COMPACT_BYTES
    this.macKey = init.macKey
  }

  /** The MAC of snapshot `state` (one buffer, or the pieces of one) under macKey. */
  private mac (state: Uint8Array | readonly Uint8Array[]): Buffer {
    const h = createHmac('sha256', this.macKey as Uint8Array).update(MAC_DOMAIN)
    for (const piece of pieces(state)) h.update(piece)
    return h.digest()
  }

  private get snapshotPath (): string { return join(this.dir, SNAPSHOT_FILE) }
  private get logPath (): string { return join(this.dir, 'updates.log') }

  /**
   * Reads snapshot and log, repairs a torn log tail, and opens the log for
   * appending. `ahead`: the snapshot as readSnapshotAhead read it, used if
   * the file is still the one it read (otherwise it is read again).
   */
  load (ahead?: SnapshotRead | null): LoadResult {
    try {
      mkdirSync(this.dir, { recursive: true })
      const updates: Uint8Array[] = []
      let own = false
      const stamp = snapshotStamp(this.snapshotPath)
      if (stamp != null) {
        const snap = ahead != null && ahead.stamp === stamp ? ahead.bytes : readFileSync(this.snapshotPath)
        let body = readRecord(snap, 0, false)
        if (body != null && this.macKey != null) {
          const mac = readRecord(snap, HEADER + body.length)
          own = mac != null && mac.length === 32 && timingSafeEqual(mac, this.mac(body))
        }
        // Its own snapshot's MAC vouched for every byte; any other is checked against its CRC32.
        if (!own) body = readRecord(snap, 0)
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
      return this.macKey != null ? { updates, truncatedBytes, own } : { updates, truncatedBytes }
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

  /**
   * Replaces the snapshot with `state` (a whole-document update, or its
   * pieces in order: written one after another, as one record) and empties
   * the log.
   */
  snapshot (state: Uint8Array | readonly Uint8Array[]): void {
    if (this.logFd == null) throw new StoreError('store is not open (call load() first)')
    const tmp = `${this.snapshotPath}.${process.pid}.tmp`
    const fd = openSync(tmp, 'w')
    try {
      writeRecord(fd, state)
      if (this.macKey != null) writeRecord(fd, this.mac(state))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.snapshotPath)
    // The snapshot holds everything the log did: from here on a crash replays nothing twice that matters.
    ftruncateSync(this.logFd, 0)
    if (this.fsync) fsyncSync(this.logFd)
    this.logBytes = 0
    this.snapshotBytes = HEADER + lengthOf(state) + (this.macKey != null ? HEADER + 32 : 0)
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

/** The buffers `body` is made of, in order. */
const pieces = (body: Uint8Array | readonly Uint8Array[]): readonly Uint8Array[] => body instanceof Uint8Array ? [body] : body

const lengthOf = (body: Uint8Array | readonly Uint8Array[]): number => piecesLength(pieces(body))

/** What one writev may take (POSIX's IOV_MAX on Linux). */
const IOV_MAX = 1024

/**
 * Writes `[length][crc32][body]` at the file's position: header and body in
 * one writev, without copying the body into a record first (a whole-registry
 * snapshot or import is tens of MB, and a copy was that much more at the
 * peak). A body in pieces (an update as Yjs encoded it, unjoined) is one
 * record: its checksum runs over the pieces in turn. A write cut short is a
 * torn record, cut off at the next load.
 */
function writeRecord (fd: number, body: Uint8Array | readonly Uint8Array[]): void {
  const parts = pieces(body)
  const header = Buffer.allocUnsafe(HEADER)
  let sum = 0
  for (const piece of parts) sum = crc32(piece, sum)
  header.writeUInt32LE(lengthOf(parts), 0)
  header.writeUInt32LE(sum, 4)
  let rest: Uint8Array[] = [header, ...parts]
  while (rest.length > 0) {
    // writev may write less than asked (large buffers, signals): go on from where it stopped.
    let done = writevSync(fd, rest.slice(0, IOV_MAX))
    let i = 0
    while (i < rest.length && done >= rest[i].length) done -= rest[i++].length
    rest = rest.slice(i)
    if (done > 0) rest[0] = rest[0].subarray(done)
  }
}

/**
 * The record at `offset`, or null if it is torn or (`check`, the default)
 * fails its checksum. Unchecked only where a MAC is verified over it next.
 */
function readRecord (buf: Buffer, offset: number, check = true): Uint8Array | null {
  if (offset + HEADER > buf.length) return null
  const len = buf.readUInt32LE(offset)
  const sum = buf.readUInt32LE(offset + 4)
  if (offset + HEADER + len > buf.length) return null
  const body = buf.subarray(offset + HEADER, offset + HEADER + len)
  // A view, not a copy: the snapshot is tens of MB at 100,000 workers, and is applied once and dropped.
  return !check || crc32(body) === sum ? new Uint8Array(body.buffer, body.byteOffset, body.length) : null
}
