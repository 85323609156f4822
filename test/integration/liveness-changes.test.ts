/**
 * Word changes between real controllers: once a controller's word is large,
 * what changes in it (a worker draining, one back to healthy) travels as a
 * changes message on its own topic, and the peer routes by it; as soon as a
 * peer that takes only full digests (a controller from before changes, here
 * a libp2p node subscribed to the digest topic alone) is connected, the
 * controller sends its whole word instead.
 */
import { multiaddr } from '@multiformats/multiaddr'
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import { readMeshKey } from '../../src/gossip/index.ts'
import { LIVENESS_TOPIC, type Digest, type WordChanges } from '../../src/membership/index.ts'
import { capability, connected, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import { rogueNode, type RogueNode } from '../helpers/rogue.ts'

let bed: TestBed
let a: Controller
let b: Controller
let old: RogueNode | null = null
/** What b received from a, in order. */
const received: Array<{ kind: 'digest', d: Digest } | { kind: 'changes', c: WordChanges }> = []

// Workers never go silent here (long timeouts): their states change by drains and heartbeats only. No
// keepalive digest within a test either (one would come between the changes the first test counts).
const calm = { heartbeatIntervalMs: 10_000, unhealthyAfterMs: 600_000, staleAfterMs: 1_200_000, digestIntervalMs: 100, digestKeepaliveMs: 300_000 }
const N = 300
const LISTED = 100

beforeAll(async () => {
  bed = await testBed('liveness-changes')
  a = await bed.start({ id: 'a', ...calm })
  b = await bed.start({ id: 'b', ...calm, bootstrap: [a.p2p.multiaddrs[0]] })
  b.core.membership.on('digest', (id, d) => { if (id === 'a') received.push({ kind: 'digest', d }) })
  b.core.membership.on('changes', (id, c) => { if (id === 'a') received.push({ kind: 'changes', c }) })
  await connected(a, b, true, 'a and b connected')
  const workers = Array.from({ length: N }, (_, i) => ({ worker_id: `w${i}`, worker_url: `https://127.0.0.1:7000/w${i}`, capabilities: [capability('echo')] }))
  expect((await post(a, '/register/batch', { workers })).status).toBe(200)
  // A large word: a third of a's workers draining.
  for (let i = 0; i < LISTED; i += 20) {
    await Promise.all(Array.from({ length: 20 }, async (_, k) => { expect((await post(a, '/drain', { worker_id: `w${i + k}` })).status).toBe(200) }))
  }
  await eventually(() => stateAtB('w0') === 'draining' && stateAtB(`w${LISTED - 1}`) === 'draining', 'b to see a\'s drained workers', 10_000)
}, 60_000)

afterAll(async () => {
  await old?.stop()
  await bed.cleanup()
})

async function post (c: Controller, path: string, body: unknown): Promise<{ status: number, body: any }> {
  return await bed.client.json('POST', c.url + path, body)
}

function stateAtB (id: string): string | undefined {
  const rec = b.core.registry.get(id)
  return rec == null ? undefined : b.core.stateOf(rec)
}

describe('word changes between controllers', () => {
  it('a worker that drains, and one back to healthy, reach the peer as changes of those workers alone', async () => {
    const from = received.length
    expect((await post(a, '/drain', { worker_id: 'w200' })).status).toBe(200)
    await eventually(() => stateAtB('w200') === 'draining', 'b to see w200 draining')
    expect((await post(a, '/heartbeat', { worker_id: 'w0', status: 'ready' })).status).toBe(200)
    await eventually(() => stateAtB('w0') === 'healthy', 'b to see w0 healthy again')
    const news = received.slice(from)
    expect(news.map(m => m.kind)).toEqual(['changes', 'changes'])
    expect(news.map(m => m.kind === 'changes' ? m.c.states : null)).toEqual([[['w200', 'd']], [['w0', 'h']]])
    // The rest of the word is as a holds it.
    for (let i = 1; i < LISTED; i++) expect(stateAtB(`w${i}`)).toBe('draining')
    expect(stateAtB('w150')).toBe('healthy')
  })

  it('with a peer that takes only full digests connected, the whole word goes out instead', async () => {
    old = await rogueNode(readMeshKey(join(bed.tlsDir, 'mesh.key')))
    appendFileSync(join(bed.tlsDir, 'peers.allow'), `old-1 ${old.peerId.toString()}\n`)
    await old.dial(multiaddr(a.p2p.multiaddrs[0]))
    old.services.pubsub.subscribe(LIVENESS_TOPIC)
    const oldId = old.peerId.toString()
    await eventually(() => a.p2p.subscribers(LIVENESS_TOPIC) === 2 && a.p2p.connectedPeers().includes(oldId), 'a to see the old peer subscribed to digests')
    const from = received.length
    expect((await post(a, '/drain', { worker_id: 'w201' })).status).toBe(200)
    await eventually(() => stateAtB('w201') === 'draining', 'b to see w201 draining')
    const news = received.slice(from)
    expect(news.length).toBeGreaterThan(0)
    expect(news.every(m => m.kind === 'digest')).toBe(true)
    const last = news.at(-1) as { d: Digest }
    expect(last.d.exceptions).toContainEqual(['w201', 'd'])
    expect(last.d.exceptions).toHaveLength(LISTED + 1)
  })
})
