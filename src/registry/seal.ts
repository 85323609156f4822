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
 * The digest is a fixed tree of SHA-256: each entry's leaf is SHA-256(worker
 * id, entry text); leaves fall into 4,096 buckets by a hash of the worker id;
 * a bucket's hash covers its leaves sorted, a group's the hashes of its 64
 * buckets, the root the 64 group hashes. A change of k entries re-hashes k
 * leaves, at most k small buckets and k groups, and the root: sealing a batch
 * of registrations, checking one registration and checking a 5,000-entry
 * heal delta all stay cheap (one signature per segment per update, not one
 * per entry). docs/internals.md ("Owner-signed segments") has the reasoning
 * and the costs.
 */
import { createHash, generateKeyPairSync, hash, sign, verify, type KeyObject } from 'node:crypto'
import { InvalidStateError } from '../errors.ts'
import type { SealAuthority } from '../gossip/seal-keys.ts'

/** The key of a segment's seal: a space cannot start a worker id, so it never collides with one. */
export const SEAL_KEY = ' seal'
/** Seal format version. */
export const SEAL_VERSION = 2
/** Leaf buckets of a segment's digest, by a hash of the worker id. */
const BUCKETS = 4096
/** Buckets per group (a power of two): a group's hash covers its buckets' hashes, the root covers the groups'. */
const GROUP_BITS = 6
const GROUP = 1 << GROUP_BITS
const GROUPS = BUCKETS / GROUP

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

/** SHA-256 of `bytes`, as a 32-character latin1 string (crypto.hash returns a string 3x cheaper than a Buffer of 32 bytes). */
function sha (bytes: Uint8Array): string {
  return hash('sha256', bytes, 'binary')
}

/** SHA-256 of a latin1 string's bytes (one a character), as a latin1 string. */
function shaLatin1 (bytes: string): string {
  return sha(Buffer.from(bytes, 'latin1'))
}

/** The hash of a bucket with no leaves. */
const EMPTY_BUCKET = shaLatin1('')
/** A group's bytes while all its buckets are empty. */
const EMPTY_GROUP_BYTES = Buffer.from(EMPTY_BUCKET.repeat(GROUP), 'latin1')
const EMPTY_GROUP = sha(EMPTY_GROUP_BYTES)
/** The root covers this, then the 64 group hashes. */
const ROOT_PREFIX = `capmesh/segment/${SEAL_VERSION}\0`
/** The root's bytes while all groups are empty. */
const EMPTY_ROOT_BYTES = Buffer.from(ROOT_PREFIX + EMPTY_GROUP.repeat(GROUPS), 'latin1')

/** FNV-1a of the worker id: which bucket its leaf falls in. Not a security boundary (the hashes above it are). */
function bucketOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) % BUCKETS
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

/** The hash of a bucket whose leaves are `ordered`. */
function bucketHash (ordered: readonly string[] | undefined): string {
  return ordered == null || ordered.length === 0 ? EMPTY_BUCKET : shaLatin1(ordered.join(''))
}

/**
 * Where hashWith writes a copy (hashing is synchronous, so one serves every
 * digest): a heal's previews made thousands of 2 KiB copies, and each new
 * 8 KiB pool Node cut them from cost more than the hashing (~10 % of a
 * 32-controller heal's CPU, in a profile).
 */
let scratch = Buffer.allocUnsafeSlow(EMPTY_ROOT_BYTES.length)

/**
 * SHA-256 of `bytes` with the 32-byte hashes `over` (offset → latin1 string)
 * written in, leaving `bytes` as it was: no copy of a group's or the root's
 * bytes for a preview of a few changes. `shared` bytes (the empty group's or
 * root's) are never written into, not even for a moment.
 */
