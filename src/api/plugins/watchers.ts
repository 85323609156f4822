/**
 * Watchers (`GET /watch` streams and blocking `GET /workers` queries) hold a
 * connection open: this plugin counts them against `maxWatchers` (past it,
 * 503 `too_many_watchers` + Retry-After) and, when the server closes, asks
 * every open one to end, so that `app.close()` never waits on a stream.
 */
import { DEFAULT_MAX_WATCHERS, WATCH_RETRY_AFTER_S } from '../../constants.ts'
import { TooManyWatchersError } from '../../errors.ts'
import type { Api } from '../types.ts'

export interface WatcherSlotsInit {
  /** Watchers served at once. */
  max: number
  /** Retry-After (s) of a refused one. @default 5 */
  retryAfterSeconds?: number
}

/** The open watchers: each holds a slot until it releases it. */
export class WatcherSlots {
  readonly max: number
  private readonly retryAfter: number
  private readonly open = new Set<() => void>()

  constructor (init: WatcherSlotsInit) {
    this.max = init.max
    this.retryAfter = init.retryAfterSeconds ?? WATCH_RETRY_AFTER_S
  }

  get size (): number { return this.open.size }

  /**
   * Takes a slot (throws TooManyWatchersError when none is free). `end` is
   * called if the server closes first. Returns the release, idempotent.
   */
  acquire (end: () => void): () => void {
    if (this.open.size >= this.max) throw new TooManyWatchersError(this.max, this.retryAfter)
    // A fresh function per watcher: the same `end` twice would be one slot.
    const slot = (): void => { end() }
    this.open.add(slot)
    return () => { this.open.delete(slot) }
  }

  /** Ends every open watcher (the server is closing). */
  endAll (): void {
    for (const end of [...this.open]) {
      try {
        end()
      } catch {
        // One watcher failing to end must not keep the others open.
      }
    }
  }
}

export function watchersPlugin (app: Api, init: Partial<WatcherSlotsInit> = {}): WatcherSlots {
  const slots = new WatcherSlots({ max: init.max ?? DEFAULT_MAX_WATCHERS, retryAfterSeconds: init.retryAfterSeconds })
  app.addHook('preClose', (done) => {
    slots.endAll()
    done()
  })
  return slots
}
