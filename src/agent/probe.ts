/**
 * Closeness: a few `GET /health` round trips per controller, median taken.
 * A controller that fails any probe is ranked after every one that answered.
 */
import { performance } from 'node:perf_hooks'
import type { HttpsClient } from '../utils/https-client.ts'

export interface ProbeResult {
  url: string
  /** The controller's id from /health, null if it never answered. */
  controllerId: string | null
  /** Median round trip (ms), Infinity if unreachable. */
  rttMs: number
  error?: string
}

export async function probeControllers (client: HttpsClient, urls: string[], opts: { probes: number, timeoutMs: number }): Promise<ProbeResult[]> {
  const results = await Promise.all(urls.map(async url => await probeOne(client, url, opts)))
  return results.sort((a, b) => a.rttMs - b.rttMs)
}

async function probeOne (client: HttpsClient, url: string, opts: { probes: number, timeoutMs: number }): Promise<ProbeResult> {
  const rtts: number[] = []
  let controllerId: string | null = null
  for (let i = 0; i < opts.probes; i++) {
    const t0 = performance.now()
    try {
      const res = await client.json('GET', new URL('/health', url).href, undefined, { timeoutMs: opts.timeoutMs })
      if (res.status !== 200 || typeof res.body?.controller_id !== 'string') {
        return { url, controllerId, rttMs: Infinity, error: `unexpected /health answer (HTTP ${res.status})` }
      }
      controllerId = res.body.controller_id
      rtts.push(performance.now() - t0)
    } catch (err) {
      return { url, controllerId, rttMs: Infinity, error: (err as Error).message }
    }
  }
  rtts.sort((a, b) => a - b)
  return { url, controllerId, rttMs: rtts[Math.floor(rtts.length / 2)] }
}
