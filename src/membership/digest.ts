/**
 * The liveness digest: a controller's periodic word about the workers it
 * owns, on the liveness topic (JSON inside the gossip envelope).
 *
 * Compact on purpose: every owned worker is healthy except those listed in
 * `exceptions` (u = unhealthy, d = draining, p = pending); `loads` lists
 * non-zero in-flight counts. It also carries the sender's registry hash,
 * self-preservation, its listen addresses and, after a new controller
 * connected, an address of each controller it is connected to.
 *
 * A digest too large for one gossip message (tens of thousands of listed
 * workers: a mass silence, or many busy workers) is split into `count`
 * parts: a worker's state travels in part `partOf(id, count)`, and every
 * part carries the other fields. Parts of one digest share its `seq`. A
 * receiver knows a worker's state once the part holding it has arrived.
 * Digests that fit one message carry no `part` field, exactly as before
 * parts existed.
 *
 * Between full digests, a large word travels as its changes: a `WordChanges`
 * message (on its own topic, see membership.ts) lists only the workers whose
 * state or load changed since the digest or changes message numbered `base`,
 * each with its new state (`h` = healthy, no longer listed) or load (0 = no
 * longer listed). Its size is that of the news, not of the word: a mass
 * silence of 100,000 workers spread over a minute is ~1,700 changes a
 * second, where full digests were 1.6 MB every second.
 */
import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { DIGEST_PART_BYTES, MAX_DIGEST_PARTS, MAX_INTRODUCED_PEERS } from '../constants.ts'
import type { HealthState } from '../wire/capability.ts'

const StateCode = Type.Union([Type.Literal('u'), Type.Literal('d'), Type.Literal('p')])
type StateCode = Static<typeof StateCode>

export const Digest = Type.Object({
  /** Random per process start: a restart is visible as a new epoch. */
  epoch: Type.String({ maxLength: 32 }),
  seq: Type.Integer({ minimum: 0 }),
  /** Workers this controller owns. */
  owned: Type.Integer({ minimum: 0 }),
  exceptions: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), StateCode]), { maxItems: 1_000_000 }),
  loads: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), Type.Integer({ minimum: 0 })]), { maxItems: 1_000_000 }),
  /** Order-independent hash of the sender's live registry entries (hex). */
  registry_hash: Type.String({ maxLength: 64 }),
  /** Whether the sender is in self-preservation. */
  self_preservation: Type.Boolean(),
  /** The sender's libp2p listen addresses, so every controller can dial every other (full mesh). */
  addrs: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 16 })),
  /**
   * An address (with /p2p/<peer id>) of each controller the sender is connected to: a controller
   * that joins through one bootstrap peer learns the whole mesh from its first digest.
   */
  peers: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: MAX_INTRODUCED_PEERS })),
  /** [index, count] of a digest split into parts (absent: the whole digest in one message). */
  part: Type.Optional(Type.Tuple([Type.Integer({ minimum: 0, maximum: MAX_DIGEST_PARTS - 1 }), Type.Integer({ minimum: 2, maximum: MAX_DIGEST_PARTS })]))
}, { additionalProperties: false })
export type Digest = Static<typeof Digest>

/** A worker's state in a changes message: one of the digest's codes, or `h` (healthy: no longer listed). */
const ChangeCode = Type.Union([Type.Literal('h'), Type.Literal('u'), Type.Literal('d'), Type.Literal('p')])
type ChangeCode = Static<typeof ChangeCode>

export const WordChanges = Type.Object({
  /** The sender's epoch (changes apply only to a word of the same epoch). */
  epoch: Type.String({ maxLength: 32 }),
  seq: Type.Integer({ minimum: 1 }),
  /** The seq of the digest or changes message these changes follow. */
  base: Type.Integer({ minimum: 0 }),
  owned: Type.Integer({ minimum: 0 }),
  /** Workers whose state changed, with their state now. */
  states: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), ChangeCode]), { maxItems: 1_000_000 }),
  /** Workers whose load changed, with their load now (0: no longer listed). */
  loads: Type.Array(Type.Tuple([Type.String({ maxLength: 256 }), Type.Integer({ minimum: 0 })]), { maxItems: 1_000_000 }),
  registry_hash: Type.String({ maxLength: 64 }),
  self_preservation: Type.Boolean()
}, { additionalProperties: false })
export type WordChanges = Static<typeof WordChanges>

const checkDigest = Compile(Digest)
const checkChanges = Compile(WordChanges)
const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

export class DigestError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DigestError'
  }
}

export const CODES: Record<StateCode, HealthState> = { u: 'unhealthy', d: 'draining', p: 'pending' }
export const CODE_OF: Partial<Record<HealthState, StateCode>> = { unhealthy: 'u', draining: 'd', pending: 'p' }

/** One owned worker as the digest reports it. */
export interface OwnedWorker {
  id: string
  state: HealthState
  load: number
}

/** What a digest says besides the state of the workers. */
export interface DigestHeader {
  epoch: string
  seq: number
  owned: number
  registry_hash: string
  self_preservation: boolean
  addrs?: string[]
  peers?: string[]
}

/** Which part of a `count`-part digest carries `workerId` (FNV-1a of the id). */
export function partOf (workerId: string, count: number): number {
  if (count <= 1) return 0
  let h = 0x811c9dc5
  for (let i = 0; i < workerId.length; i++) h = Math.imul(h ^ workerId.charCodeAt(i), 0x01000193)
  return (h >>> 0) % count
}

