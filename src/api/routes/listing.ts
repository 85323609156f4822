import type { ServerResponse } from 'node:http'
import { DEFAULT_WATCH_WAIT_MS, DEFAULT_WORKERS_PAGE, MAX_WATCH_WAIT_MS, MAX_WORKERS_PAGE } from '../../constants.ts'
import type { ControllerView, Watcher } from '../../core/index.ts'
import { ValidationError } from '../../errors.ts'
import { formatDuration } from '../../utils/duration.ts'
import { CapabilitiesReply, ErrorBody, WorkersQuerystring, WorkersReply, type WatchKind } from '../../wire/index.ts'
import type { WatcherSlots } from '../plugins/watchers.ts'
import type { Api, ApiComponents } from '../types.ts'

/** What a blocking `/workers` query waits for: changes to workers and their health. */
const WORKER_KINDS: ReadonlySet<WatchKind> = new Set(['worker', 'health'])

/**
 * GET /capabilities and GET /workers — what the registry holds, with health.
 *
 * `/workers` is also a blocking query, as Consul's: with `index=N` (the
 * `index` of an earlier answer, also its `x-capmesh-index` header) it answers
 * once a worker (of `capability`, if given) changed after N, or after `wait`
 * (default 60 s, at most 5 m), with the listing and the new index. An index
 * this controller has not reached (one from another controller, or from
 * before a restart) answers at once, as does one older than its change log.
 * A waiting query holds a watcher slot (`--max-watchers`).
 */
export function listingRoutes (app: Api, { view }: ApiComponents, slots: WatcherSlots): void {
  app.get('/capabilities', { config: { access: ['client'] }, schema: { summary: 'Capabilities on offer', response: { 200: CapabilitiesReply } } }, async () => {
    return { capabilities: view.capabilities() }
  })

  app.get('/workers', {
    config: { access: ['client'] },
    schema: {
      summary: 'Workers with state and last heartbeat (a blocking query with index and wait)',
      querystring: WorkersQuerystring,
      response: { 200: WorkersReply, 400: ErrorBody, 503: ErrorBody }
    }
  }, async (req, reply) => {
    const q = req.query
    const limit = q.limit != null ? Number(q.limit) : DEFAULT_WORKERS_PAGE
    if (limit > MAX_WORKERS_PAGE) throw new ValidationError(`querystring/limit must be ≤ ${MAX_WORKERS_PAGE}`, [{ field: 'querystring/limit', message: `must be <= ${MAX_WORKERS_PAGE}` }])
    if (q.index != null) await blockUntilChanged(view, slots, reply.raw, Number(q.index), waitOf(q.wait), q.capability)
    else if (q.wait != null) throw new ValidationError('querystring/wait needs querystring/index (the index of an earlier answer)', [{ field: 'querystring/wait', message: 'needs index' }])
    const listing = view.workers({ state: q.state, capability: q.capability, limit, offset: Number(q.offset ?? 0) })
    void reply.header('x-capmesh-index', String(listing.index))
    return listing
  })
}

/** `wait=30s`, `500ms`, `5m` (or bare ms), at most MAX_WATCH_WAIT_MS; absent: the default. */
function waitOf (wait: string | undefined): number {
  if (wait == null) return DEFAULT_WATCH_WAIT_MS
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(wait)
  if (m == null) throw new ValidationError(`querystring/wait "${wait}" is not a duration (e.g. 30s, 500ms, 5m)`, [{ field: 'querystring/wait', message: 'must be a duration like 30s, 500ms or 5m' }])
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms']!
  if (!(ms <= MAX_WATCH_WAIT_MS)) throw new ValidationError(`querystring/wait must be at most ${formatDuration(MAX_WATCH_WAIT_MS)}`, [{ field: 'querystring/wait', message: `must be at most ${formatDuration(MAX_WATCH_WAIT_MS)}` }])
  return Math.round(ms)
}

/**
 * Waits until a worker (of `capability`, if given) changed after `index`,
 * `waitMs` passed, the client left or the server closes. Returns at once if
 * the change log already has such a change, or cannot tell (an index it has
 * not reached, or has forgotten).
 */
async function blockUntilChanged (view: ControllerView, slots: WatcherSlots, res: ServerResponse, index: number, waitMs: number, capability: string | undefined): Promise<void> {
  const pos = view.changes()
  if (index > pos.index || waitMs === 0) return
  const watcher: Watcher = view.watch({ epoch: pos.epoch, index }, { capabilities: capability != null ? new Set([capability]) : null, kinds: WORKER_KINDS })
  try {
    if (watcher.pending()) return
    let wake = (): void => {}
    const done = new Promise<void>(resolve => { wake = resolve })
    const release = slots.acquire(wake)
    const timer = setTimeout(wake, waitMs)
    res.once('close', wake)
    watcher.onReady(() => { if (watcher.pending()) wake() })
    try {
      await done
    } finally {
      clearTimeout(timer)
      res.off('close', wake)
      release()
    }
  } finally {
    watcher.close()
  }
}