function hashWith (bytes: Buffer, over: ReadonlyMap<number, string>, encoding: 'binary' | 'hex', shared = false): string {
  if (over.size > 4 || shared) {
    // Many (a heal): one copy to write into beats saving and putting back each.
    if (scratch.length < bytes.length) scratch = Buffer.allocUnsafeSlow(bytes.length)
    const copy = scratch.subarray(0, bytes.length)
    bytes.copy(copy)
    for (const [offset, h] of over) copy.write(h, offset, 'latin1')
    return hash('sha256', copy, encoding)
  }
  const held = new Map<number, string>()
  for (const offset of over.keys()) held.set(offset, bytes.toString('latin1', offset, offset + 32))
  try {
    for (const [offset, h] of over) bytes.write(h, offset, 'latin1')
    return hash('sha256', bytes, encoding)
  } finally {
    for (const [offset, h] of held) bytes.write(h, offset, 'latin1')
  }
}

/**
 * A DigestPreview's digest changed while changes were being recorded (a
 * check that yields to the event loop, while this controller wrote): its
 * root would mix two states. Not a verdict on the update: check it again.
 */
export class DigestMovedError extends Error {
  constructor () {
    super('the segment digest changed while a preview of it was being recorded')
    this.name = 'DigestMovedError'
  }
}

/** Leaf changes for one segment: worker id → its new leaf, or null when its entry goes. */
export type LeafChanges = Map<string, string | null>

/** What a DigestPreview computed: the hashes that change, and the root. */
interface Previewed {
  /** The base digest's leaf stamp they were computed against. */
  stamp: number
  buckets: Map<number, string>
  groups: Map<number, string>
  root: string
}

/**
 * The digest of one segment's live entries, kept up to date as entries come
 * and go; bucket and group hashes are cached and recomputed only where
 * leaves changed.
 */
export class SegmentDigest {
  /** Worker id → its leaf. */
  private readonly leaves = new Map<string, string>()
  /**
   * For a digest made `deferred`: what yields every entry's (worker id,
   * leaf) of the segment as it is when first needed. Until then set() and
   * delete() only count as changes (the source is the truth), and the first
   * read of a leaf, the size or a hash fills the digest from it.
   */
  private source: (() => Iterable<[string, string]>) | null = null
  /**
   * Each bucket's leaves kept in order as they come and go (allocated at a
   * bucket's first leaf), so that a stale bucket is hashed without sorting.
   */
  private readonly ordered: Array<string[] | undefined> = new Array(BUCKETS)
  /**
   * Each group's bytes, its 64 bucket hashes one after another, allocated
   * when the group is first hashed (none yet: every bucket of it is empty).
   * Bytes, not strings: hashed as they are, nothing joined or copied.
   */
  private readonly groups: Array<Buffer | undefined> = new Array(GROUPS)
  /**
   * The root's bytes: the prefix, then the 64 group hashes; allocated when
   * first written (a preview of a segment new to this replica reads the
   * empty root's).
   */
  private rootHeld: Buffer | null = null
  /** Buckets whose hash (and so their group's, and the root) is out of date. */
  private readonly stale = new Set<number>()
  /** The root (hex) while nothing is stale. */
  private cachedRoot: string | null = null
  private current: Seal | null = null
  /** Grows with every change of a leaf. */
  private leafChanges = 0
  private sealChanges = 0

  /** The seal stored in the segment (verified when it came in), if any. */
  get seal (): Seal | null { return this.current }
  set seal (s: Seal | null) {
    this.current = s
    this.sealChanges++
  }

  /**
   * A digest filled from `source` only when first needed: a segment replayed
   * from this controller's own snapshot is checked against again only when
   * its owner next writes (for its own segments: never, the next write
   * starts a new generation), so a restart does not hash 100,000 leaves it
   * may never use.
   */
  static deferred (source: () => Iterable<[string, string]>): SegmentDigest {
    const d = new SegmentDigest()
    d.source = source
    return d
  }

  /** Whether this digest waits for its first use to be filled (see deferred): its set() takes no leaf. */
  get deferred (): boolean { return this.source != null }