/**
 * Builds the digest of `workers` as one or more messages' worth: parts of at
 * most about `partBytes` each (a power of two of them, so that a worker's
 * part only moves when the count doubles or halves).
 */
export function buildDigest (header: DigestHeader, workers: Iterable<OwnedWorker>, partBytes = DIGEST_PART_BYTES): Digest[] {
  const exceptions: Array<[string, StateCode]> = []
  const loads: Array<[string, number]> = []
  let bytes = 0
  for (const w of workers) {
    const code = CODE_OF[w.state]
    if (code != null) {
      exceptions.push([w.id, code])
      bytes += w.id.length + 10
    }
    if (w.load > 0) {
      loads.push([w.id, w.load])
      bytes += w.id.length + 16
    }
  }
  let count = 1
  while (count < MAX_DIGEST_PARTS && bytes / count > partBytes) count *= 2
  if (count === 1) return [{ ...header, exceptions, loads }]
  const parts: Digest[] = Array.from({ length: count }, (_, i) => {
    const d: Digest = { epoch: header.epoch, seq: header.seq, owned: header.owned, exceptions: [], loads: [], registry_hash: header.registry_hash, self_preservation: header.self_preservation, part: [i, count] }
    // Addresses and introductions once, in part 0: they are the same in every part.
    if (i === 0) {
      if (header.addrs != null) d.addrs = header.addrs
      if (header.peers != null) d.peers = header.peers
    }
    return d
  })
  for (const e of exceptions) parts[partOf(e[0], count)].exceptions.push(e)
  for (const l of loads) parts[partOf(l[0], count)].loads.push(l)
  return parts
}

export function encodeDigest (d: Digest): Uint8Array {
  return enc.encode(JSON.stringify(d))
}

/** A message's bytes as JSON checked by `check`; `what` names it in the error. */
function decodeChecked<T> (payload: Uint8Array, check: { Check: (v: unknown) => v is T }, what: string): T {
  let json: unknown
  try {
    json = JSON.parse(dec.decode(payload))
  } catch {
    throw new DigestError(`${what} is not JSON`)
  }
  if (!check.Check(json)) throw new DigestError(`${what} does not match its schema`)
  return json
}

/** Decodes and checks a digest's bytes (once per message: the topic validator does it). */
export function decodeDigest (payload: Uint8Array): Digest {
  const json = decodeChecked(payload, checkDigest, 'digest')
  if (json.part != null && json.part[0] >= json.part[1]) throw new DigestError(`digest part ${json.part[0]} of ${json.part[1]}`)
  return json
}

/**
 * What a controller says of its workers, as maps: the listed (not healthy)
 * ones with their state code, and the loaded ones with their load. What a
 * full digest carries, and what changes messages are computed between.
 */
export interface Word {
  exceptions: Map<string, StateCode>
  loads: Map<string, number>
}

/** Approximate wire bytes of listing `id` once (as buildDigest counts them). */
const listedBytes = (id: string): number => id.length + 10

/** The word of `workers` (one pass) and how many there are. */
export function wordOf (workers: Iterable<OwnedWorker>): { word: Word, owned: number, bytes: number } {
  const word: Word = { exceptions: new Map(), loads: new Map() }
  let owned = 0
  let bytes = 0
  for (const w of workers) {
    owned++
    const code = CODE_OF[w.state]
    if (code != null) {
      word.exceptions.set(w.id, code)
      bytes += listedBytes(w.id)
    }
    if (w.load > 0) {
      word.loads.set(w.id, w.load)
      bytes += listedBytes(w.id) + 6
    }
  }
  return { word, owned, bytes }
}

/** The workers a word lists, as buildDigest takes them. */
export function * listedWorkers (word: Word): Iterable<OwnedWorker> {
  for (const [id, code] of word.exceptions) yield { id, state: CODES[code], load: word.loads.get(id) ?? 0 }
  for (const [id, load] of word.loads) if (!word.exceptions.has(id)) yield { id, state: 'healthy', load }
}

/** What changed from `before` to `after`, and its approximate wire bytes. */
export function wordChanges (before: Word, after: Word): { states: Array<[string, ChangeCode]>, loads: Array<[string, number]>, bytes: number } {
  const states: Array<[string, ChangeCode]> = []
  const loads: Array<[string, number]> = []
  let bytes = 0
  for (const [id, code] of after.exceptions) {
    if (before.exceptions.get(id) !== code) {
      states.push([id, code])
      bytes += listedBytes(id)
    }
  }
  for (const id of before.exceptions.keys()) {
    if (!after.exceptions.has(id)) {
      states.push([id, 'h'])
      bytes += listedBytes(id)
    }
  }
  for (const [id, load] of after.loads) {
    if (before.loads.get(id) !== load) {
      loads.push([id, load])
      bytes += listedBytes(id) + 6
    }
  }
  for (const id of before.loads.keys()) {
    if (!after.loads.has(id)) {
      loads.push([id, 0])
      bytes += listedBytes(id) + 6
    }
  }
  return { states, loads, bytes }
}

export function encodeChanges (c: WordChanges): Uint8Array {
  return enc.encode(JSON.stringify(c))
}

/** Decodes and checks a changes message's bytes (the topic validator). */
export function decodeChanges (payload: Uint8Array): WordChanges {
  const json = decodeChecked(payload, checkChanges, 'word-changes message')
  if (json.base >= json.seq) throw new DigestError(`word changes ${json.seq} follow ${json.base}, not an earlier message`)
  return json
}
