/**
 * Owner-signed segments: what a controller writes into its own segments is
 * verifiable by every other controller as coming from it.
 *
 * Each segment carries a *seal* under the reserved key `" seal"` (a space:
 * never a worker id): the segment key, a sequence number, the root of a
 * digest of the segment's live entries, the signer (the owner's peer id),
 * and an Ed25519 signature by the owner's peer key over the first three.
 * The owner rewrites the seal in every transaction that changes the segment,
 * so any state of the segment that a peer can reach by applying updates is
 * either one the owner signed or is refused (validate.ts computes the state
 * an update would leave each touched segment in, before applying it). It
 * writes seals under a Yjs client id of their own, so the seals it replaces
 * merge into one deleted item (Registry.writeSeal).
 *
 * The digest is two-level: each entry's leaf is SHA-256(worker id, entry
 * text); leaves fall into 256 buckets by a hash of the worker id; a bucket's
 * hash covers its leaves sorted; the root covers the 256 bucket hashes. A
 * change of k entries re-hashes k leaves and at most k buckets, so sealing a
 * registration and checking a 5,000-entry heal delta stay cheap (one
 * signature per segment per update, not one per entry). docs/internals.md
 * ("Owner-signed segments") has the reasoning and the costs.
 */
import { createHash, generateKeyPairSync, hash, sign, verify, type KeyObject } from 'node:crypto'
import { InvalidStateError } from '../errors.ts'
import type { SealAuthority } from '../gossip/seal-keys.ts'

/** The key of a segment's seal: a space cannot start a worker id, so it never collides with one. */
export const SEAL_KEY = ' seal'
/** Seal format version. */
export const SEAL_VERSION = 1
const BUCKETS = 256

/** A segment's seal as stored (its JSON text) in the segment. */
export interface Seal {
  v: typeof SEAL_VERSION
  /** The signer: the owner's peer id (what SealAuthority.signerOf returns for the owner). */
  signer: string
  /** Grows with every seal the owner writes into this segment; an older seal never replaces a newer one. */
  seq: number
  /** Digest root of the segment's live entries (64 hex digits). */
  root: string
  /** Ed25519 signature over sealMessage(segment, seq, root), base64. */
  sig: string
}

export type { SealAuthority } from '../gossip/seal-keys.ts'

/** Data in a segment that its owner did not sign: refused whole, like malformed data, but named apart (metrics, logs). */
export class UnsignedWriteError extends InvalidStateError {
  constructor (message: string) {
    super(message, undefined, 'CAPMESH_ERR_UNSIGNED_WRITE')
    this.name = 'UnsignedWriteError'
  }
}

const SIGNER = /^[A-Za-z0-9]{1,128}$/
const ROOT = /^[0-9a-f]{64}$/
const SIG = /^[A-Za-z0-9+/]{86}==$/

/** The seal's JSON text, as stored. */
export function encodeSeal (s: Seal): string {
  return JSON.stringify({ v: s.v, signer: s.signer, seq: s.seq, root: s.root, sig: s.sig })
}

/** Reads a stored seal; null for anything that is not exactly a well-formed seal. */
export function decodeSeal (value: unknown): Seal | null {
  if (typeof value !== 'string' || value.length > 512) return null
  let s: unknown
  try {
    s = JSON.parse(value)
  } catch {
    return null
  }
  if (s == null || typeof s !== 'object' || Array.isArray(s)) return null
  const o = s as Record<string, unknown>
  if (Object.keys(o).length !== 5 || o.v !== SEAL_VERSION) return null
  if (typeof o.signer !== 'string' || !SIGNER.test(o.signer)) return null
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 1) return null
  if (typeof o.root !== 'string' || !ROOT.test(o.root)) return null
  if (typeof o.sig !== 'string' || !SIG.test(o.sig)) return null
  return o as unknown as Seal
}

/** What the owner signs: domain, segment key, sequence number and root. */
export function sealMessage (segment: string, seq: number, root: string): Uint8Array {
  return Buffer.from(`capmesh/seal/${SEAL_VERSION}\0${segment}\0${seq}\0${root}`)
}

/** Writes a seal for `segment` in the state whose digest root is `root`. */
export function makeSeal (authority: SealAuthority, segment: string, seq: number, root: string): Seal {
  const sig = Buffer.from(authority.sign(sealMessage(segment, seq, root))).toString('base64')
  return { v: SEAL_VERSION, signer: authority.self, seq, root, sig }
}

