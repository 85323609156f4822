/**
 * A Map that holds at most `max` entries: adding one more forgets the
 * entry touched least recently (`get` with `touch` true, or `set`), or, when
 * hits never touch, the oldest. A Map keeps insertion order, so "touch" is a
 * delete and a re-insert and eviction takes the first key: O(1) each.
 */
export class BoundedMap<K, V> {
  readonly max: number
  readonly #map = new Map<K, V>()

  /** `max` 0 keeps nothing. */
  constructor (max: number) {
    if (!Number.isInteger(max) || max < 0) throw new RangeError(`BoundedMap: max must be a non-negative integer, got ${max}`)
    this.max = max
  }

  get size (): number { return this.#map.size }

  /** The value of `key`; `touch` makes it the most recently used. */
  get (key: K, touch = false): V | undefined {
    const v = this.#map.get(key)
    if (touch && v !== undefined) {
      this.#map.delete(key)
      this.#map.set(key, v)
    }
    return v
  }

  set (key: K, value: V): void {
    if (this.max === 0) return
    this.#map.delete(key)
    while (this.#map.size >= this.max) this.#map.delete(this.#map.keys().next().value as K)
    this.#map.set(key, value)
  }

  delete (key: K): boolean { return this.#map.delete(key) }

  clear (): void { this.#map.clear() }
}
