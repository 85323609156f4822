/**
 * The sets a bucket keeps its offers in. An offer remembers its position in
 * each set (a field per set, -1 when not in it), so adding and removing need
 * no map: indexing a whole registry (an import, a restart) made a map
 * insertion per worker and set, into maps growing to 100,000 entries.
 *
 * A `Tier` is such a set of the offers a route may pick from at one
 * preference level (the healthy workers of one owner, all healthy ones, the
 * pending ones), plus what lets the most common pick, an unfiltered round
 * robin over idle workers, touch almost no memory. On a server, the TLS and
 * HTTP work between two requests evicts the index from the CPU's caches, so
 * each object a decision reads costs a cache (and, on a VM, TLB) miss: some
 * 0.3 µs apiece as profiled, against 0.3 µs for the whole decision in a
 * tight loop. Such a pick reads the tier, its `texts` array and one string:
 * the answer's JSON, built the first time the worker is picked at this level
 * and kept until it leaves the tier (any change of its record or state, and
 * of its load from or to 0, re-places it).
 */

/** The position fields of an offer, one per set it can be in. */
export type Slot = 'inAll' | 'inHealthy' | 'inOwn' | 'inPending'

/** What the sets need of an offer: its positions, and whether its worker is busy. */
export type Placed = Record<Slot, number> & { worker: { load: number } }

/** An indexed set of offers: O(1) add, delete and access by position, each offer holding its position in `slot`. */
export class OfferSet<T extends Placed> {
  protected readonly items: T[] = []
  private readonly slot: Slot
  constructor (slot: Slot) { this.slot = slot }

  get size (): number { return this.items.length }

  at (i: number): T { return this.items[i] }

  add (o: T): boolean {
    if (o[this.slot] >= 0) return false
    o[this.slot] = this.items.length
    this.items.push(o)
    return true
  }

  /** Swap-remove: O(1), moves the last element into the hole. Returns the position `o` had, or -1. */
  delete (o: T): number {
    const i = o[this.slot]
    if (i < 0) return -1
    const last = this.items.pop() as T
    if (i < this.items.length) {
      this.items[i] = last
      last[this.slot] = i
    }
    o[this.slot] = -1
    return i
  }

  [Symbol.iterator] (): Iterator<T> { return this.items[Symbol.iterator]() }
}

export class Tier<T extends Placed> extends OfferSet<T> {
  /** Offers whose worker had load > 0 when placed (an unfiltered pick must then look at loads). */
  busy = 0
  /** The JSON answer of an unfiltered round-robin pick of the offer at the same index, once built. */
  private readonly texts: Array<string | undefined> = []

  override add (o: T): boolean {
    if (!super.add(o)) return false
    this.texts.push(undefined)
    if (o.worker.load > 0) this.busy++
    return true
  }

  /** Swap-remove, the cached answers moving with their offers. Call before the offer's load changes. */
  override delete (o: T): number {
    const i = super.delete(o)
    if (i < 0) return i
    const last = this.texts.pop()
    if (i < this.texts.length) this.texts[i] = last
    if (o.worker.load > 0) this.busy--
    return i
  }

  /** The answer at `i`, built by `build` from the offer the first time it is asked for. */
  text (i: number, build: (offer: T) => string): string {
    return this.texts[i] ?? (this.texts[i] = build(this.items[i]))
  }
}
