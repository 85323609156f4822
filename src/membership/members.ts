/**
 * The member table: every other controller this one knows of (from the
 * registry, or because it heard from it), by controller id, with its peer
 * id, its status, when it was last heard, and its word (what its latest
 * digest said of its workers, its registry hash, its self-preservation).
 *
 *   unknown ─(heard)─► alive ─(silent unhealthyAfter)─► silent ─(silent staleAfter)─► gone
 *      └──────────────(never heard within staleAfter)───────────────────────────────► gone
 *
 * A worker of an `alive` member has the state its member reports; of an
 * `unknown` member it is `pending`; of a `silent` or `gone` member it is
 * `unhealthy` (not routed to), and it stays so once the member is heard
 * again, until a complete word from it says otherwise. What to do with a
 * gone member's entries is the core's decision, not this table's.
 */
import { EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { HealthState } from '../wire/capability.ts'
import { CODES, partOf, type Digest, type WordChanges } from './digest.ts'

export type MemberStatus = 'unknown' | 'alive' | 'silent' | 'gone'

/** One part of a member's word: the exceptions and loads of the workers that part carries. */
interface WordPart {
  seq: number
  exceptions: Map<string, HealthState>
  loads: Map<string, number>
}

export interface Member {
  status: MemberStatus
  /** Its libp2p peer id, once heard from over the mesh. */
  peerId: string | null
  /** Monotonic ms when first known. */
  since: number
  /** Monotonic ms of the last message, null if none. */
  lastHeard: number | null
  epoch: string | null
  /** Highest digest or changes seq seen in this epoch. */
  seq: number
  /**
   * The seq of the message as of which its word is exactly what it said (every part from one
   * digest, and every changes message since applied in order); null when not (parts of
   * different digests, or a changes message missed). Changes that follow it keep it exact.
   */
  wordSeq: number | null
  /** Its word, split as its digests are (one part unless they are split). */
  parts: Array<WordPart | null>
  /** A digest split otherwise than `parts`, being assembled while `parts` stays current (null if none). */
  next: Array<WordPart | null> | null
  /** Its registry hash as last known: from its digest, or this controller's own right after an exchange with it. */
  registryHash: string | null
  /** When registryHash was learnt (monotonic ms). */
  hashAt: number
  selfPreservation: boolean
  /**
   * Its word covers all of its workers and comes from digests received
   * since it last became alive. False before the first digest and from the
   * moment it goes silent: what it said before a silence may be stale (a
   * worker died meanwhile).
   */
  current: boolean
  /**
   * It went silent (or gone) since its last complete word: this controller
   * judged it unreachable. Until a new word, its workers are `unhealthy`,
   * not `pending`: any of them may have died while it was cut off.
   */
  doubted: boolean
}

export interface MemberTableInit {
  unhealthyAfterMs: number
  staleAfterMs: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
}

export interface MemberTableEvents {
  /** A member's status changed. Listeners must not block. */
  status: [controllerId: string, from: MemberStatus, to: MemberStatus]
  /** The reported state or load of one of a member's workers changed. */
  worker: [controllerId: string, workerId: string]
  /** A member's word became current: the state of every one of its workers may have changed. */
  word: [controllerId: string]
}

export class MemberTable extends EventEmitter<MemberTableEvents> {
  private readonly unhealthyAfterMs: number
  private readonly staleAfterMs: number
  private readonly now: () => number
  private readonly members = new Map<string, Member>()
  private readonly byPeer = new Map<string, string>()

  constructor (init: MemberTableInit) {
    super()
    this.unhealthyAfterMs = init.unhealthyAfterMs
    this.staleAfterMs = init.staleAfterMs
    this.now = init.now ?? (() => performance.now())
  }

  get (controllerId: string): Member | undefined { return this.members.get(controllerId) }

  /** The member behind a libp2p peer id, if it was heard from. */
  byPeerId (peerId: string): Member | undefined {
    const id = this.byPeer.get(peerId)
    return id == null ? undefined : this.members.get(id)
  }

  entries (): IterableIterator<[string, Member]> { return this.members.entries() }

  /** Starts tracking a controller seen in the registry (status `unknown` until heard from). */
  know (controllerId: string): Member {
    let m = this.members.get(controllerId)
    if (m == null) {
      m = { status: 'unknown', peerId: null, since: this.now(), lastHeard: null, epoch: null, seq: -1, wordSeq: null, parts: [], next: null, registryHash: null, hashAt: -Infinity, selfPreservation: false, current: false, doubted: false }
      this.members.set(controllerId, m)
    }
    return m
  }

  /** Any valid message from `controllerId` (over `peerId`): it is alive. */
  heard (controllerId: string, peerId?: string): void {
    const m = this.know(controllerId)
    m.lastHeard = this.now()
    if (peerId != null && m.peerId !== peerId) {
      if (m.peerId != null) this.byPeer.delete(m.peerId)
      m.peerId = peerId
      this.byPeer.set(peerId, controllerId)
    }
    this.move(controllerId, m, 'alive')
  }

  /** Records that `controllerId` holds `hash` as of now (its digest, or an exchange that just ended). */
  hash (controllerId: string, hash: string): void {
    const m = this.know(controllerId)
    m.registryHash = hash
    m.hashAt = this.now()
  }

  /**
   * Applies a digest (or one part of one); emits `worker` for each worker
   * whose reported state or load changed, or `word` when the member's word
   * just became current (or stopped being). A digest split otherwise than the
   * current word (its list grew or shrank past a part) is assembled beside
   * it; the current word stays current until the new one is complete, then
   * only the workers that differ between the two are re-routed.
   */
  digest (controllerId: string, d: Digest, peerId?: string): void {
    const m = this.know(controllerId)
    const [index, count] = d.part ?? [0, 1]
    const sameEpoch = m.epoch === d.epoch
    // Digests can arrive out of order over gossip; an older one (or part) of the same epoch is ignored.
    if (sameEpoch && d.seq < m.seq) return
    const wasAlive = m.status === 'alive'
    const wasCurrent = m.current && wasAlive
    const resplit = sameEpoch && wasCurrent && m.parts.length !== count
    if (resplit) {
      if (m.next == null || m.next.length !== count) m.next = new Array<WordPart | null>(count).fill(null)
      if ((m.next[index]?.seq ?? -1) >= d.seq) return
    } else if (sameEpoch && m.parts.length === count && (m.parts[index]?.seq ?? -1) >= d.seq) {
      return
    }
    const reset = !resplit && (!sameEpoch || m.parts.length !== count)
    if (reset) {
      // A restart, or another split of a word that is not current: nothing of it to keep.
      m.parts = new Array<WordPart | null>(count).fill(null)
    }
    // A digest in the current split supersedes one being assembled in another.
    if (!resplit) m.next = null
    m.epoch = d.epoch
    m.seq = sameEpoch ? Math.max(m.seq, d.seq) : d.seq
    m.registryHash = d.registry_hash
    m.hashAt = this.now()
    m.selfPreservation = d.self_preservation
    const part: WordPart = {
      seq: d.seq,
      exceptions: new Map<string, HealthState>(d.exceptions.map(([id, c]) => [id, CODES[c]])),
      loads: new Map<string, number>(d.loads)
    }
    if (resplit) {
      const next = m.next!
      next[index] = part
      if (next.some(p => p == null)) {
        this.heard(controllerId, peerId)
        return
      }
      const was = m.parts
      m.parts = next
      m.next = null
      m.wordSeq = next.every(p => p?.seq === d.seq) ? d.seq : null
      this.heard(controllerId, peerId)
      for (const id of changedBetween(was, next)) this.emit('worker', controllerId, id)
      return
    }
    const before = m.parts[index]
    m.parts[index] = part
    // Current once every part is in: set before `heard`, so that a member coming alive is re-routed by it.
    m.current = m.parts.every(p => p != null)
    m.wordSeq = m.parts.every(p => p?.seq === d.seq) ? d.seq : null
    if (m.current) m.doubted = false
    this.heard(controllerId, peerId)
    // Coming alive re-routed all its workers already (`status`).
    if (!wasAlive) return
    if (m.current !== wasCurrent || (reset && m.current)) {
      // Its word just became current, or stopped being, or was replaced whole: every worker may have changed.
      this.emit('word', controllerId)
      return
    }
    // Still assembling the parts of a new word: its workers stay pending until the last one.
    if (!m.current || before == null) return
    for (const id of changedWorkers(before, part)) this.emit('worker', controllerId, id)
  }

  /**
   * Applies a changes message: the new state and load of each worker it
   * lists, in the part of the word that holds it; emits `worker` for each
   * that differs from what the word said. Changes that do not follow the
   * last message applied (one was lost, or arrived late) are applied all the
   * same (each carries a worker's state now, so the word is no staler than
   * before), but the word stays inexact until the next full digest; changes
   * from another epoch, or older than what was applied, change nothing.
   */
  changes (controllerId: string, c: WordChanges, peerId?: string): void {
    const m = this.know(controllerId)
    // Changes to a word from another start of the member's, or older than what this table holds.
    if (m.epoch !== c.epoch || c.seq <= m.seq) return
    const wasAlive = m.status === 'alive'
    m.wordSeq = m.wordSeq === c.base ? c.seq : null
    m.seq = c.seq
    m.registryHash = c.registry_hash
    m.hashAt = this.now()
    m.selfPreservation = c.self_preservation
    const changed: string[] = []
    const count = m.parts.length
    for (const [id, code] of c.states) {
      const part = m.parts[partOf(id, count)]
      if (part == null) continue
      const before = part.exceptions.get(id)
      if (code === 'h') {
        if (before == null) continue
        part.exceptions.delete(id)
      } else {
        if (before === CODES[code]) continue
        part.exceptions.set(id, CODES[code])
      }
      changed.push(id)
    }
    for (const [id, load] of c.loads) {
      const part = m.parts[partOf(id, count)]
      if (part == null || (part.loads.get(id) ?? 0) === load) continue
      if (load === 0) part.loads.delete(id)
      else part.loads.set(id, load)
      changed.push(id)
    }
    // A digest part older than these changes, delivered late, must not undo them; nor a new split of older parts.
    for (const part of m.parts) if (part != null) part.seq = c.seq
    m.next = null
    this.heard(controllerId, peerId)
    // Coming alive re-routed all its workers already (`status`); an incomplete word routes none by its word.
    if (!wasAlive || !m.current) return
    for (const id of new Set(changed)) this.emit('worker', controllerId, id)
  }

  /** The state a worker of `controllerId` should be routed by. */
  stateOf (controllerId: string, workerId: string): HealthState {
    const m = this.members.get(controllerId)
    if (m == null || m.status === 'unknown') return 'pending'
    if (m.status !== 'alive') return 'unhealthy'
    // Heard from (a sync, a registry update) but no complete word since it was last silent or
    // unknown: the member is alive, but which of its workers are is not known. Not `healthy`: a
    // worker that died meanwhile would be routed to until the digest came. Never heard from since
    // this controller started (restored from its data dir): `pending`, a last resort. Judged
    // unreachable before (a partition just healed): `unhealthy`, as while it was cut off. Its
    // workers died there unseen, and after a heal over a lossy network its first digest can be
    // seconds behind the first sync or relayed message (a dial waiting out SYN retransmissions).
    if (!m.current) return m.doubted ? 'unhealthy' : 'pending'
    return m.parts[partOf(workerId, m.parts.length)]?.exceptions.get(workerId) ?? 'healthy'
  }

  loadOf (controllerId: string, workerId: string): number {
    const m = this.members.get(controllerId)
    if (m == null || m.parts.length === 0) return 0
    return m.parts[partOf(workerId, m.parts.length)]?.loads.get(workerId) ?? 0
  }

  /** Applies the silence timeouts. */
  sweep (): void {
    const now = this.now()
    for (const [id, m] of this.members) {
      const silent = now - (m.lastHeard ?? m.since)
      if (m.status === 'alive' && silent >= this.unhealthyAfterMs) this.move(id, m, 'silent')
      if ((m.status === 'silent' || m.status === 'unknown') && silent >= this.staleAfterMs) this.move(id, m, 'gone')
    }
  }

  forget (controllerId: string): void {
    const m = this.members.get(controllerId)
    if (m?.peerId != null) this.byPeer.delete(m.peerId)
    this.members.delete(controllerId)
  }

  private move (controllerId: string, m: Member, to: MemberStatus): void {
    if (m.status === to) return
    const from = m.status
    m.status = to
    if (to !== 'alive') m.current = false
    if (to === 'silent' || to === 'gone') m.doubted = true
    this.emit('status', controllerId, from, to)
  }
}

/** Workers whose reported state or load differs between two versions of one part. */
function changedWorkers (before: WordPart, after: WordPart): Set<string> {
  const changed = new Set<string>()
  for (const [id, s] of after.exceptions) if (before.exceptions.get(id) !== s) changed.add(id)
  for (const id of before.exceptions.keys()) if (!after.exceptions.has(id)) changed.add(id)
  for (const [id, l] of after.loads) if (before.loads.get(id) !== l) changed.add(id)
  for (const id of before.loads.keys()) if (!after.loads.has(id)) changed.add(id)
  return changed
}

/** Workers whose reported state or load differs between two complete words, split differently. */
function changedBetween (before: Array<WordPart | null>, after: Array<WordPart | null>): Set<string> {
  const changed = new Set<string>()
  const stateIn = (word: Array<WordPart | null>, id: string): HealthState | undefined => word[partOf(id, word.length)]?.exceptions.get(id)
  const loadIn = (word: Array<WordPart | null>, id: string): number | undefined => word[partOf(id, word.length)]?.loads.get(id)
  for (const [x, y] of [[before, after], [after, before]]) {
    for (const p of x) {
      if (p == null) continue
      for (const [id, s] of p.exceptions) if (stateIn(y, id) !== s) changed.add(id)
      for (const [id, l] of p.loads) if (loadIn(y, id) !== l) changed.add(id)
    }
  }
  return changed
}
