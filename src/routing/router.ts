/**
 * Route selection over an in-memory index of the registry view.
 *
 * The index keys workers by `verb + capability name`; each key holds the
 * healthy workers (all, and per owning controller) and the pending ones in
 * tiers (indexed sets, see tier.ts), kept up to date on every registry change and health
 * transition. So a plain route is O(1) in the number of workers; filters
 * (version, GPU, SLO, budget, saturation) and `least_loaded` cost O(k) in the
 * candidates for that one capability, and only when asked for.
 *
 * Preference order: healthy workers of the preferred controller (the query's
 * `affinity`, else the answering controller itself), then every healthy
 * worker, then `pending` ones (restored or imported, not yet confirmed).
 *
 * `least_loaded` and `budget_tokens` look at most CHOICE_WINDOW candidates
 * past the first match, in round-robin order (the "power of d choices" idea): the
 * decision stays O(1) with 100k workers on one capability, and successive
 * queries look at successive windows. A query that matches nothing is
 * answered from a per-capability negative cache until that capability's
 * workers change.
 */
import { NoHealthyWorkerError, NoWorkerError } from '../errors.ts'
import type { Capability, HealthState, RouteQuery, RouteResult, Strategy } from '../wire/index.ts'
import type { WorkerRecord } from '../registry/schema.ts'
import { IdempotencyCache, type IdempotencyCacheInit } from './idempotency.ts'
import { OfferSet, Tier } from './tier.ts'

export type { RouteQuery, RouteResult, Strategy }

/**
 * What the router needs of a worker: a registry record has it, and so has a
 * worker as `/workers` and `/watch` show it (with `owner` from its
 * `controller_id`), so a client can route over its own copy with this code.
 */
export type RoutableWorker = Pick<WorkerRecord, 'worker_id' | 'worker_url' | 'capabilities' | 'owner' | 'incarnation'>

export interface RouterInit {
  /** Id of the controller answering: preferred owner when a query names no affinity. */
  controllerId: string
  /** Seconds for `Retry-After` when a capability has no healthy worker. @default 1 */
  retryAfterSeconds?: number
  idempotency?: IdempotencyCacheInit
}

interface Indexed {
  record: RoutableWorker
  state: HealthState
  load: number
  /** Its offer in each bucket it is in (one for almost every worker). */
  offers: Offer[]
}

/**
 * A worker in one bucket: itself and its capabilities with that verb + name
 * (a worker may offer several versions), and its position in each of the
 * bucket's sets (-1: not in it; see tier.ts).
 */
interface Offer {
  worker: Indexed
  caps: Capability[]
  bucket: Bucket
  /** In `bucket.all`. */
  inAll: number
  /** In `bucket.healthy`. */
  inHealthy: number
  /** In the bucket's `healthyByOwner` set of its worker's owner. */
  inOwn: number
  /** In `bucket.pending`. */
  inPending: number
}

/** Candidates looked at past the first match by least_loaded and budget queries (d in "power of d choices"). */
export const CHOICE_WINDOW = 16
/** Remembered "nothing matches" answers per capability. */
const NEGATIVE_CACHE = 64

class Bucket {
  /** Bumped on every change to this capability's workers, their states or loads. */
  epoch = 0
  /** filter signature → the error it got, valid while `epoch` is unchanged. */
  readonly misses = new Map<string, { epoch: number, error: NoWorkerError | NoHealthyWorkerError }>()
  /** Every worker's offer here, whatever its state. */
  readonly all = new OfferSet<Offer>('inAll')
  // Offers, not worker ids: a selection reads the worker and its capabilities with no map lookup
  // (on a server whose caches the TLS and HTTP work keep cold, each lookup is a few cache misses).
  readonly healthy = new Tier<Offer>('inHealthy')
  readonly healthyByOwner = new Map<string, Tier<Offer>>()
  /** `healthyByOwner`'s tier of the answering controller (what a query without affinity prefers), without the lookup. */
  own: Tier<Offer> | undefined
  readonly pending = new Tier<Offer>('inPending')
  cursor = 0
  readonly verb: string
  readonly name: string
  constructor (verb: string, name: string) {
    this.verb = verb
    this.name = name
  }
}

const keyOf = (verb: string, name: string): string => `${verb}\u0000${name}`
const isFiltered = (q: RouteQuery): boolean => q.version != null || q.requires_gpu === true || q.slo_constraints != null || q.budget_tokens != null
const nonEmpty = (t: Tier<Offer> | undefined): Tier<Offer> | undefined => t != null && t.size > 0 ? t : undefined

