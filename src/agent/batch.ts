/**
 * Many workers from one process (a host running several, or a load test):
 * closeness is probed once for all of them, one HTTPS client is shared, and
 * every worker gets a result; one failing does not stop the others.
 *
 * Workers are registered in batches (`POST /register/batch`, up to
 * `batchSize` workers or `batchBytes` per request) at the controller each
 * would attach to first: one request and one registry write for many
 * workers. A controller that does not offer batches (404: one that predates
 * them), or a batch that fails as a whole (network, timeout, 5xx, a
 * malformed item), falls back to the per-worker path for the workers
 * concerned: `/register` with its retries and failover, at most
 * `concurrency` in flight. A malformed worker named by the controller's 400
 * is rejected with that reason, as `/register` would have rejected it. Once
 * registered, each worker's agent heartbeats and fails over on its own.
 */
import { DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS, DEFAULT_AGENT_BATCH_BYTES, DEFAULT_AGENT_BATCH_SIZE, DEFAULT_AGENT_PROBES } from '../constants.ts'
import { RegistrationRejectedError } from '../errors.ts'
import { httpsClient, type HttpsClient } from '../utils/https-client.ts'
import type { ErrorBody, RegisterBatchReply, RegisterRequest } from '../wire/index.ts'
import { WorkerAgent, type WorkerAgentInit } from './agent.ts'
import { probeControllers } from './probe.ts'

export interface BatchInit {
  /** Requests in flight at once (batches, or single registrations on the fallback path). @default 16 */
  concurrency?: number
  /** Most workers per `/register/batch` request; 0 or 1: always one `/register` per worker. @default 200 */
  batchSize?: number
  /** Most bytes of JSON per `/register/batch` request (keep it below the controllers' body limit, 256 KiB by default). @default 196608 */
  batchBytes?: number
  /** PEM CA to trust (for the shared client). Required unless `tls` or `client` is given. */
  ca?: string | string[]
  /**
   * The CA and one identity for every worker of the batch (a host's): a client certificate, or
   * `token`. It must cover every worker id (a worker token's `worker_ids`, or an operator). @default `ca` alone
   */
  tls?: { ca: string | string[], cert?: string, key?: string }
  token?: string | (() => string)
  /** Shared HTTPS client; the caller closes it. @default one made here, closed when every agent stops */
  client?: HttpsClient
}

export type BatchResult =
  | { workerId: string, ok: true, agent: WorkerAgent }
  | { workerId: string, ok: false, error: Error }

type Spec = Omit<WorkerAgentInit, 'client' | 'ranking' | 'ca' | 'tls' | 'token'>

/** One worker of the batch: its agent, and its result once known. */
interface Slot {
  index: number
  agent: WorkerAgent
  body: RegisterRequest
  bytes: number
}

/** Starts an agent per worker; resolves with one result per worker, in input order. */
export async function registerBatch (workers: Spec[], init: BatchInit = {}): Promise<BatchResult[]> {
  if (workers.length === 0) return []
  if (init.client == null && init.ca == null && init.tls == null) throw new TypeError('registerBatch needs `tls` (or `ca`, or a shared `client`)')
  const concurrency = Math.max(1, init.concurrency ?? 16)
  const batchSize = init.batchSize ?? DEFAULT_AGENT_BATCH_SIZE
  const batchBytes = init.batchBytes ?? DEFAULT_AGENT_BATCH_BYTES
  const client = init.client ?? httpsClient({ ca: init.tls?.ca ?? init.ca!, cert: init.tls?.cert, key: init.tls?.key, token: init.token, connections: Math.min(64, concurrency) })
  const urls = [...new Set(workers.flatMap(w => w.controllers))]
  const ranking = await probeControllers(client, urls, { probes: DEFAULT_AGENT_PROBES, timeoutMs: 5000 })
  const results: BatchResult[] = new Array(workers.length)
  const agents = workers.map(w => new WorkerAgent({ ...w, client, ranking: ranking.filter(r => w.controllers.includes(r.url)) }))

  // Batches first, grouped by the controller each worker would attach to.
  const single: number[] = []
  if (batchSize > 1) {
    const byController = new Map<string, number[]>()
    agents.forEach((a, i) => {
      const url = a.firstChoice()
      byController.set(url, [...(byController.get(url) ?? []), i])
    })
    const chunks: Array<{ url: string, slots: Slot[] }> = []
    for (const [url, indexes] of byController) {
      let cur: Slot[] = []
      let bytes = 0
      for (const index of indexes) {
        const body = agents[index].nextRegistration()
        const size = Buffer.byteLength(JSON.stringify(body)) + 1
        if (cur.length > 0 && (cur.length >= batchSize || bytes + size > batchBytes)) {
          chunks.push({ url, slots: cur })
          cur = []
          bytes = 0
        }
        cur.push({ index, agent: agents[index], body, bytes: size })
        bytes += size
      }
      if (cur.length > 0) chunks.push({ url, slots: cur })
    }
    const noBatch = new Set<string>()
    await pool(chunks, concurrency, async ({ url, slots }) => {
      if (noBatch.has(url)) {
        single.push(...slots.map(s => s.index))
        return
      }
      const outcome = await sendBatch(client, url, slots)
      if (outcome === 'not_offered') noBatch.add(url)
      if (outcome === 'not_offered' || outcome === 'failed') {
        single.push(...slots.map(s => s.index))
        return
      }
      for (const [index, result] of outcome) {
        if (result === 'retry') single.push(index)
        else results[index] = result
      }
    })
  } else {
    single.push(...agents.map((_, i) => i))
  }

  // The per-worker path: /register with retries and failover.
  single.sort((a, b) => a - b)
  await pool(single, concurrency, async i => {
    const agent = agents[i]
    try {
      await agent.start()
      results[i] = { workerId: workers[i].workerId, ok: true, agent }
    } catch (error) {
      results[i] = { workerId: workers[i].workerId, ok: false, error: error as Error }
    }
  })

  if (init.client == null) {
    // The shared client lives as long as the agents using it.
    const live = results.filter(r => r.ok).map(r => (r as { agent: WorkerAgent }).agent)
    let left = live.length
    if (left === 0) await client.close()
    for (const a of live) a.once('stopped', () => { if (--left === 0) void client.close() })
  }
  return results
}

