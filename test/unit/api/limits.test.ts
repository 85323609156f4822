/**
 * The rate limit's fixed one-second window per caller, through a fastify
 * app (inject: no sockets) with the plugin as the controller registers it.
 */
import Fastify from 'fastify'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { errorHandler, notFoundHandler } from '../../../src/api/plugins/errors.ts'
import { limitsPlugin } from '../../../src/api/plugins/limits.ts'
import type { Api } from '../../../src/api/types.ts'

async function app (ratePerSecond: number): Promise<Api> {
  const a = Fastify({ logger: false }) as unknown as Api
  errorHandler(a)
  // As plugins/auth.ts does: the identity is known before the limit runs.
  a.decorateRequest('identity', null)
  a.addHook('onRoute', route => {
    route.onRequest = [(req, _reply, done) => { req.identity = (req.headers['x-who'] != null ? { id: req.headers['x-who'] } : null) as never; done() }]
  })
  notFoundHandler(a, await limitsPlugin(a, { ratePerSecond, maxEventLoopDelayMs: 0, maxHeapBytes: 0, retryAfterSeconds: 1 }))
  a.get('/x', () => ({ ok: true }))
  await a.ready()
  return a
}

const statuses = async (a: Api, n: number, who?: string, url = '/x'): Promise<number[]> => {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push((await a.inject({ url, headers: who != null ? { 'x-who': who } : {} })).statusCode)
  return out
}

afterEach(() => { vi.useRealTimers() })

describe('rate limit', () => {
  it('answers 429 rate_limited with Retry-After past the limit within a second, and serves again in the next window', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 })
    const a = await app(3)
    expect(await statuses(a, 3, 'c1')).toEqual([200, 200, 200])
    vi.setSystemTime(1_000_400)
    const refused = await a.inject({ url: '/x', headers: { 'x-who': 'c1' } })
    expect(refused.statusCode).toBe(429)
    expect(refused.json()).toMatchObject({ error: 'rate_limited', code: 'CAPMESH_ERR_RATE_LIMITED' })
    // 600 ms of the window left: come back in 1 s (whole seconds, at least 1).
    expect(refused.headers['retry-after']).toBe('1')
    vi.setSystemTime(1_001_000)
    expect(await statuses(a, 3, 'c1')).toEqual([200, 200, 200])
    expect(await statuses(a, 1, 'c1')).toEqual([429])
    await a.close()
  })

  it('keys by identity (by address without one): one caller over its limit leaves the others alone', async () => {
    const a = await app(2)
    expect(await statuses(a, 3, 'c1')).toEqual([200, 200, 429])
    expect(await statuses(a, 2, 'c2')).toEqual([200, 200])
    // No identity: the address (inject's 127.0.0.1) is the key.
    expect(await statuses(a, 3)).toEqual([200, 200, 429])
    await a.close()
  })

  it('counts requests for paths that do not exist too', async () => {
    const a = await app(2)
    expect(await statuses(a, 3, undefined, '/nowhere')).toEqual([404, 404, 429])
    await a.close()
  })

  it('is off at 0', async () => {
    const a = await app(0)
    expect(await statuses(a, 50, 'c1')).toEqual(Array(50).fill(200))
    await a.close()
  })
})

describe('back-pressure', () => {
  it('sheds requests with 503 overloaded and Retry-After once a sample finds the heap over its limit', async () => {
    const a = Fastify({ logger: false }) as unknown as Api
    errorHandler(a)
    await limitsPlugin(a, { ratePerSecond: 0, maxEventLoopDelayMs: 0, maxHeapBytes: 1, retryAfterSeconds: 7 })
    a.get('/x', () => ({ ok: true }))
    await a.ready()
    try {
      // Before the first sample (one second in) nothing is known: served.
      expect((await a.inject({ url: '/x' })).statusCode).toBe(200)
      await new Promise(resolve => setTimeout(resolve, 1300))
      const shed = await a.inject({ url: '/x' })
      expect(shed.statusCode).toBe(503)
      expect(shed.json()).toMatchObject({ error: 'overloaded', code: 'CAPMESH_ERR_OVERLOADED' })
      expect(shed.json().message).toMatch(/heapUsedBytes \d+/)
      expect(shed.headers['retry-after']).toBe('7')
    } finally {
      await a.close()
    }
  })
})