/**
 * Why `seal` does not vouch for a segment of `owner` whose entries digest to
 * `root`, or null when it does: the owner's admitted signer signed exactly
 * this state.
 */
export function sealProblem (authority: SealAuthority, segment: string, owner: string, seal: Seal, root: string): string | null {
  const signer = authority.signerOf(owner)
  if (signer == null) return `${owner} is not an admitted controller`
  if (seal.signer !== signer) return `sealed by ${seal.signer.slice(0, 60)}, not by ${owner}'s key ${signer}`
  if (seal.root !== root) return 'its entries are not the ones its owner sealed'
  if (!authority.verify(signer, sealMessage(segment, seal.seq, seal.root), Buffer.from(seal.sig, 'base64'))) return 'the seal\'s signature does not verify'
  return null
}

/** An entry's leaf: SHA-256 over its worker id (length-prefixed) and its stored text, as a 32-character latin1 string (compact to hold). */
export function entryLeaf (workerId: string, text: string): string {
  // One-shot hash (the same bytes as hashing the two parts in turn): no Hash object per entry, 2-3x faster over a catch-up's 100,000.
  return hash('sha256', `${workerId.length}:${workerId}${text}`, 'binary')
}

/** FNV-1a of the worker id: which bucket its leaf falls in. Not a security boundary (the buckets' hashes are). */
function bucketOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) % BUCKETS
}

/** SHA-256 of a bucket's leaves, given in order (the default sort's: by UTF-16 code unit, here bytes), into `out` at `offset` (32 zero bytes for an empty bucket). */
function hashSorted (sorted: readonly string[], out: Buffer, offset: number): void {
  if (sorted.length === 0) out.fill(0, offset, offset + 32)
  else createHash('sha256').update(sorted.join(''), 'binary').digest().copy(out, offset)
}

