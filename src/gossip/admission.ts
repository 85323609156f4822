/**
 * Admission: which libp2p peers may be controllers of this mesh. The mesh
 * key (private-network.ts) keeps out whoever does not hold it; the allow
 * list keeps out a holder of the key that is not one of the controllers
 * named in it (a stolen key, a decommissioned host, a test node): the mesh
 * refuses its connections in the connection gater, never dials it and never
 * passes its address on, so it can neither publish, sync nor be introduced.
 *
 * The allow list is a text file (`--peer-allow`, default
 * `<tls-dir>/peers.allow`), one controller per line:
 *
 *   # controller-id  peer-id
 *   a  12D3KooWQx...
 *   b  12D3KooWBd...   # comments after a line too
 *
 * Every line is checked: a controller id as in the wire contract, an
 * Ed25519 libp2p peer id, no controller id or peer id twice. A bad file is
 * a ConfigError naming `file:line` and why, and leaves the list in force.
 *
 * In a local/development TLS dir (one holding the CA key) each controller
 * writes its own line when it starts (`admitSelf`, under the TLS dir's
 * lock), so `npm start`, `capmesh local`, tests and simulations need no
 * extra step. In a deployed layout the operator writes the file.
 *
 * `peerOf(controllerId)` is the peer whose key speaks for a controller (the
 * owner-signed registry checks it); `controllerOf(peerId)` the other way.
 *
 * @example
 * const admission = new Admission({ file: '.capmesh/tls/peers.allow' })
 * admission.load()
 * admission.admitted('12D3KooW...')   // true if listed
 * admission.on('change', ({ removed }) => { for (const p of removed) hangUp(p) })
 */
import { EventEmitter } from 'node:events'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { CONTROLLER_ID, MAX_REFUSED_PEERS, REFUSAL_LOG_INTERVAL_MS } from '../constants.ts'
import { ConfigError } from '../errors.ts'
import { fileStamp, withDirLock, writeFileAtomic } from '../utils/files.ts'

/**
 * Where a peer was turned away: its inbound connection (`inbound`), a
 * connection this controller dialled (`outbound`: an address without a peer
 * id led to it), a dial not made (`dial`), an introduction not taken
 * (`introduced`), a gossip message it signed that another peer forwarded
 * (`gossip`), or its connection closed because a reload removed it
 * (`revoked`).
 */
export const REFUSAL_REASONS = ['inbound', 'outbound', 'dial', 'introduced', 'gossip', 'revoked'] as const
export type RefusalReason = typeof REFUSAL_REASONS[number]

/** A peer that was refused: how often, when last (wall-clock ms), from or to which address, and where. */
export interface Refusal {
  count: number
  lastAt: number
  address: string | null
  reason: RefusalReason
}

export interface AdmissionInit {
  /** The allow list file. */
  file: string
}

export interface AdmissionEvents {
  /** The list changed (a reload): the peer ids it gained and lost. */
  change: [diff: { added: string[], removed: string[] }]
}

/** One line of the allow list. */
export interface AllowEntry {
  controllerId: string
  peerId: string
}

const FILE_HEADER = `# capmesh peer allow list: one controller per line, "<controller-id> <peer-id>".
# Only the libp2p peers listed here may connect to this controller (besides holding the mesh key).
# Controllers started on a development TLS dir (one holding ca-key.pem) add their own line.
# See docs/operations.md, "Admission".
`

/**
 * Parses the text of an allow list. Throws a ConfigError naming
 * `file:line` and what is wrong with the first bad line.
 */