export class Router {
  readonly controllerId: string
  private readonly retryAfter: number
  /**
   * The buckets by verb, then name: a query looks one up with its strings as
   * JSON.parse gave them (short ones interned), with no key to build,
   * flatten and hash per request.
   */
  private readonly byVerb = new Map<string, Map<string, Bucket>>()
  private readonly workers = new Map<string, Indexed>()
  /** Workers per state, kept up to date so that /health is O(1) however large the registry. */
  private readonly perState: Record<HealthState, number> = { healthy: 0, unhealthy: 0, draining: 0, pending: 0 }
  private readonly idem: IdempotencyCache

  constructor (init: RouterInit) {
    this.controllerId = init.controllerId
    this.retryAfter = init.retryAfterSeconds ?? 1
    this.idem = new IdempotencyCache(init.idempotency)
  }

  // ---------------------------------------------------------- index upkeep

  /** Adds or replaces a worker (a registry change). */
  upsert (record: RoutableWorker, state: HealthState, load = 0): void {
    const old = this.workers.get(record.worker_id)
    if (old != null) this.unindex(old)
    const w: Indexed = { record, state, load, offers: [] }
    this.workers.set(record.worker_id, w)
    this.perState[state]++
    const caps = record.capabilities
    if (caps.length === 1) {
      // Almost every worker: one bucket, and the record's own array as the offer's capabilities.
      this.offer(w, caps)
      return
    }
    const byKey = new Map<string, Capability[]>()
    for (const c of caps) {
      const key = keyOf(c.verb, c.name)
      const list = byKey.get(key)
      if (list == null) byKey.set(key, [c])
      else list.push(c)
    }
    for (const list of byKey.values()) this.offer(w, list)
  }

  /** Puts `w` into the bucket of `caps` (its capabilities of one verb + name). */
  private offer (w: Indexed, caps: Capability[]): void {
    const { verb, name } = caps[0]
    let names = this.byVerb.get(verb)
    if (names == null) this.byVerb.set(verb, names = new Map())
    let b = names.get(name)
    if (b == null) names.set(name, b = new Bucket(verb, name))
    const offer: Offer = { worker: w, caps, bucket: b, inAll: -1, inHealthy: -1, inOwn: -1, inPending: -1 }
    w.offers.push(offer)
    b.all.add(offer)
    this.place(b, offer, true)
  }

  remove (workerId: string): void {
    const w = this.workers.get(workerId)
    if (w == null) return
    this.unindex(w)
  }

  /** Takes `w` out of every bucket and out of the index. */
  private unindex (w: Indexed): void {
    for (const offer of w.offers) {
      const b = offer.bucket
      this.place(b, offer, false)
      b.all.delete(offer)
      if (b.all.size === 0) {
        const names = this.byVerb.get(b.verb)!
        names.delete(b.name)
        if (names.size === 0) this.byVerb.delete(b.verb)
      }
    }
    this.workers.delete(w.record.worker_id)
    this.perState[w.state]--
  }

  /** The state `workerId` is routed by, undefined if not indexed. */
  stateOf (workerId: string): HealthState | undefined {
    return this.workers.get(workerId)?.state
  }

  /** Workers that offer `verb` + `name` and could be routed to (healthy or pending), whatever their load. O(1). */
  routable (verb: string, name: string): number {
    const b = this.byVerb.get(verb)?.get(name)
    return b == null ? 0 : b.healthy.size + b.pending.size
  }

  /** Workers per state, as routed. O(1). */
  counts (): Record<HealthState, number> & { total: number } {
    return { total: this.workers.size, ...this.perState }
  }

  setState (workerId: string, state: HealthState): void {
    const w = this.workers.get(workerId)
    if (w == null || w.state === state) return
    this.placeAll(w, false)
    this.perState[w.state]--
    this.perState[state]++
    w.state = state
    this.placeAll(w, true)
  }

  setLoad (workerId: string, load: number): void {
    const w = this.workers.get(workerId)
    if (w == null || w.load === load) return
    if ((w.load > 0) !== (load > 0)) {
      // Idle ⇄ busy: the tiers count busy workers (see tier.ts), so take it out and put it back.
      this.placeAll(w, false)
      w.load = load
      this.placeAll(w, true)
      return
    }
    w.load = load
    // Saturation depends on load: a cached "nothing matches" may no longer hold.
    this.touch(w)
  }

  private touch (w: Indexed): void {
    for (const offer of w.offers) offer.bucket.epoch++
  }

