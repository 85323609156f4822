/**
 * Rate limits per identity (429 + Retry-After) and back-pressure (503 +
 * Retry-After while the event loop is late), over real HTTPS, and a worker
 * agent that waits as told instead of hammering.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { workerAgent } from '../../src/agent/index.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import { scrape } from '../helpers/metrics.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('limits') })
afterEach(async () => { await bed.cleanup() })

describe('rate limits', () => {
  it('refuse an identity past its requests a second with 429 and Retry-After, and leave other identities alone', async () => {
    const a = await bed.start({ id: 'a', rateLimit: 5 })
    const c1 = httpsClient(await bed.identity('client', 'c1'))
    const c2 = httpsClient(await bed.identity('client', 'c2'))
    try {
      const answers = await Promise.all(Array.from({ length: 20 }, async () => await c1.json('GET', `${a.url}/capabilities`)))
      const limited = answers.filter(r => r.status === 429)
      expect(limited.length).toBeGreaterThanOrEqual(10)
      expect(limited[0].body).toMatchObject({ error: 'rate_limited', code: 'CAPMESH_ERR_RATE_LIMITED' })
      expect(Number(limited[0].headers['retry-after'])).toBeGreaterThanOrEqual(1)
      // Another identity has its own budget.
      expect((await c2.json('GET', `${a.url}/capabilities`)).status).toBe(200)
    } finally {
      await c1.close()
      await c2.close()
    }
  })

  it('a worker agent told to wait (Retry-After) waits, instead of heartbeating on schedule', async () => {
    const a = await bed.start({ id: 'a', rateLimit: 2, heartbeatIntervalMs: 100, unhealthyAfterMs: 10_000, staleAfterMs: 20_000 })
    const agent = workerAgent({
      workerId: 'w1', workerUrl: 'https://127.0.0.1:7000/w1', capabilities: [capability('echo') as never],
      controllers: [a.url], tls: await bed.identity('worker', 'w1'), heartbeatIntervalMs: 100, failureThreshold: 1000, reprobeIntervalMs: 0
    })
    await agent.start()
    try {
      await new Promise(resolve => setTimeout(resolve, 3000))
      const m = await scrape(bed.client, a.url)
      const sent = m.sum('capmesh_http_requests_total', { route: '/heartbeat' })
      // On schedule it would have sent ~30 in 3 s; refused ones say "in 1 s", so it sends a few a second.
      expect(sent, 'heartbeats sent in 3 s').toBeLessThanOrEqual(12)
      expect(m.sum('capmesh_http_requests_total', { route: '/heartbeat', status: '429' })).toBeGreaterThanOrEqual(1)
    } finally {
      agent.abandon()
    }
  })
})

describe('back-pressure', () => {
  it('sheds requests with 503 overloaded and Retry-After while the event loop is late, then serves again', async () => {
    const a = await bed.start({ id: 'a', maxEventLoopDelayMs: 50 })
    expect((await bed.client.json('GET', `${a.url}/capabilities`)).status).toBe(200)
    // Keep the event loop (controller and test share it) late: under-pressure compares the mean delay
    // over its one-second sample with the limit, so one long stall is not enough, repeated ones are.
    const shed = await eventually(async () => {
      const end = Date.now() + 400
      while (Date.now() < end) { /* busy */ }
      const r = await bed.client.json('GET', `${a.url}/capabilities`)
      return r.status === 503 ? r : null
    }, 'a request shed under pressure', 15_000, 1)
    if (shed == null) throw new Error('unreachable')
    expect(shed.body).toMatchObject({ error: 'overloaded', code: 'CAPMESH_ERR_OVERLOADED' })
    expect(Number(shed.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    await eventually(async () => (await bed.client.json('GET', `${a.url}/capabilities`)).status === 200, 'serving again once the loop is on time', 10_000, 100)
  })
})