export function parseAllowList (text: string, file: string): AllowEntry[] {
  const out: AllowEntry[] = []
  const byController = new Map<string, { peerId: string, line: number }>()
  const byPeer = new Map<string, { controllerId: string, line: number }>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1
    const bad = (why: string): ConfigError => new ConfigError(`${file}:${n}: ${why}`)
    const line = lines[i].replace(/#.*$/, '').trim()
    if (line.length === 0) continue
    const fields = line.split(/\s+/)
    if (fields.length !== 2) throw bad(`expected "<controller-id> <peer-id>", got ${fields.length} field${fields.length === 1 ? '' : 's'}`)
    const [controllerId, peerId] = fields
    if (!CONTROLLER_ID.test(controllerId)) throw bad(`"${controllerId}" is not a controller id (letters, digits, . _ -; at most 64, starting with a letter or digit)`)
    let type: string
    try {
      type = peerIdFromString(peerId).type
    } catch (err) {
      throw bad(`"${peerId}" is not a libp2p peer id (${(err as Error).message})`)
    }
    if (type !== 'Ed25519') throw bad(`peer id "${peerId}" is of an ${type} key; controllers have Ed25519 keys`)
    const sameController = byController.get(controllerId)
    if (sameController != null) {
      if (sameController.peerId !== peerId) throw bad(`controller "${controllerId}" is already given peer ${sameController.peerId} on line ${sameController.line}`)
      continue
    }
    const samePeer = byPeer.get(peerId)
    if (samePeer != null) throw bad(`peer ${peerId} is already controller "${samePeer.controllerId}" on line ${samePeer.line}`)
    byController.set(controllerId, { peerId, line: n })
    byPeer.set(peerId, { controllerId, line: n })
    out.push({ controllerId, peerId })
  }
  return out
}

export class Admission extends EventEmitter<AdmissionEvents> {
  readonly file: string
  private byPeer = new Map<string, string>()
  private byController = new Map<string, string>()
  /** The file's stamp (fileStamp) when last read. */
  private stamp: string | null = null
  /** Peers refused, least recently refused first (for /mesh). */
  private readonly refusals = new Map<string, Refusal & { loggedAt: number }>()

  constructor (init: AdmissionInit) {
    super()
    this.file = init.file
  }

  /** True while the file does not exist (nobody is admitted). */
  get missing (): boolean { return this.stamp === 'missing' }

  /** Number of controllers listed. */
  get size (): number { return this.byPeer.size }

  /** True if `peerId` is listed. A lookup only: no file access. */
  admitted (peerId: string): boolean {
    return this.byPeer.has(peerId)
  }

  /** The peer id listed for a controller: the key that speaks for it. */
  peerOf (controllerId: string): string | undefined {
    return this.byController.get(controllerId)
  }

  /** The controller a peer id is listed as. */
  controllerOf (peerId: string): string | undefined {
    return this.byPeer.get(peerId)
  }

  /** Every listed controller, in file order. */
  entries (): AllowEntry[] {
    return [...this.byController].map(([controllerId, peerId]) => ({ controllerId, peerId }))
  }

  /**
   * `admitted(peerId)`, but a peer the list does not know is looked up again
   * in the file as it is now (read only if it changed since the last read):
   * a controller that was just added (or added itself) is admitted without
   * a reload. A file that became invalid leaves the list as it was.
   */
  recheck (peerId: string): boolean {
    if (this.byPeer.has(peerId)) return true
    try {
      this.reloadIfChanged()
    } catch {
      // Keeps the list in force; the periodic reload logs the error.
    }
    return this.byPeer.has(peerId)
  }

  /**
   * Reads the file (the first time: a missing file admits nobody). Throws a
   * ConfigError for a bad file, naming file:line, and keeps the list in force.
   */
  load (): void {
    this.read(true)
  }

  /**
   * Reads the file again (SIGHUP). A missing or bad file is a ConfigError and
   * leaves the list in force: a typo never opens or closes the mesh by accident.
   */
  reload (): { changed: boolean } {
    return { changed: this.read(false) }
  }

  /** reload(), but only if the file changed since it was last read (a stat otherwise). */
  reloadIfChanged (): { changed: boolean } {
    if (this.stamp != null && fileStamp(this.file) === this.stamp) return { changed: false }
    return this.reload()
  }

