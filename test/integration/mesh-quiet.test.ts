/**
 * What the mesh sends, and when (real controllers, real TCP libp2p on
 * loopback). Every gossip message costs each controller CPU in the libp2p
 * stack, so a mesh at rest must stay quiet, yet everything that matters
 * must still travel:
 *
 * - a controller that bootstraps from one peer is introduced to the others
 *   by that peer's digest, and connects to all of them, long before any
 *   keepalive;
 * - at rest, no digest goes out between keepalives, and while every peer
 *   agrees on the registry anti-entropy runs only as the net under lost
 *   digests (once per ten intervals), not every interval;
 * - a change of a worker's health goes out at once, and every peer routes by
 *   it.
 *
 * Liveness windows are long (unhealthy after 60 s: keepalives every 15 s),
 * so nothing here can be explained by a keepalive.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import type { Digest } from '../../src/membership/index.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('mesh-quiet') })
afterEach(async () => { await bed.cleanup() })

const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 100, syncIntervalMs: 100 }

/**
 * How long gossipsub can still hand out a message after it was published or received: a message
 * stays in its holder's gossip window for 3 heartbeats of 1 s (gossipsub's defaults, which mesh.ts
 * keeps), advertised by IHAVE and sent on IWANT to any peer that missed it; plus 500 ms for
 * heartbeats running late on a loaded machine.
 */
const GOSSIP_WINDOW_MS = 3 * 1_000 + 500

const fullMesh = (cs: Controller[]): boolean => cs.every(c => cs.every(o => o === c || c.p2p.connectedPeers().includes(o.p2p.peerId)))

async function post (c: Controller, path: string, body: unknown): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', c.url + path, body)
}

