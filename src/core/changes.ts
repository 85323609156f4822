/**
 * The change log behind `GET /watch` and blocking `GET /workers` queries: the
 * last `size` changes a controller saw (workers added, updated, removed;
 * the state it routes a worker by; other controllers' status;
 * self-preservation), numbered by a monotonically increasing index within
 * the process's epoch, in a ring (the oldest is forgotten first).
 *
 * Watchers *pull*: each holds a cursor (the last index it was given) and
 * asks for the next event when its connection can take one. Nothing is
 * queued per watcher, so a slow one costs no memory here; one that falls
 * more than `size` changes behind finds its next change gone (`lagged`).
 * A watcher whose cursor is unusable (none, another epoch — a restart or
 * another controller —, or older than the ring) gets a snapshot first,
 * consistent with the index it starts from.
 *
 * Entries are cheap to record: the event's data (a worker as `/workers`
 * lists it, ...) is built on first use, from what was captured when it
 * happened, and then shared by every watcher.
 */
import type { WatchEvent, WatchEventMap, WatchEventName, WatchKind, WatchSnapshot } from '../wire/index.ts'
import { WATCH_EVENT_KINDS } from '../wire/index.ts'

/** What a watcher receives: null filters pass everything. */
export interface WatchFilter {
  /** Only events about workers offering one of these capabilities (controller events always pass), and only those workers in a snapshot. */
  capabilities: ReadonlySet<string> | null
  /** Only events of these kinds (snapshots always pass). */
  kinds: ReadonlySet<WatchKind> | null
}

/** Where a watcher stands: the epoch and index of the last event it has. */
export interface WatchCursor {
  epoch: string
  index: number
}

export type WatchMessage =
  | { type: 'snapshot', snapshot: WatchSnapshot }
  | { type: 'event', event: WatchEvent }
  /** The log no longer holds the next change this watcher needs: it fell `size` changes behind. */
  | { type: 'lagged', index: number }

/** Where the log stands. */
export interface ChangeLogPosition {
  /** One per process start: ids of another epoch are from before a restart, or from another controller. */
  epoch: string
  /** The last change's index (0: none yet). */
  index: number
  /** The oldest change still held (index + 1 when none is). */
  oldest: number
  /** Open watchers. */
  watchers: number
}

export interface ChangeLogInit {
  /** This process's epoch. */
  epoch: string
  /** Changes held. @default 10000 */
  size: number
  /** The current state, for a snapshot (workers offering one of `capabilities`, or all). */
  snapshot: (capabilities: ReadonlySet<string> | null) => Pick<WatchSnapshot, 'controller_id' | 'workers' | 'controllers'>
}

/** One change; its data is built on first use and shared. */
class Change {
  readonly index: number
  readonly name: WatchEventName
  readonly kind: WatchKind
  private make: (() => unknown) | null
  private capsOf: (() => readonly string[]) | null
  private built: WatchEvent | null = null
  private names: readonly string[] | null = null

  constructor (index: number, name: WatchEventName, make: () => unknown, capsOf: () => readonly string[]) {
    this.index = index
    this.name = name
    this.kind = WATCH_EVENT_KINDS[name]
    this.make = make
    this.capsOf = capsOf
  }

  event (epoch: string): WatchEvent {
    if (this.built == null) {
      this.built = { id: `${epoch}-${this.index}`, index: this.index, event: this.name, data: this.make!() } as WatchEvent
      this.make = null
    }
    return this.built
  }

  capabilities (): readonly string[] {
    if (this.names == null) {
      this.names = this.capsOf!()
      this.capsOf = null
    }
    return this.names
  }
}

const NO_CAPABILITIES: readonly string[] = []

export class ChangeLog {
  readonly epoch: string
  readonly size: number
  private readonly ring: Array<Change | undefined>
  private last = 0
  private readonly watchers = new Set<Watcher>()
  private scheduled = false
  private readonly snapshotOf: ChangeLogInit['snapshot']

  constructor (init: ChangeLogInit) {
    this.epoch = init.epoch
    this.size = Math.max(1, init.size)
    this.ring = new Array<Change | undefined>(this.size)
    this.snapshotOf = init.snapshot
  }

  get index (): number { return this.last }

  position (): ChangeLogPosition {
    return { epoch: this.epoch, index: this.last, oldest: this.oldest, watchers: this.watchers.size }
  }

  /** The oldest index still held (last + 1 when nothing is). */
  get oldest (): number { return Math.max(1, this.last - this.size + 1) }