  /**
   * Adds `<controllerId> <peerId>` to the file, replacing any line of
   * `controllerId` with another peer id and any line giving `peerId` to
   * another controller (a data dir that was recreated, a renamed
   * controller), under the lock of the file's folder (the TLS dir's), and
   * reads it back. Comments and other lines are kept. The file is created
   * if missing (mode 0644: it holds no secret).
   */
  async admitSelf (controllerId: string, peerId: string): Promise<{ written: boolean }> {
    const dir = dirname(this.file)
    mkdirSync(dir, { recursive: true })
    const written = await withDirLock(dir, () => {
      const text = existsSync(this.file) ? readFileSync(this.file, 'utf8') : FILE_HEADER
      const entries = parseAllowList(text, this.file)
      if (entries.some(e => e.controllerId === controllerId && e.peerId === peerId)) return false
      const kept = text.split(/\r?\n/).filter(raw => {
        const [c, p] = raw.replace(/#.*$/, '').trim().split(/\s+/)
        return !(c === controllerId || p === peerId)
      })
      while (kept.length > 0 && kept[kept.length - 1] === '') kept.pop()
      writeFileAtomic(this.file, `${[...kept, `${controllerId} ${peerId}`].join('\n')}\n`, 0o644)
      return true
    })
    this.read(this.stamp == null)
    return { written }
  }

  /**
   * Records that `peerId` was refused (for /mesh and the logs). Returns true
   * when it should be logged: the first refusal of that peer in
   * REFUSAL_LOG_INTERVAL_MS.
   */
  refuse (peerId: string, address: string | null, reason: RefusalReason, now = Date.now()): boolean {
    const r = this.refusals.get(peerId)
    this.refusals.delete(peerId)
    while (this.refusals.size >= MAX_REFUSED_PEERS) this.refusals.delete(this.refusals.keys().next().value as string)
    const log = r == null || now - r.loggedAt >= REFUSAL_LOG_INTERVAL_MS
    this.refusals.set(peerId, {
      count: (r?.count ?? 0) + 1,
      lastAt: now,
      address: address ?? r?.address ?? null,
      reason,
      loggedAt: log ? now : r!.loggedAt
    })
    return log
  }

  /** Refused peers, most recently refused first. */
  refused (): Array<Refusal & { peerId: string }> {
    return [...this.refusals].reverse().map(([peerId, r]) => ({ peerId, count: r.count, lastAt: r.lastAt, address: r.address, reason: r.reason }))
  }

  /** Reads and applies the file; returns whether the list changed. */
  private read (first: boolean): boolean {
    const stamp = fileStamp(this.file)
    let entries: AllowEntry[]
    if (stamp === 'missing') {
      if (!first) {
        this.stamp = stamp
        throw new ConfigError(`peer allow list ${this.file} is missing; the list in force is kept (an empty file admits nobody)`)
      }
      entries = []
    } else {
      let text: string
      try {
        text = readFileSync(this.file, 'utf8')
      } catch (err) {
        throw new ConfigError(`peer allow list ${this.file} cannot be read: ${(err as Error).message}`)
      }
      try {
        entries = parseAllowList(text, this.file)
      } catch (err) {
        // Not read again until it changes: a bad file is reported once per version.
        this.stamp = stamp
        throw err
      }
    }
    this.stamp = stamp
    const byPeer = new Map(entries.map(e => [e.peerId, e.controllerId]))
    const added = [...byPeer.keys()].filter(p => this.byPeer.get(p) !== byPeer.get(p))
    const removed = [...this.byPeer.keys()].filter(p => !byPeer.has(p))
    this.byPeer = byPeer
    this.byController = new Map(entries.map(e => [e.controllerId, e.peerId]))
    // A peer refused before it was listed (it started a moment before its line was read) is not news any more.
    for (const p of added) this.refusals.delete(p)
    if (added.length === 0 && removed.length === 0) return false
    this.emit('change', { added, removed })
    return true
  }
}
