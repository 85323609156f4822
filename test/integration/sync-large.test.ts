/**
 * Anti-entropy carries deltas of any size up to max-sync-bytes (real
 * controllers, real TCP libp2p on loopback). 30,000 workers encode to ~10 MB
 * of Yjs update: more than twice the 4 MiB read buffer that once made every
 * such exchange fail silently (a late joiner, a controller restarted with an
 * empty data dir and a partition heal never converged).
 *
 * Workers are registered in-process (the registration path itself is tested
 * elsewhere); their owners keep them healthy because no timeout falls
 * within a test (heartbeats every 10 s, unhealthy after 60 s).
 */
import { rmSync } from 'node:fs'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { meshStatus } from '../../src/cli/status.ts'
import type { Controller } from '../../src/controller/index.ts'
import { capability, eventually, faultsOf, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('sync-large') })
afterEach(async () => { await bed.cleanup() })

/** No owner judged silent or gone, and no worker unhealthy, while a test runs. */
const slow = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }
/**
 * How long a catch-up may take. Moving, checking and applying 10 MB takes
 * ~1 s on a quiet 2-core machine; this allows for a CI machine running other
 * tests beside it, and is far below what a failing exchange would ever reach
 * (it never converges).
 */
const CATCH_UP_MS = 60_000
const N = 30_000

/** Registers `n` workers at `c` (ids `<prefix><i>`, 100 capabilities). */
function registerMany (c: Controller, prefix: string, n: number): void {
  const caps = Array.from({ length: 100 }, (_, i) => [capability(`cap-${i}`)] as never)
  for (let i = 0; i < n; i++) {
    c.core.register({ worker_id: `${prefix}${i}`, worker_url: `https://127.0.0.1:7000/${prefix}${i}`, capabilities: caps[i % 100] })
  }
}

/** Every worker in the registry, counted as the controller routes it. */
function healthy (c: Controller): number { return c.core.stateCounts().healthy }

async function converged (cs: Controller[], workers: number): Promise<void> {
  await eventually(() => cs.every(c => c.core.registry.size === workers && c.core.registryHash === cs[0].core.registryHash), `${cs.length} controllers to hold the same ${workers} workers`, CATCH_UP_MS, 100)
  // Routable everywhere: every worker healthy as its controller routes it, and a route per capability.
  await eventually(() => cs.every(c => healthy(c) === workers), 'every worker healthy everywhere', CATCH_UP_MS, 100)
  for (const c of cs) for (let i = 0; i < 100; i += 33) expect(c.core.route({ verb: 'invoke', capability: `cap-${i}` }).state).toBe('healthy')
}

