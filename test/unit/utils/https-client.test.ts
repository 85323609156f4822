import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureTls, type TlsMaterial } from '../../../src/tls/index.ts'
import { httpsClient } from '../../../src/utils/https-client.ts'

let root: string
let tls: TlsMaterial
let other: TlsMaterial
const servers: Server[] = []

/** An HTTPS server on 127.0.0.1 that closes every connection and says whether its TLS session was resumed. */
async function server (material: TlsMaterial): Promise<string> {
  const s = createServer({ cert: material.cert, key: material.key }, (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.setHeader('connection', 'close')
    res.end(JSON.stringify({ resumed: (req.socket as import('node:tls').TLSSocket).isSessionReused() }))
  })
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  servers.push(s)
  return `https://127.0.0.1:${(s.address() as { port: number }).port}/`
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'capmesh-https-client-'))
  tls = await ensureTls({ dir: join(root, 'tls') })
  other = await ensureTls({ dir: join(root, 'other') })
})
afterAll(() => {
  for (const s of servers) s.close()
  rmSync(root, { recursive: true, force: true })
})

describe('httpsClient', () => {
  it('resumes the TLS session of each controller on a new connection, also when several share one IP', async () => {
    const a = await server(tls)
    const b = await server(tls)
    const client = httpsClient({ ca: tls.ca, timeoutMs: 5000 })
    try {
      const seen: Record<string, boolean[]> = { a: [], b: [] }
      // Alternate: one session cache keyed by the IP would hand a's session to b and back.
      for (let i = 0; i < 4; i++) {
        for (const [name, url] of [['a', a], ['b', b]] as const) {
          const res = await client.json('GET', url)
          expect(res.status).toBe(200)
          seen[name].push(res.body.resumed)
        }
      }
      expect(seen.a[0]).toBe(false)
      expect(seen.b[0]).toBe(false)
      expect(seen.a.slice(1)).toEqual([true, true, true])
      expect(seen.b.slice(1)).toEqual([true, true, true])
    } finally {
      await client.close()
    }
  })

  it('still refuses a server whose certificate another CA signed', async () => {
    const stranger = await server(other)
    const client = httpsClient({ ca: tls.ca, timeoutMs: 5000 })
    try {
      await expect(client.json('GET', stranger)).rejects.toThrow()
    } finally {
      await client.close()
    }
  })
})
