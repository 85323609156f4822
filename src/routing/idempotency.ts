import { DEFAULT_IDEMPOTENCY_MAX_KEYS, DEFAULT_IDEMPOTENCY_TTL_MS } from '../constants.ts'

export interface IdempotencyCacheInit {
  /** How long a key keeps its worker (ms). @default 300000 */
  ttlMs?: number
  /** Most keys remembered; the oldest is forgotten first. @default 100000 */
  maxKeys?: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
}

interface Slot { workerId: string, expires: number, slot: number }

/**
 * idempotency_key → worker id, with a TTL and a bounded size. Keys are
 * remembered in a ring buffer, so forgetting the oldest is O(1) however many
 * evictions happened before (a Map's "first key" is not: V8 leaves holes at
 * the front until it rehashes).
 */
export class IdempotencyCache {
  private readonly ttlMs: number
  private readonly maxKeys: number
  private readonly now: () => number
  private readonly map = new Map<string, Slot>()
  private readonly ring: Array<string | undefined>
  private head = 0

  constructor (init: IdempotencyCacheInit = {}) {
    this.ttlMs = init.ttlMs ?? DEFAULT_IDEMPOTENCY_TTL_MS
    this.maxKeys = Math.max(1, init.maxKeys ?? DEFAULT_IDEMPOTENCY_MAX_KEYS)
    this.now = init.now ?? (() => performance.now())
    this.ring = new Array<string | undefined>(this.maxKeys)
  }

  get size (): number { return this.map.size }

  get (key: string): string | undefined {
    const hit = this.map.get(key)
    if (hit == null) return undefined
    if (hit.expires <= this.now()) {
      this.map.delete(key)
      this.ring[hit.slot] = undefined
      return undefined
    }
    return hit.workerId
  }

  set (key: string, workerId: string): void {
    const expires = this.now() + this.ttlMs
    const cur = this.map.get(key)
    if (cur != null) {
      cur.workerId = workerId
      cur.expires = expires
      return
    }
    const slot = this.head
    const evicted = this.ring[slot]
    if (evicted !== undefined) this.map.delete(evicted)
    this.ring[slot] = key
    this.map.set(key, { workerId, expires, slot })
    this.head = (slot + 1) % this.maxKeys
  }
}