  /** Capabilities offered, with how many workers offer each and how many are healthy. */
  capabilities (): Array<{ verb: string, name: string, versions: string[], workers: number, healthy_workers: number }> {
    const out = []
    for (const b of [...this.byVerb.values()].flatMap(names => [...names.values()])) {
      const versions = new Set<string>()
      for (const o of b.all) for (const c of o.caps) versions.add(c.version)
      out.push({ verb: b.verb, name: b.name, versions: [...versions].sort(), workers: b.all.size, healthy_workers: b.healthy.size })
    }
    return out.sort((a, b) => a.verb === b.verb ? (a.name < b.name ? -1 : 1) : (a.verb < b.verb ? -1 : 1))
  }

  // --------------------------------------------------------------- routing

  /**
   * Picks a worker for `q`. Throws NoWorkerError (404) when nobody offers a
   * matching capability, NoHealthyWorkerError (503, retry later) when some
   * worker does but none is routable right now.
   */
  route (q: RouteQuery): RouteResult {
    const b = this.byVerb.get(q.verb)?.get(q.capability)
    if (b == null) throw new NoWorkerError(q.capability, q.verb)
    return this.decide(b, q)
  }

  /**
   * The same decision as `route`, answered as JSON text (what `/route`
   * sends). A plain query (no filter, strategy or idempotency key) whose
   * first tier holds only idle workers is answered from that tier's cached
   * text, reading nothing else (see tier.ts).
   */
  routeText (q: RouteQuery): string {
    const b = this.byVerb.get(q.verb)?.get(q.capability)
    if (b == null) throw new NoWorkerError(q.capability, q.verb)
    if ((q.strategy == null || q.strategy === 'round_robin') && q.idempotency_key == null && !isFiltered(q)) {
      // The tier `pick` would try first: its worker at the cursor matches, being idle and unfiltered.
      const tier = nonEmpty(q.affinity == null ? b.own : b.healthyByOwner.get(q.affinity)) ?? nonEmpty(b.healthy) ?? nonEmpty(b.pending)
      if (tier != null && tier.busy === 0) {
        const idx = b.cursor % tier.size
        b.cursor = idx + 1
        return tier.text(idx, this.plainText)
      }
    }
    return JSON.stringify(this.decide(b, q))
  }

  /** The answer of a plain round-robin pick of an idle `offer` (state from the tier it is in). */
  private readonly plainText = (offer: Offer): string => JSON.stringify(this.result(offer.worker, offer.caps[0], 'round_robin'))

  private decide (b: Bucket, q: RouteQuery): RouteResult {
    const strategy = q.strategy ?? 'round_robin'
    const filtered = isFiltered(q)

    if (q.idempotency_key != null) {
      const idemKey = `${b.verb}\u0000${b.name}\u0000${q.idempotency_key}`
      const prev = this.idem.get(idemKey)
      const offer = prev == null ? undefined : this.workers.get(prev)?.offers.find(o => o.bucket === b)
      if (offer != null && offer.worker.state === 'healthy') {
        const cap = this.match(offer, q)
        if (cap != null) return this.result(offer.worker, cap, strategy)
      }
      const res = this.pick(b, q, strategy, filtered)
      this.idem.set(idemKey, res.worker_id)
      return res
    }
    return this.pick(b, q, strategy, filtered)
  }

  private pick (b: Bucket, q: RouteQuery, strategy: Strategy, filtered: boolean): RouteResult {
    const sig = filtered ? `${q.version ?? ''}\u0000${q.requires_gpu === true ? 1 : 0}\u0000${q.budget_tokens ?? ''}\u0000${q.slo_constraints?.latency_p95_ms ?? ''}\u0000${q.slo_constraints?.latency_p99_ms ?? ''}\u0000${q.slo_constraints?.availability ?? ''}` : ''
    const miss = b.misses.get(sig)
    if (miss != null && miss.epoch === b.epoch) throw miss.error
    const preferred = b.healthyByOwner.get(q.affinity ?? this.controllerId)
    for (const tier of [preferred, b.healthy, b.pending]) {
      if (tier == null || tier.size === 0) continue
      // The preferred workers are a subset of the healthy ones: if they are all of them, one pass is enough.
      if (tier === b.healthy && preferred != null && preferred.size === b.healthy.size) continue
      const hit = this.select(b, tier, q, strategy, filtered)
      if (hit != null) return this.result(hit[0], hit[1], strategy)
    }
    // Nothing routable. 503 if a worker in any state would match (it may recover), else 404.
    let error: NoWorkerError | NoHealthyWorkerError = new NoWorkerError(q.capability, q.verb)
    for (const offer of b.all) {
      if (this.match(offer, q, true) != null) {
        error = new NoHealthyWorkerError(q.capability, q.verb, this.retryAfter)
        break
      }
    }
    if (b.misses.size >= NEGATIVE_CACHE) b.misses.clear()
    b.misses.set(sig, { epoch: b.epoch, error })
    throw error
  }