describe('a quiet mesh', () => {
  it('a controller bootstrapping from one peer is introduced to the others and connects to all of them', async () => {
    const c0 = await bed.start({ id: 'q0', ...calm })
    const others: Controller[] = []
    // Each one knows only q0: it learns of the rest from q0's digests.
    for (let i = 1; i <= 4; i++) others.push(await bed.start({ id: `q${i}`, ...calm, bootstrap: [c0.p2p.multiaddrs[0]] }))
    const all = [c0, ...others]
    await eventually(() => fullMesh(all), 'every controller connected to every other', 8_000, 50)
    // ... and each knows every other by controller id (it heard from it).
    await eventually(() => all.every(c => c.view.mesh().peers.filter(p => p.connected && p.controller_id != null).length === 4), 'every peer known by its controller id', 5_000, 50)
  })

  it('at rest, sends no digest between keepalives and exchanges only as the net; a change of health goes out at once', async () => {
    const cs = [await bed.start({ id: 'r0', ...calm })]
    for (let i = 1; i < 3; i++) cs.push(await bed.start({ id: `r${i}`, ...calm, bootstrap: [cs[0].p2p.multiaddrs[0]] }))
    // For the failure message: per digest received at rest, its sender, how long since that sender's
    // previous digest (a keepalive is ≥ 15 s), and what in it differs from the previous one (nothing:
    // it was owed to a new link, or a late settled registry hash), or that it is a stale copy (older
    // than the previous: a digest from before, handed out late by gossipsub).
    const lastFrom = new Map<string, { at: number, d: Digest }>()
    let lastDigestAt = performance.now()
    const seen: string[] = []
    let resting = false
    let restFrom = 0
    // Every new link is owed a digest a few intervals later: when did the last ones open?
    const linkedAt: Array<{ id: string, at: number }> = []
    for (const c of cs) {
      c.p2p.on('peer:connect', () => { linkedAt.push({ id: c.config.id, at: performance.now() }) })
      c.core.membership.on('digest', (id: string, d: Digest) => {
        const now = performance.now()
        lastDigestAt = now
        const prev = lastFrom.get(`${c.config.id}<${id}`)
        if (resting) {
          const diff = prev == null
            ? ['first']
            : (['exceptions', 'loads', 'registry_hash', 'self_preservation', 'peers'] as const).filter(k => JSON.stringify(d[k]) !== JSON.stringify(prev.d[k]))
          const stale = prev != null && d.epoch === prev.d.epoch && d.seq < prev.d.seq ? `, stale copy: seq ${d.seq} after ${prev.d.seq}` : ''
          seen.push(`${c.config.id}<${id} +${prev == null ? '?' : Math.round(now - prev.at)} ms (${diff.length > 0 ? diff.join(',') + ' changed' : 'same'}${stale})`)
        }
        lastFrom.set(`${c.config.id}<${id}`, { at: now, d })
      })
    }
    await eventually(() => fullMesh(cs), 'a full mesh', 8_000, 50)
    for (const [i, c] of cs.entries()) {
      expect((await post(c, '/register', { worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [capability('quiet')] })).status).toBe(200)
    }
    await eventually(() => cs.every(c => c.core.registry.size === 3 && c.core.registryHash === cs[0].core.registryHash), 'one registry everywhere', 5_000, 20)

    // Wait for the mesh to settle: the hash digests of the last writes are out, and every peer's word agrees.
    await eventually(() => cs.every(c => [...c.core.membership.members()].every(([id, o]) => id === c.config.id || o.registryHash === c.core.registryHash)), 'every peer to have said it agrees', 5_000, 20)
    // ... and until gossipsub can no longer hand out a digest from before: no digest received anywhere
    // for a gossip window. Digests published while the mesh was forming (each controller's first, to no
    // peer yet; those owed to its first link, before the others opened) reach the peers that missed them
    // late, through the sender's IHAVE and their IWANT, up to 3 heartbeats after: stale (the receivers
    // drop them by seq), nothing new sent, but received. A rest window that began 500 ms after agreement
    // caught them in 2 runs of 10: r1's digests seq 0-2 (the empty registry's hash, no introductions,
    // from its first 150 ms) arrived at r2 ~1.6 s after they were published, as r1's answers to r2's
    // IWANT, and at r0 forwarded by r2. If digests never stop, the wait gives up after 10 s and the
    // check at rest below fails, naming them.
    const quietBy = performance.now() + 10_000
    while (performance.now() - lastDigestAt < GOSSIP_WINDOW_MS && performance.now() < quietBy) await new Promise(resolve => setTimeout(resolve, 50))
    resting = true
    restFrom = performance.now()
    let digests = 0
    let exchanges = 0
    let connects = 0
    for (const c of cs) {
      c.core.membership.on('digest', () => { digests++ })
      c.p2p.on('sync', () => { exchanges++ })
      c.p2p.on('peer:connect', () => { connects++ })
    }
    // 2 s at rest: 20 digest intervals and 20 anti-entropy intervals per controller.
    await new Promise(resolve => setTimeout(resolve, 2_000))
    const lastLinks = linkedAt.slice(-3).map(l => `${l.id} ${Math.round(l.at - restFrom)} ms`).join(', ')
    expect(digests, `digests received at rest (${connects} peer connections opened meanwhile; the last links opened, relative to the rest: ${lastLinks}): ${seen.join('; ')}`).toBe(0)
    // Each exchange is seen by both sides. Every interval would be ~60 exchanges; the net is 2 per controller.
    expect(exchanges / 2, 'anti-entropy exchanges at rest').toBeLessThanOrEqual(3 * 3)

    // A worker of r1 starts draining: r0 and r2 learn it from r1's next digest and stop routing to it.
    expect((await post(cs[1], '/drain', { worker_id: 'w1' })).status).toBe(200)
    await eventually(() => digests > 0 && [cs[0], cs[2]].every(c => c.core.stateOf(c.core.registry.get('w1')!) === 'draining'), 'the drain to reach the other controllers', 2_000, 10)
    for (let k = 0; k < 6; k++) {
      const res = await post(cs[0], '/route', { verb: 'invoke', capability: 'quiet' })
      expect(res.status).toBe(200)
      expect(res.body.worker_id).not.toBe('w1')
    }
  })
})