describe('anti-entropy beyond 4 MiB', { timeout: 3 * CATCH_UP_MS }, () => {
  it('a controller started empty catches up with one holding 30,000 workers', async () => {
    const a = await bed.start({ id: 'a', ...slow })
    registerMany(a, 'w', N)
    expect(a.core.registry.encodeState().length, 'the state must exceed the old 4 MiB frame limit').toBeGreaterThan(8 * 1024 * 1024)
    const b = await bed.start({ id: 'b', ...slow, bootstrap: [a.p2p.multiaddrs[0]] })
    await converged([a, b], N)
  })

  it('a partition heal where each side lacks more than 4 MiB converges', async () => {
    const a = await bed.start({ id: 'a', ...slow })
    const b = await bed.start({ id: 'b', ...slow, bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(() => a.p2p.connectedPeers().includes(b.p2p.peerId), 'a and b to connect')
    await faultsOf(a).block([b.p2p.peerId])
    await faultsOf(b).block([a.p2p.peerId])
    await eventually(() => !a.p2p.connectedPeers().includes(b.p2p.peerId) && !b.p2p.connectedPeers().includes(a.p2p.peerId), 'a and b to be apart')
    registerMany(a, 'a-', N / 2)
    registerMany(b, 'b-', N / 2)
    expect(a.core.registry.size).toBe(N / 2)
    expect(b.core.registry.size).toBe(N / 2)
    faultsOf(a).unblock()
    faultsOf(b).unblock()
    await converged([a, b], N)
  })

  it('a controller restarted with an empty data dir catches up again', async () => {
    const a = await bed.start({ id: 'a', ...slow })
    registerMany(a, 'w', N)
    const b = await bed.start({ id: 'b', ...slow, bootstrap: [a.p2p.multiaddrs[0]] })
    await converged([a, b], N)
    await b.stop()
    rmSync(b.config.dataDir, { recursive: true, force: true })
    const b2 = await bed.start({ id: 'b', ...slow, bootstrap: [a.p2p.multiaddrs[0]] })
    expect(b2.core.registry.size, 'the data dir was empty').toBe(0)
    await converged([a, b2], N)
  })
})

describe('a catch-up that keeps failing is loud', { timeout: 2 * CATCH_UP_MS }, () => {
  it('shows "behind" in /health, /mesh, /metrics and capmesh status, and backs off instead of retrying in a loop', async () => {
    const a = await bed.start({ id: 'a', ...slow })
    registerMany(a, 'w', 2000)
    // b takes at most 64 KiB per delta; a's registry is ~600 KB.
    const b = await bed.start({ id: 'b', ...slow, maxSyncBytes: 64 * 1024, bootstrap: [a.p2p.multiaddrs[0]] })
    const attempts: string[] = []
    b.p2p.on('sync:failed', (_peer, reason) => { attempts.push(reason) })

    const health = await eventually(async () => {
      const h = (await bed.client.json('GET', `${b.url}/health`)).body
      return h.status === 'behind' ? h : null
    }, 'b to report itself behind', 20_000, 100)
    expect(health.sync.state).toBe('behind')
    expect(health.sync.behind).toHaveLength(1)
    expect(health.sync.behind[0]).toMatchObject({ controller_id: 'a', peer_id: a.p2p.peerId, reason: 'too_large' })
    expect(health.sync.behind[0].last_error).toMatch(/max-sync-bytes/)
    expect(b.core.registry.size, 'nothing half-applied').toBe(0)

    const mesh = (await bed.client.json('GET', `${b.url}/mesh`)).body
    const peer = mesh.peers.find((p: { peer_id: string }) => p.peer_id === a.p2p.peerId)
    expect(peer).toMatchObject({ sync_state: 'behind', last_sync_error: { reason: 'too_large' } })
    expect(peer.sync_failures).toBeGreaterThanOrEqual(1)
    expect(mesh.sync.state).toBe('behind')

    const metrics = (await bed.client.json('GET', `${b.url}/metrics`)).body as string
    expect(metrics).toMatch(/^capmesh_sync_failures_total\{reason="too_large"\} [1-9]/m)
    expect(metrics).toMatch(/^capmesh_sync_peers_behind 1$/m)
    // The sender sees it too: the delta it would have sent exceeds what b takes.
    const aHealth = (await bed.client.json('GET', `${a.url}/health`)).body
    expect(aHealth.status).toBe('behind')
    expect(aHealth.sync.behind[0]).toMatchObject({ controller_id: 'b', reason: 'too_large' })

    const status = await meshStatus(bed.client, [a.url, b.url])
    expect(status.ok).toBe(false)
    expect(status.controllers.map(c => c.status)).toEqual(['behind', 'behind'])
    expect(status.summary).toMatch(/b is behind: sync with a fails \(too_large/)

    // Size failures wait the longest back-off at once: the periodic exchange (every 500 ms here) does
    // not retry them. A tight loop would make dozens of attempts in two seconds.
    const before = attempts.length
    await new Promise(resolve => setTimeout(resolve, 2000))
    expect(attempts.length - before, `attempts in 2 s after being behind: ${attempts.join(', ')}`).toBeLessThanOrEqual(1)
  })

  it('a controller that accepts the delta again catches up', async () => {
    const a = await bed.start({ id: 'a', ...slow })
    registerMany(a, 'w', 2000)
    const small = await bed.start({ id: 'b', ...slow, maxSyncBytes: 64 * 1024, bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(async () => (await bed.client.json('GET', `${small.url}/health`)).body.status === 'behind', 'b to be behind', 20_000, 100)
    await small.stop()
    // Restarted with the default limit (and its data dir): a new link brings a new exchange at once.
    const b = await bed.start({ id: 'b', ...slow, bootstrap: [a.p2p.multiaddrs[0]] })
    await eventually(() => b.core.registry.size === 2000 && b.core.registryHash === a.core.registryHash, 'b to catch up', CATCH_UP_MS, 100)
    await eventually(async () => (await bed.client.json('GET', `${b.url}/health`)).body.status === 'ok', 'b to be ok', 10_000, 100)
  })
})
