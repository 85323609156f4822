/**
 * `capmesh status` as a child process against real in-process controllers
 * (real HTTPS with the project CA, real libp2p on loopback): a table of the
 * controllers and a verdict, exit 0 only when every controller answers, all
 * hold the same registry and none is in self-preservation.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { capmesh } from '../helpers/cli.ts'
import { capability, eventually, faultsOf, freePort, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let a: Controller
let b: Controller

/** Workers here never heartbeat: liveness windows long enough that none expires during a test (each CLI run takes a second or two). */
const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }

beforeEach(async () => {
  bed = await testBed('status-cli')
  a = await bed.start({ id: 'a', ...calm })
  b = await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]], ...calm })
  await eventually(() => a.p2p.connectedPeers().includes(b.p2p.peerId), 'a and b connected')
})
afterEach(async () => { await bed.cleanup() })

const status = async (...urls: string[]) => await capmesh(['status', ...urls.flatMap(u => ['--controller', u]), '--tls-dir', bed.tlsDir, '--timeout', '3s'])
const register = async (c: Controller, id: string) => await bed.client.json('POST', `${c.url}/register`, { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] })

describe('capmesh status', () => {
  it('lists each controller with its peers and exits 0 when the mesh agrees', async () => {
    expect((await register(a, 'w1')).status).toBe(200)
    // Agreement as the controllers see it: b's digest shows a's registry, and a's shows b's.
    await eventually(async () => (await status(a.url, b.url)).code === 0, 'status to report agreement', 10_000, 200)
    const out = await status(a.url, b.url)
    expect(out.stderr).toBe('')
    const rows = out.stdout.split('\n')
    expect(rows[0]).toMatch(/^controller\s+url\s+state/)
    expect(rows.find(r => r.startsWith('a '))).toMatch(new RegExp(`^a\\s+${a.url}\\s+ok\\s+1/1\\s+1\\s+1/1\\s+[0-9a-f]{16}\\s+b$`))
    expect(rows.find(r => r.startsWith('b '))).toMatch(new RegExp(`^b\\s+${b.url}\\s+ok\\s+1/1\\s+0\\s+1/1\\s+[0-9a-f]{16}\\s+a$`))
    expect(out.stdout).toContain('OK: 2 of 2 controllers answered; one registry (they agree)')

    const json = await capmesh(['status', '--controller', a.url, '--controller', b.url, '--tls-dir', bed.tlsDir, '--json'])
    expect(json.code).toBe(0)
    const parsed = JSON.parse(json.stdout)
    expect(parsed.ok).toBe(true)
    expect(parsed.controllers.map((c: { controllerId: string }) => c.controllerId)).toEqual(['a', 'b'])
    expect(new Set(parsed.controllers.map((c: { registryHash: string }) => c.registryHash)).size).toBe(1)
  })

  it('exits 1 and says which controller did not answer', async () => {
    const nobody = `https://127.0.0.1:${await freePort()}`
    const out = await status(a.url, b.url, nobody)
    expect(out.code).toBe(1)
    expect(out.stdout).toMatch(new RegExp(`\\?\\s+${nobody}\\s+UNREACHABLE \\(ECONNREFUSED\\)`))
    expect(out.stdout).toContain('NOT OK: 2 of 3 controllers answered')
  })

  it('exits 1 when the controllers hold different registries (a partition)', async () => {
    await faultsOf(a).block([b.p2p.peerId])
    await faultsOf(b).block([a.p2p.peerId])
    await eventually(() => !a.p2p.connectedPeers().includes(b.p2p.peerId), 'the link to be cut')
    expect((await register(a, 'only-on-a')).status).toBe(200)
    const out = await status(a.url, b.url)
    expect(out.code).toBe(1)
    expect(out.stdout).toContain('NOT OK: 2 of 2 controllers answered; 2 different registries')
    // Healed, they agree again.
    faultsOf(a).unblock()
    faultsOf(b).unblock()
    await eventually(async () => (await status(a.url, b.url)).code === 0, 'status to report agreement after the heal', 15_000, 250)
  })

  it('refuses a URL that is not https:// with exit 2 and says why', async () => {
    const out = await capmesh(['status', '--controller', 'http://127.0.0.1:9000', '--tls-dir', bed.tlsDir])
    expect(out.code).toBe(2)
    expect(out.stderr).toContain('--controller: "http://127.0.0.1:9000" is not an https:// URL')
    const noCa = await capmesh(['status', '--controller', a.url, '--tls-dir', `${bed.root}/no-such-dir`])
    expect(noCa.code).toBe(1)
    expect(noCa.stderr).toContain('no CA in')
  })
})
