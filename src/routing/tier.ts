/**
 * The workers of one bucket a route may pick from at one preference level
 * (the healthy workers of one owner, all healthy ones, the pending ones):
 * an IndexedSet of offers, plus what lets the most common pick, an
 * unfiltered round robin over idle workers, touch almost no memory.
 *
 * Why: on a server, the TLS and HTTP work between two requests evicts the
 * index from the CPU's caches, so each object a decision reads costs a cache
 * (and, on a VM, TLB) miss: some 0.3 µs apiece as profiled, against 0.3 µs
 * for the whole decision in a tight loop. Such a pick reads this tier, its
 * `texts` array and one string: the answer's JSON, built the first time the
 * worker is picked at this level and kept until it leaves the tier (any
 * change of its record, state or load from or to 0 re-places it).
 */
import { IndexedSet } from './indexed-set.ts'

/** What a tier needs of an offer: whether its worker is busy. */
export interface TierOffer {
  worker: { load: number }
}

export class Tier<T extends TierOffer> extends IndexedSet<T> {
  /** Offers whose worker had load > 0 when placed (an unfiltered pick must then look at loads). */
  busy = 0
  /** The JSON answer of an unfiltered round-robin pick of the offer at the same index, once built. */
  private readonly texts: Array<string | undefined> = []

  override add (v: T): void {
    if (this.pos.has(v)) return
    super.add(v)
    this.texts.push(undefined)
    if (v.worker.load > 0) this.busy++
  }

  /** Swap-remove, the cached answers moving with their offers. Call before the offer's load changes. */
  override delete (v: T): boolean {
    const i = this.pos.get(v)
    if (i == null) return false
    super.delete(v)
    const last = this.texts.pop()
    if (i < this.texts.length) this.texts[i] = last
    if (v.worker.load > 0) this.busy--
    return true
  }

  /** The answer at `i`, built by `build` from the offer the first time it is asked for. */
  text (i: number, build: (offer: T) => string): string {
    return this.texts[i] ?? (this.texts[i] = build(this.items[i]))
  }
}
