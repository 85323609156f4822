/**
 * An in-memory replica for protocol tests (no Yjs, no sockets): a grow-only
 * map of named blobs. Its state vector is the sorted list of names it holds,
 * a diff is every blob the other side lacks, and applying one adds them.
 * Deterministic and cheap, so sync and scheduling tests can compare
 * replicas byte for byte, as yjs's own test network does.
 */
import type { SyncReplica } from '../../src/gossip/sync.ts'

const enc = new TextEncoder()
const dec = new TextDecoder()

export class MemoryReplica implements SyncReplica {
  readonly items = new Map<string, Uint8Array>()
  /** Deltas applied, in order (their sizes). */
  readonly applied: number[] = []
  /** Items received in a delta that this replica already held (an exchange that overlapped another). */
  duplicates = 0
  /** Refuse every delta (to test a rejected exchange). */
  refuse = false
  /** While set, an exchange's delta waits for this promise before it is applied (a long apply: a whole registry). */
  applyGate: Promise<void> | null = null
  /** Deltas waiting at the gate. */
  waitingAtGate = 0

  constructor (items: Record<string, Uint8Array | number> = {}) {
    for (const [k, v] of Object.entries(items)) this.items.set(k, typeof v === 'number' ? blob(k, v) : v)
  }

  stateVector (): Uint8Array {
    return enc.encode(JSON.stringify([...this.items.keys()].sort()))
  }

  checkStateVector (sv: Uint8Array): void {
    const v: unknown = JSON.parse(dec.decode(sv))
    if (!Array.isArray(v) || v.some(x => typeof x !== 'string')) throw new Error('not a list of names')
  }

  /**
   * In pieces, as a Yjs replica's is: a count, then each blob's name and
   * length, and the blob itself (the held bytes, not a copy), so frames
   * are cut across pieces' edges.
   */
  diff (sv: Uint8Array): Uint8Array[] {
    const have = new Set(JSON.parse(dec.decode(sv)) as string[])
    const missing = [...this.items].filter(([k]) => !have.has(k)).sort(([a], [b]) => a < b ? -1 : 1)
    const count = new Uint8Array(4)
    new DataView(count.buffer).setUint32(0, missing.length)
    const pieces: Uint8Array[] = [count]
    for (const [k, v] of missing) {
      const key = enc.encode(k)
      const head = new Uint8Array(8 + key.length)
      const dv = new DataView(head.buffer)
      dv.setUint32(0, key.length)
      head.set(key, 4)
      dv.setUint32(4 + key.length, v.length)
      pieces.push(head)
      if (v.length > 0) pieces.push(v)
    }
    return pieces
  }

  /** The anti-entropy apply: `apply`, after the gate if one is set. */
  async applyDelta (update: Uint8Array): Promise<boolean> {
    if (this.applyGate != null) {
      this.waitingAtGate++
      try {
        await this.applyGate
      } finally {
        this.waitingAtGate--
      }
    }
    return this.apply(update)
  }

  apply (update: Uint8Array): boolean {
    if (this.refuse) throw new Error('refused by the test')
    const dv = new DataView(update.buffer, update.byteOffset, update.byteLength)
    const n = dv.getUint32(0)
    let at = 4
    const add: Array<[string, Uint8Array]> = []
    for (let i = 0; i < n; i++) {
      const kl = dv.getUint32(at)
      const k = dec.decode(update.subarray(at + 4, at + 4 + kl))
      at += 4 + kl
      const vl = dv.getUint32(at)
      if (at + 4 + vl > update.length) throw new Error('truncated')
      add.push([k, update.slice(at + 4, at + 4 + vl)])
      at += 4 + vl
    }
    let changed = false
    for (const [k, v] of add) {
      if (this.items.has(k)) this.duplicates++
      else changed = true
      this.items.set(k, v)
    }
    this.applied.push(update.length)
    return changed
  }

  /** A digest of the content, to compare replicas. */
  digest (): string {
    return [...this.items].sort(([a], [b]) => a < b ? -1 : 1).map(([k, v]) => `${k}:${v.length}:${v[0] ?? ''}:${v[v.length - 1] ?? ''}`).join(',')
  }
}

/** `size` bytes derived from `name` (so a corrupted copy differs). */
export function blob (name: string, size: number): Uint8Array {
  const out = new Uint8Array(size)
  let h = 2166136261
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619)
  for (let i = 0; i < size; i++) {
    h = Math.imul(h ^ i, 16777619)
    out[i] = h & 0xff
  }
  return out
}