/** Where `leaf` is, or goes, in the ordered `list` (binary search, the order of `<`). */
function slotOf (list: readonly string[], leaf: string): number {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (list[mid] < leaf) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Leaf changes for one segment: worker id → its new leaf, or null when its entry goes. */
export type LeafChanges = Map<string, string | null>

/**
 * The digest of one segment's live entries, kept up to date as entries come
 * and go; bucket hashes are cached and recomputed only where leaves changed.
 */
export class SegmentDigest {
  private readonly buckets: Array<Map<string, string> | undefined> = new Array(BUCKETS)
  /**
   * Each bucket's leaves kept in order as they come and go, so that a stale
   * bucket is hashed without sorting it again: a batch of registrations
   * stales most buckets, and sorting every one of them cost more than the
   * hashing (100,000 entries: ~400 leaves a bucket).
   */
  private readonly ordered: Array<string[] | undefined> = new Array(BUCKETS)
  /** The 256 bucket hashes, one after another: what the root hashes. */
  private readonly hashes = Buffer.alloc(BUCKETS * 32)
  /** Buckets whose hash in `hashes` is out of date. */
  private readonly stale = new Set<number>()
  private current: Seal | null = null
  private count = 0
  /** Grows with every change: a check made against this digest holds while it is unchanged. */
  private changes = 0

  /** The seal stored in the segment (verified when it came in), if any. */
  get seal (): Seal | null { return this.current }
  set seal (s: Seal | null) {
    this.current = s
    this.changes++
  }

  get stamp (): number { return this.changes }

  get size (): number { return this.count }

  leaf (key: string): string | undefined { return this.buckets[bucketOf(key)]?.get(key) }

  set (key: string, leaf: string): void {
    const b = bucketOf(key)
    let m = this.buckets[b]
    if (m == null) this.buckets[b] = m = new Map()
    const before = m.get(key)
    if (before === leaf) return
    let list = this.ordered[b]
    if (list == null) this.ordered[b] = list = []
    if (before == null) this.count++
    else list.splice(slotOf(list, before), 1)
    list.splice(slotOf(list, leaf), 0, leaf)
    m.set(key, leaf)
    this.stale.add(b)
    this.changes++
  }

  delete (key: string): void {
    const b = bucketOf(key)
    const before = this.buckets[b]?.get(key)
    if (before != null && this.buckets[b]!.delete(key)) {
      const list = this.ordered[b]!
      list.splice(slotOf(list, before), 1)
      this.count--
      this.stale.add(b)
      this.changes++
    }
  }

  /** The root of the current entries. */
  root (): string {
    this.refresh()
    return rootOf(this.hashes)
  }

  /** The root the segment would have after `changes`, without applying them. */
  rootWith (changes: LeafChanges): string {
    const p = this.preview()
    for (const [key, leaf] of changes) p.change(key, leaf)
    return p.root()
  }

  /** A preview of changes to this digest, for the root they would give (see DigestPreview). */
  preview (): DigestPreview {
    return new DigestPreview(this)
  }

  /** The leaf held for `key` in bucket `b` (its bucket, known to the caller). */
  leafIn (b: number, key: string): string | undefined { return this.buckets[b]?.get(key) }

  /**
   * The root with the bucket changes `dirty` (per bucket, flat pairs of key
   * and new leaf or null; each key at most once), without applying them.
   */
  rootWithDirty (dirty: ReadonlyArray<ReadonlyArray<string | null> | undefined>): string {
    this.refresh()
    const hashes = Buffer.from(this.hashes)
    for (let b = 0; b < BUCKETS; b++) {
      const list = dirty[b]
      if (list == null) continue
      const held = this.buckets[b]
      // Start from the bucket's leaves already in order: removing keeps the order, and the sort
      // below has only the new leaves to place (V8's sort is fast on runs already in order).
      const leaves = held == null || held.size === 0 ? [] : this.ordered[b]!.slice()
      const added: string[] = []
      for (let i = 0; i < list.length; i += 2) {
        const before = held?.get(list[i] as string)
        if (before != null) leaves.splice(slotOf(leaves, before), 1)
        const leaf = list[i + 1]
        if (leaf != null) added.push(leaf)
      }
      if (added.length > 0) {
        for (const leaf of added) leaves.push(leaf)
        leaves.sort()
      }
      hashSorted(leaves, hashes, b * 32)
    }
    return rootOf(hashes)
  }

  private refresh (): void {
    for (const b of this.stale) hashSorted(this.ordered[b] ?? [], this.hashes, b * 32)
    this.stale.clear()
  }
}

/**
 * Changes to a segment's digest, collected for the root they would give:
 * each is filed under its bucket as it comes (the worker id hashed once),
 * and one that leaves a key's leaf as it is held is no change.
 */
export class DigestPreview {
  private readonly dirty: Array<Array<string | null> | undefined> = new Array(BUCKETS)
  private readonly base: SegmentDigest
  /** Real changes recorded. */
  changes = 0
  /** Entries the segment would hold after them. */
  entries: number

  constructor (base: SegmentDigest) {
    this.base = base
    this.entries = base.size
  }

  /** `key`'s leaf becomes `leaf` (null: its entry goes). Each key at most once. */
  change (key: string, leaf: string | null): void {
    const b = bucketOf(key)
    const held = this.base.leafIn(b, key) ?? null
    if (held === leaf) return
    const list = this.dirty[b] ?? (this.dirty[b] = [])
    // Pairs flat (key, leaf, key, leaf...): no array per change.
    list.push(key, leaf)
    this.changes++
    this.entries += (held == null ? 0 : -1) + (leaf == null ? 0 : 1)
  }

  /** The root of the segment with the changes recorded. */
  root (): string {
    return this.changes === 0 ? this.base.root() : this.base.rootWithDirty(this.dirty)
  }
}

function rootOf (hashes: Buffer): string {
  return createHash('sha256').update(`capmesh/segment/${SEAL_VERSION}\0`).update(hashes).digest('hex')
}

/**
 * Ed25519 keys held in memory, one per owner: authorities for registries
 * that share this directory, each signing as its owner and trusting the
 * owners listed here. What a registry uses when none is given (a directory
 * of itself alone), and what tests and tools use; controllers sign with their
 * libp2p peer key (gossip/seal-keys.ts).
 */
export class SealDirectory {
  private readonly keys = new Map<string, { signer: string, publicKey: KeyObject, privateKey: KeyObject }>()
  private readonly signers = new Map<string, KeyObject>()

  /** The authority of `owner`, with a new key pair if it has none yet. */
  authority (owner: string): SealAuthority {
    let k = this.keys.get(owner)
    if (k == null) {
      const { publicKey, privateKey } = generateKeyPairSync('ed25519')
      const signer = 'k' + createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 40)
      this.keys.set(owner, k = { signer, publicKey, privateKey })
      this.signers.set(signer, publicKey)
    }
    const { signer, privateKey } = k
    return {
      self: signer,
      sign: message => sign(null, message, privateKey),
      signerOf: o => this.keys.get(o)?.signer,
      verify: (s, message, signature) => {
        const key = this.signers.get(s)
        return key != null && signature.length === 64 && verify(null, message, key, signature)
      }
    }
  }
}
