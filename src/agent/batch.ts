/**
 * Many workers from one process (a host running several, or a load test):
 * closeness is probed once for all of them, one HTTPS client is shared, and
 * at most `concurrency` registrations are in flight. Every worker gets a
 * result; one failing does not stop the others.
 */
import { DEFAULT_AGENT_PROBES } from '../constants.ts'
import { httpsClient, type HttpsClient } from '../utils/https-client.ts'
import { WorkerAgent, type WorkerAgentInit } from './agent.ts'
import { probeControllers } from './probe.ts'

export interface BatchInit {
  /** Registrations in flight at once. @default 16 */
  concurrency?: number
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

/** Starts an agent per worker; resolves with one result per worker, in input order. */
export async function registerBatch (workers: Array<Omit<WorkerAgentInit, 'client' | 'ranking' | 'ca' | 'tls' | 'token'>>, init: BatchInit = {}): Promise<BatchResult[]> {
  if (workers.length === 0) return []
  if (init.client == null && init.ca == null && init.tls == null) throw new TypeError('registerBatch needs `tls` (or `ca`, or a shared `client`)')
  const concurrency = Math.max(1, init.concurrency ?? 16)
  const client = init.client ?? httpsClient({ ca: init.tls?.ca ?? init.ca!, cert: init.tls?.cert, key: init.tls?.key, token: init.token, connections: Math.min(64, concurrency) })
  const urls = [...new Set(workers.flatMap(w => w.controllers))]
  const ranking = await probeControllers(client, urls, { probes: DEFAULT_AGENT_PROBES, timeoutMs: 5000 })
  const results: BatchResult[] = new Array(workers.length)
  let next = 0
  const run = async (): Promise<void> => {
    while (next < workers.length) {
      const i = next++
      const w = workers[i]
      const agent = new WorkerAgent({ ...w, client, ranking: ranking.filter(r => w.controllers.includes(r.url)) })
      try {
        await agent.start()
        results[i] = { workerId: w.workerId, ok: true, agent }
      } catch (error) {
        results[i] = { workerId: w.workerId, ok: false, error: error as Error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, workers.length) }, run))
  if (init.client == null) {
    // The shared client lives as long as the agents using it.
    const live = results.filter(r => r.ok).map(r => (r as { agent: WorkerAgent }).agent)
    let left = live.length
    if (left === 0) await client.close()
    for (const a of live) a.once('stopped', () => { if (--left === 0) void client.close() })
  }
  return results
}