  /**
   * Records a change. `make` builds its data when a watcher first needs it
   * (capture what it needs now: it runs later); `capabilities` names what
   * the worker offers (or offered), for filters.
   */
  append<K extends WatchEventName> (name: K, make: () => WatchEventMap[K], capabilities: () => readonly string[] = () => NO_CAPABILITIES): void {
    const index = ++this.last
    this.ring[(index - 1) % this.size] = new Change(index, name, make, capabilities)
    if (this.watchers.size > 0 && !this.scheduled) {
      // Watchers hear once per burst (a heal can append thousands in one go), after the change is complete.
      this.scheduled = true
      queueMicrotask(() => { this.wake() })
    }
  }

  /** The change at `index`, if still held. */
  at (index: number): Change | undefined {
    if (index > this.last || index < this.oldest) return undefined
    return this.ring[(index - 1) % this.size]
  }

  /** A watcher from `from` (null, another epoch, too old or ahead: a snapshot first). Close it when done. */
  watch (from: WatchCursor | null, filter: WatchFilter): Watcher {
    const usable = from != null && from.epoch === this.epoch && from.index <= this.last && from.index >= this.oldest - 1
    const w = new Watcher(this, usable ? from.index : this.last, !usable, filter)
    this.watchers.add(w)
    return w
  }

  /** @internal */
  snapshot (filter: WatchFilter): WatchSnapshot {
    return { ...this.snapshotOf(filter.capabilities), epoch: this.epoch, index: this.last }
  }

  /** @internal */
  remove (w: Watcher): void {
    this.watchers.delete(w)
  }

  private wake (): void {
    this.scheduled = false
    for (const w of [...this.watchers]) {
      try {
        w.notify()
      } catch {
        // A watcher's listener failing is its own business; the others and the core go on.
      }
    }
  }
}

/**
 * One watcher's cursor over the log. `next()` gives what it should receive
 * next (a snapshot first if its cursor was unusable), or null when it has
 * everything; `onReady` is called (once per burst) when there may be more.
 */
export class Watcher {
  private readonly log: ChangeLog
  private cursor: number
  private needSnapshot: boolean
  private readonly filter: WatchFilter
  private listener: (() => void) | null = null
  private closed = false

  constructor (log: ChangeLog, cursor: number, needSnapshot: boolean, filter: WatchFilter) {
    this.log = log
    this.cursor = cursor
    this.needSnapshot = needSnapshot
    this.filter = filter
  }

  /** The index of the last change this watcher was given (or skipped as filtered out). */
  get position (): number { return this.cursor }

  /** True when the watcher starts with a snapshot it has not taken yet. */
  get snapshotPending (): boolean { return this.needSnapshot }

  /** The next message for this watcher, or null when it has everything so far. */
  next (): WatchMessage | null {
    if (this.closed) return null
    if (this.needSnapshot) {
      this.needSnapshot = false
      const snapshot = this.log.snapshot(this.filter)
      this.cursor = snapshot.index
      return { type: 'snapshot', snapshot }
    }
    const c = this.advance()
    if (c === 'lagged') return { type: 'lagged', index: this.cursor }
    if (c == null) return null
    this.cursor = c.index
    return { type: 'event', event: c.event(this.log.epoch) }
  }

  /** True when the log no longer holds the next change this watcher needs (it fell `size` changes behind). O(1). */
  get lagged (): boolean {
    return !this.closed && !this.needSnapshot && this.cursor < this.log.oldest - 1
  }

  /** True when next() has something (skips filtered-out changes, builds nothing). */
  pending (): boolean {
    if (this.closed) return false
    return this.needSnapshot || this.advance() != null
  }

  /** Calls `listener` when new changes were appended (once per burst; it must not block). */
  onReady (listener: (() => void) | null): void {
    this.listener = listener
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    this.listener = null
    this.log.remove(this)
  }

  /** @internal */
  notify (): void {
    this.listener?.()
  }

  /** Moves the cursor over changes the filter drops; the next matching change (not consumed), 'lagged' or null. */
  private advance (): Change | 'lagged' | null {
    const last = this.log.index
    while (this.cursor < last) {
      const c = this.log.at(this.cursor + 1)
      if (c == null) return 'lagged'
      if (this.matches(c)) return c
      this.cursor = c.index
    }
    return null
  }

  private matches (c: Change): boolean {
    const { kinds, capabilities } = this.filter
    if (kinds != null && !kinds.has(c.kind)) return false
    if (capabilities == null || c.kind === 'controller') return true
    for (const name of c.capabilities()) if (capabilities.has(name)) return true
    return false
  }
}