/**
 * One `/register/batch` request. `not_offered`: the controller has no such
 * endpoint; `failed`: the whole batch failed (every worker goes the
 * per-worker way); otherwise each worker's result, or `retry` for a worker
 * that should go the per-worker way (the batch was refused for another
 * worker's sake).
 */
async function sendBatch (client: HttpsClient, url: string, slots: Slot[]): Promise<'not_offered' | 'failed' | Map<number, BatchResult | 'retry'>> {
  let res
  try {
    res = await client.json<RegisterBatchReply | ErrorBody>('POST', new URL('/register/batch', url).href, { workers: slots.map(s => s.body) }, { timeoutMs: DEFAULT_AGENT_ATTEMPT_TIMEOUT_MS })
  } catch {
    return 'failed'
  }
  if (res.status === 404) return 'not_offered'
  const out = new Map<number, BatchResult | 'retry'>()
  if (res.status === 400) {
    // A malformed batch is refused whole, its bad items named (body/workers/<i>/...): those are
    // rejected as /register would reject them, the others try again one by one.
    const body = res.body as ErrorBody
    const named = new Map<number, Array<{ field: string, message: string }>>()
    for (const d of body.details ?? []) {
      const m = /^body\/workers\/(\d+)(\/.*)?$/.exec(d.field)
      if (m == null) continue
      const i = Number(m[1])
      named.set(i, [...(named.get(i) ?? []), { field: `body${m[2] ?? ''}`, message: d.message }])
    }
    if (named.size === 0) return 'failed'
    slots.forEach((s, i) => {
      const details = named.get(i)
      if (details == null) { out.set(s.index, 'retry'); return }
      const reason = { error: body.error, code: body.code, message: details.map(d => `${d.field} ${d.message}`).join('; '), details }
      out.set(s.index, { workerId: s.agent.workerId, ok: false, error: new RegistrationRejectedError(url, 400, reason) })
    })
    return out
  }
  const reply = res.body as RegisterBatchReply
  if (res.status !== 200 || !Array.isArray(reply.results) || reply.results.length !== slots.length) return 'failed'
  slots.forEach((s, i) => {
    const r = reply.results[i]
    if (r.worker_id !== s.body.worker_id) { out.set(s.index, 'retry'); return }
    if (r.status === 'registered') {
      s.agent.startRegistered(url, r)
      out.set(s.index, { workerId: s.agent.workerId, ok: true, agent: s.agent })
    } else if (r.http_status === 429 || r.http_status === 408 || (r.http_status ?? 0) >= 500) {
      out.set(s.index, 'retry')
    } else {
      const { status: _status, http_status: _http, worker_id: _id, ...reason } = r
      out.set(s.index, { workerId: s.agent.workerId, ok: false, error: new RegistrationRejectedError(url, r.http_status ?? 400, reason) })
    }
  })
  return out
}

/** Runs `fn` over `items`, at most `concurrency` at once. */
async function pool<T> (items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const run = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++])
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, run))
}