  /** Fills a deferred digest from its source (once). */
  private fill (): void {
    const source = this.source
    if (source == null) return
    this.source = null
    for (const [key, leaf] of source()) {
      this.leaves.set(key, leaf)
      const b = bucketOf(key)
      const list = this.ordered[b]
      if (list == null) this.ordered[b] = [leaf]
      else list.push(leaf)
      this.stale.add(b)
    }
    // The default order of sort() is that of `<` on strings (UTF-16 code units), which slotOf keeps.
    for (const b of this.stale) this.ordered[b]!.sort()
    this.cachedRoot = null
  }

  /** Grows with every change (leaf or seal): a check made against this digest holds while it is unchanged. */
  get stamp (): number { return this.leafChanges + this.sealChanges }

  /** Grows with every change of a leaf. */
  get leafStamp (): number { return this.leafChanges }

  get size (): number {
    this.fill()
    return this.leaves.size
  }

  leaf (key: string): string | undefined {
    this.fill()
    return this.leaves.get(key)
  }

  set (key: string, leaf: string): void {
    if (this.source != null) {
      this.leafChanges++
      return
    }
    const before = this.leaves.get(key)
    if (before === leaf) return
    const b = bucketOf(key)
    const list = this.ordered[b] ?? (this.ordered[b] = [])
    if (before != null) list.splice(slotOf(list, before), 1)
    list.splice(slotOf(list, leaf), 0, leaf)
    this.leaves.set(key, leaf)
    this.changed(b)
  }

  delete (key: string): void {
    if (this.source != null) {
      this.leafChanges++
      return
    }
    const before = this.leaves.get(key)
    if (before == null) return
    const b = bucketOf(key)
    const list = this.ordered[b]!
    list.splice(slotOf(list, before), 1)
    this.leaves.delete(key)
    this.changed(b)
  }

