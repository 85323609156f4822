/**
 * Test helpers: real controllers on ephemeral loopback ports, with data dirs
 * under a temp folder and one shared TLS dir (the project's own CA), and an
 * HTTPS client that trusts that CA. Everything started is stopped by
 * `cleanup()`.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { localPreset, resolveControllerConfig, type RawConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { ensureTls } from '../../src/tls/index.ts'
import { httpsClient, type HttpsClient } from '../../src/utils/https-client.ts'

export interface TestBed {
  root: string
  tlsDir: string
  ca: string
  client: HttpsClient
  /** Starts a controller in-process (local preset: fast timeouts, port 0). */
  start: (overrides?: RawConfig) => Promise<Controller>
  cleanup: () => Promise<void>
}

export async function testBed (name = 'capmesh'): Promise<TestBed> {
  const root = mkdtempSync(join(tmpdir(), `${name}-`))
  const tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir })
  const client = httpsClient({ ca: tls.ca, timeoutMs: 10_000 })
  const running: Controller[] = []
  let n = 0
  return {
    root,
    tlsDir,
    ca: tls.ca,
    client,
    async start (overrides = {}) {
      const id = overrides.id ?? `c${n++}`
      const config = resolveControllerConfig(localPreset({ id, dataDir: join(root, id), tlsDir, ...overrides }))
      const c = new Controller({ config })
      await c.start()
      running.push(c)
      return c
    },
    async cleanup () {
      for (const c of running.splice(0)) await c.stop().catch(() => {})
      await client.close()
      rmSync(root, { recursive: true, force: true })
    }
  }
}

/** A valid CapabilitySchema with overrides. */
export function capability (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    verb: 'invoke',
    version: '1.0.0',
    input_schema: { type: 'object' },
    output_schema: { type: 'object' },
    requires_gpu: false,
    max_concurrency: 4,
    ...extra
  }
}

/** Polls `check` until it returns truthy or `timeoutMs` passes (then throws with `what`). */
export async function eventually<T> (check: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < end) {
    try {
      const v = await check()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  throw new Error(`timed out waiting for ${what}${last != null ? `: ${String(last)}` : ''}`)
}

/** A TCP port free on 127.0.0.1 right now (for restarting a controller on the same port). */
export async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise<void>(resolve => s.close(() => { resolve() }))
  return port
}

/** The error `fn` throws (fails the test if it throws none). */
export function errorOf (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected an error')
}