  private select (b: Bucket, tier: Tier<Offer>, q: RouteQuery, strategy: Strategy, filtered: boolean): [Indexed, Capability] | undefined {
    const n = tier.size
    const start = b.cursor % n
    const comparing = strategy === 'least_loaded' || q.budget_tokens != null
    let best: [Indexed, Capability] | undefined
    let bestIdx = 0
    // Once one candidate matched, look at most CHOICE_WINDOW further (matching or not).
    let window = 0
    for (let i = 0; i < n; i++) {
      if (best != null && ++window > CHOICE_WINDOW) break
      const idx = (start + i) % n
      const offer = tier.at(idx)
      const w = offer.worker
      const cap = filtered || w.load > 0 ? this.match(offer, q) : offer.caps[0]
      if (cap == null) continue
      if (!comparing) {
        b.cursor = idx + 1
        return [w, cap]
      }
      if (best == null || this.better(w, cap, best, q, strategy)) {
        best = [w, cap]
        bestIdx = idx
      }
      // An idle worker is as good as least_loaded gets (and, without a budget, cost does not matter).
      if (strategy === 'least_loaded' && q.budget_tokens == null && best[0].load === 0) break
    }
    if (best != null) b.cursor = bestIdx + 1
    return best
  }

  /** Budget queries: cheapest first, then least loaded. least_loaded: lowest load, then cheapest. */
  private better (w: Indexed, cap: Capability, best: [Indexed, Capability], q: RouteQuery, strategy: Strategy): boolean {
    const cost = cap.cost_tokens_per_invocation ?? 0
    const bestCost = best[1].cost_tokens_per_invocation ?? 0
    if (strategy === 'least_loaded') {
      if (w.load !== best[0].load) return w.load < best[0].load
      return q.budget_tokens != null && cost < bestCost
    }
    return cost < bestCost
  }

  /** The offer's capability that satisfies every filter of `q`, or undefined. */
  private match (offer: Offer, q: RouteQuery, ignoreLoad = false): Capability | undefined {
    const w = offer.worker
    for (const c of offer.caps) {
      if (q.version != null && c.version !== q.version) continue
      if (q.requires_gpu === true && !c.requires_gpu) continue
      if (q.budget_tokens != null && (c.cost_tokens_per_invocation ?? 0) > q.budget_tokens) continue
      const slo = q.slo_constraints
      if (slo != null) {
        if (slo.latency_p95_ms != null && c.slo?.latency_p95_ms != null && c.slo.latency_p95_ms > slo.latency_p95_ms) continue
        if (slo.latency_p99_ms != null && c.slo?.latency_p99_ms != null && c.slo.latency_p99_ms > slo.latency_p99_ms) continue
        if (slo.availability != null && c.slo?.availability != null && c.slo.availability < slo.availability) continue
      }
      if (!ignoreLoad && w.load >= c.max_concurrency) continue
      return c
    }
    return undefined
  }

  private result (w: Indexed, cap: Capability, strategy: Strategy): RouteResult {
    const r: RouteResult = {
      worker_id: w.record.worker_id,
      worker_url: w.record.worker_url,
      verb: cap.verb,
      capability: cap.name,
      version: cap.version,
      controller_id: w.record.owner,
      incarnation: w.record.incarnation,
      state: w.state,
      load: w.load,
      strategy
    }
    if (cap.cost_tokens_per_invocation != null) r.cost_tokens_per_invocation = cap.cost_tokens_per_invocation
    return r
  }

  /** Puts `w` into (or takes it out of) the routable sets of every bucket it offers in. */
  private placeAll (w: Indexed, add: boolean): void {
    for (const offer of w.offers) this.place(offer.bucket, offer, add)
  }

  /** Puts `offer` into (or takes it out of) the routable sets of `b` that match its worker's state. */
  private place (b: Bucket, offer: Offer, add: boolean): void {
    b.epoch++
    const w = offer.worker
    if (w.state === 'healthy') {
      const owner = w.record.owner
      let own = b.healthyByOwner.get(owner)
      if (own == null && add) {
        b.healthyByOwner.set(owner, own = new Tier('inOwn'))
        if (owner === this.controllerId) b.own = own
      }
      if (add) {
        b.healthy.add(offer)
        own!.add(offer)
      } else {
        b.healthy.delete(offer)
        own?.delete(offer)
        if (own?.size === 0) {
          b.healthyByOwner.delete(owner)
          if (owner === this.controllerId) b.own = undefined
        }
      }
    } else if (w.state === 'pending') {
      if (add) b.pending.add(offer)
      else b.pending.delete(offer)
    }
  }
}