  /** The root of the current entries. */
  root (): string {
    this.refresh()
    return this.cachedRoot!
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

  /**
   * The hashes that `dirty` (per bucket, flat pairs of worker id and new
   * leaf or null; each id at most once) changes, and the root they give,
   * without applying them.
   */
  computePreview (dirty: ReadonlyMap<number, ReadonlyArray<string | null>>): Previewed {
    this.fill()
    this.refresh()
    const buckets = new Map<number, string>()
    // Per group, the new bucket hashes by their offset in the group's bytes.
    const touched = new Map<number, Map<number, string>>()
    for (const [b, pairs] of dirty) {
      const held = this.ordered[b]
      let list: string[]
      if ((held == null || held.length === 0) && pairs.length === 2) {
        // A first leaf in an empty bucket (most of a heal's into a small segment): nothing to order.
        list = pairs[1] == null ? [] : [pairs[1]]
      } else {
        list = held?.slice() ?? []
        for (let i = 0; i < pairs.length; i += 2) {
          const before = this.leaves.get(pairs[i] as string)
          if (before != null) list.splice(slotOf(list, before), 1)
        }
        for (let i = 1; i < pairs.length; i += 2) {
          const leaf = pairs[i]
          if (leaf != null) list.splice(slotOf(list, leaf), 0, leaf)
        }
      }
      const h = bucketHash(list)
      buckets.set(b, h)
      const g = b >>> GROUP_BITS
      const inGroup = touched.get(g)
      if (inGroup == null) touched.set(g, new Map([[(b & (GROUP - 1)) * 32, h]]))
      else inGroup.set((b & (GROUP - 1)) * 32, h)
    }
    const groups = new Map<number, string>()
    const atRoot = new Map<number, string>()
    for (const [g, hashes] of touched) {
      const held = this.groups[g]
      const h = held != null ? hashWith(held, hashes, 'binary') : hashWith(EMPTY_GROUP_BYTES, hashes, 'binary', true)
      groups.set(g, h)
      atRoot.set(ROOT_PREFIX.length + g * 32, h)
    }
    const root = this.rootHeld != null ? hashWith(this.rootHeld, atRoot, 'hex') : hashWith(EMPTY_ROOT_BYTES, atRoot, 'hex', true)
    return { stamp: this.leafChanges, buckets, groups, root }
  }

  /**
   * Takes the hashes `p` computed when the changes it previewed are exactly
   * the ones made since (the apply of a checked update): the same state, not
   * hashed twice. Anything else, and nothing is taken.
   */
  adopt (p: DigestPreview): void {
    this.fill()
    const c = p.previewed
    if (c == null || p.base !== this || this.leafChanges !== c.stamp + p.changes) return
    // Each previewed key needed a change of its own to reach its new leaf: with as many changes as
    // keys, and every key at its new leaf, there was no other.
    for (const pairs of p.dirty.values()) {
      for (let i = 0; i < pairs.length; i += 2) if ((this.leaves.get(pairs[i] as string) ?? null) !== pairs[i + 1]) return
    }
    for (const [b, h] of c.buckets) this.groupBytes(b >>> GROUP_BITS).write(h, (b & (GROUP - 1)) * 32, 'latin1')
    for (const [g, h] of c.groups) this.rootBytes.write(h, ROOT_PREFIX.length + g * 32, 'latin1')
    this.stale.clear()
    this.cachedRoot = c.root
  }

  private changed (b: number): void {
    this.stale.add(b)
    this.cachedRoot = null
    this.leafChanges++
  }

  private get rootBytes (): Buffer {
    return this.rootHeld ?? (this.rootHeld = Buffer.from(EMPTY_ROOT_BYTES))
  }

  private groupBytes (g: number): Buffer {
    return this.groups[g] ?? (this.groups[g] = Buffer.from(EMPTY_GROUP_BYTES))
  }

  private refresh (): void {
    this.fill()
    if (this.cachedRoot != null) return
    const groups = new Set<number>()
    for (const b of this.stale) {
      const g = b >>> GROUP_BITS
      this.groupBytes(g).write(bucketHash(this.ordered[b]), (b & (GROUP - 1)) * 32, 'latin1')
      groups.add(g)
    }
    this.stale.clear()
    for (const g of groups) this.rootBytes.write(sha(this.groupBytes(g)), ROOT_PREFIX.length + g * 32, 'latin1')
    this.cachedRoot = hash('sha256', this.rootBytes, 'hex')
  }
}

/**
 * Changes to a segment's digest, collected for the root they would give:
 * each is filed under its bucket as it comes (the worker id hashed once),
 * and one that leaves a key's leaf as it is held is no change. Made against
 * the digest as it is: recorded and computed before the digest changes
 * (root() throws DigestMovedError otherwise).
 */
export class DigestPreview {
  readonly base: SegmentDigest
  /** Per bucket: flat pairs (worker id, new leaf or null), no array per change. */
  readonly dirty = new Map<number, Array<string | null>>()
  /** Real changes recorded. */
  changes = 0
  /** Entries the segment would hold after them. */
  entries: number
  /** What root() computed (for SegmentDigest.adopt). */
  previewed: Previewed | null = null
  private readonly stamp: number

  constructor (base: SegmentDigest) {
    this.base = base
    this.entries = base.size
    this.stamp = base.leafStamp
  }

  /** `key`'s leaf becomes `leaf` (null: its entry goes). Each key at most once. */
  change (key: string, leaf: string | null): void {
    const held = this.base.leaf(key) ?? null
    if (held === leaf) return
    const b = bucketOf(key)
    const list = this.dirty.get(b)
    if (list == null) this.dirty.set(b, [key, leaf])
    else list.push(key, leaf)
    this.changes++
    this.entries += (held == null ? 0 : -1) + (leaf == null ? 0 : 1)
    this.previewed = null
  }

  /** The root of the segment with the changes recorded. */
  root (): string {
    if (this.base.leafStamp !== this.stamp) throw new DigestMovedError()
    if (this.changes === 0) return this.base.root()
    this.previewed ??= this.base.computePreview(this.dirty)
    return this.previewed.root
  }
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
