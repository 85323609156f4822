import { DEFAULT_IDEMPOTENCY_MAX_KEYS, DEFAULT_IDEMPOTENCY_TTL_MS } from '../constants.ts'

export interface IdempotencyCacheInit {
  /** How long a key keeps its worker (ms). @default 300000 */
  ttlMs?: number
  /** Most keys remembered; the least recently set is forgotten first. @default 100000 */
  maxKeys?: number
  /** Monotonic clock (ms). @default performance.now */
  now?: () => number
}

/** idempotency_key → worker id, with a TTL and a bounded size (Map keeps insertion order: oldest first). */
export class IdempotencyCache {
  private readonly ttlMs: number
  private readonly maxKeys: number
  private readonly now: () => number
  private readonly map = new Map<string, { workerId: string, expires: number }>()

  constructor (init: IdempotencyCacheInit = {}) {
    this.ttlMs = init.ttlMs ?? DEFAULT_IDEMPOTENCY_TTL_MS
    this.maxKeys = init.maxKeys ?? DEFAULT_IDEMPOTENCY_MAX_KEYS
    this.now = init.now ?? (() => performance.now())
  }

  get size (): number { return this.map.size }

  get (key: string): string | undefined {
    const hit = this.map.get(key)
    if (hit == null) return undefined
    if (hit.expires <= this.now()) {
      this.map.delete(key)
      return undefined
    }
    return hit.workerId
  }

  set (key: string, workerId: string): void {
    this.map.delete(key)
    this.map.set(key, { workerId, expires: this.now() + this.ttlMs })
    if (this.map.size > this.maxKeys) this.map.delete(this.map.keys().next().value as string)
  }
}
