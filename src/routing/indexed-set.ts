/** A set with O(1) add, delete and access by position: what round-robin over a changing set needs. */
export class IndexedSet<T> {
  protected readonly items: T[] = []
  protected readonly pos = new Map<T, number>()

  get size (): number { return this.items.length }

  has (v: T): boolean { return this.pos.has(v) }

  at (i: number): T { return this.items[i] }

  add (v: T): void {
    if (this.pos.has(v)) return
    this.pos.set(v, this.items.length)
    this.items.push(v)
  }

  /** Swap-remove: O(1), moves the last element into the hole. */
  delete (v: T): boolean {
    const i = this.pos.get(v)
    if (i == null) return false
    const last = this.items.pop() as T
    if (i < this.items.length) {
      this.items[i] = last
      this.pos.set(last, i)
    }
    this.pos.delete(v)
    return true
  }

  [Symbol.iterator] (): Iterator<T> { return this.items[Symbol.iterator]() }
}
