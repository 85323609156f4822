/**
 * The reconnect loop (src/gossip/dialer.ts) with a stand-in libp2p node that
 * records what it is asked to dial and answers with the peer "found there":
 * DNS names in bootstrap addresses are looked up on every dial (through an
 * injected resolver), a connected bootstrap name is looked up again and
 * dialled when it resolves elsewhere, a name that does not resolve is said
 * once, and a controller's addresses follow its digests.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { resolveAddr, type Resolve } from '../../../src/gossip/addresses.ts'
import { Dialer } from '../../../src/gossip/dialer.ts'
import { PeerTable } from '../../../src/gossip/peers.ts'
import { multiaddr } from '@multiformats/multiaddr'

const newPeerId = async (): Promise<string> => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()

/** A node whose dials succeed for the IP:port pairs in `listening` (peer id there), and fail elsewhere. */
function standIn (listening: Map<string, string>): { node: Libp2p, dials: string[][] } {
  const dials: string[][] = []
  const node = {
    async dial (target: Multiaddr | Multiaddr[]) {
      const addrs = (Array.isArray(target) ? target : [target]).map(String)
      dials.push(addrs)
      for (const a of addrs) {
        const at = listening.get(a.split('/p2p/')[0])
        if (at != null) return { remotePeer: { toString: () => at } }
      }
      throw Object.assign(new Error(`connection refused ${addrs.join(' ')}`), { name: 'DialError' })
    }
  } as unknown as Libp2p
  return { node, dials }
}

function hostsMap (entries: Record<string, string>): Resolve & { map: Map<string, string>, lookups: number } {
  const map = new Map(Object.entries(entries))
  const resolve: Resolve = async name => {
    r.lookups++
    const ip = map.get(name)
    if (ip == null) throw new Error(`getaddrinfo ENOTFOUND ${name}`)
    return [ip]
  }
  const r = Object.assign(resolve, { map, lookups: 0 })
  return r
}

function logRecords (): { log: pino.Logger, lines: string[] } {
  const lines: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _e, done) { lines.push(...chunk.toString().split('\n').filter(l => l.length > 0)); done() } })
  return { log: pino({ level: 'info' }, sink), lines }
}

const settle = async (): Promise<void> => { for (let i = 0; i < 20; i++) await new Promise(resolve => setImmediate(resolve)) }

async function setup (init: { resolve: Resolve, listening: Map<string, string>, recheckIntervalMs?: number }) {
  const peers = new PeerTable()
  const self = await newPeerId()
  const { node, dials } = standIn(init.listening)
  const { log, lines } = logRecords()
  const dialer = new Dialer({ peers, node: () => node, peerId: () => self, blocked: () => false, resolve: init.resolve, recheckIntervalMs: init.recheckIntervalMs, log })
  return { peers, dialer, dials, lines }
}

describe('resolveAddr', () => {
  it('turns a /dns4, /dns6 or /dns address into one IP address per answer, keeping port and peer id', async () => {
    const id = await newPeerId()
    const resolve: Resolve = async (_name, family) => family === 4 ? ['10.1.2.3'] : family === 6 ? ['fd00::1'] : ['fd00::1', '10.1.2.3']
    expect((await resolveAddr(multiaddr(`/dns4/c1/tcp/9100/p2p/${id}`), resolve)).map(String)).toEqual([`/ip4/10.1.2.3/tcp/9100/p2p/${id}`])
    expect((await resolveAddr(multiaddr('/dns6/c1/tcp/9100'), resolve)).map(String)).toEqual(['/ip6/fd00::1/tcp/9100'])
    expect((await resolveAddr(multiaddr('/dns/c1/tcp/9100'), resolve)).map(String)).toEqual(['/ip6/fd00::1/tcp/9100', '/ip4/10.1.2.3/tcp/9100'])
    expect((await resolveAddr(multiaddr('/ip4/127.0.0.1/tcp/1'), resolve)).map(String)).toEqual(['/ip4/127.0.0.1/tcp/1'])
  })

  it('drops answers of the wrong family and fails when none is left', async () => {
    await expect(resolveAddr(multiaddr('/dns4/c1/tcp/9100'), async () => ['fd00::1'])).rejects.toThrow(/no IPv4 address/)
  })
})

describe('Dialer', () => {
  it('looks a bootstrap name up on every dial, so a peer back at a new address is dialled there', async () => {
    const resolve = hostsMap({ 'c2.test': '127.0.0.2' })
    const listening = new Map<string, string>()
    const { dialer, dials, peers } = await setup({ resolve, listening })
    dialer.setBootstrap(['/dns4/c2.test/tcp/9100'])
    dialer.reconnect(1)
    await settle()
    expect(dials).toEqual([['/ip4/127.0.0.2/tcp/9100']])
    // Nobody there yet; meanwhile the name moves, and a controller listens at the new address.
    const p2 = await newPeerId()
    resolve.map.set('c2.test', '127.0.0.3')
    listening.set('/ip4/127.0.0.3/tcp/9100', p2)
    dialer.clearBackoff('/dns4/c2.test/tcp/9100')
    dialer.reconnect(1)
    await settle()
    expect(dials.at(-1)).toEqual(['/ip4/127.0.0.3/tcp/9100'])
    expect(peers.get(p2)).toBeDefined()
    expect(resolve.lookups).toBe(2)
  })

  it('looks a connected bootstrap name up again now and then, and dials it when it resolves elsewhere', async () => {
    const resolve = hostsMap({ 'c2.test': '127.0.0.2' })
    const [old, moved] = [await newPeerId(), await newPeerId()]
    const listening = new Map([['/ip4/127.0.0.2/tcp/9100', old], ['/ip4/127.0.0.3/tcp/9100', moved]])
    const { dialer, dials, peers, lines } = await setup({ resolve, listening, recheckIntervalMs: 1 })
    dialer.setBootstrap(['/dns4/c2.test/tcp/9100'])
    dialer.reconnect(1)
    await settle()
    peers.connected.add(old)
    // Connected, the name unchanged: looked up again, not dialled.
    await new Promise(resolve => setTimeout(resolve, 5))
    dialer.reconnect(1)
    await settle()
    expect(dials).toHaveLength(1)
    expect(resolve.lookups).toBe(2)
    // The name now leads to another controller while the old one lives on.
    resolve.map.set('c2.test', '127.0.0.3')
    await new Promise(resolve => setTimeout(resolve, 5))
    dialer.reconnect(1)
    await settle()
    expect(lines.some(l => l.includes('resolves elsewhere now'))).toBe(true)
    dialer.reconnect(1)
    await settle()
    expect(dials.at(-1)).toEqual(['/ip4/127.0.0.3/tcp/9100'])
    expect(peers.get(moved)).toBeDefined()
  })

  it('says once that a name does not resolve, and keeps trying', async () => {
    const resolve = hostsMap({})
    const { dialer, dials, lines } = await setup({ resolve, listening: new Map() })
    dialer.setBootstrap(['/dns4/nowhere.test/tcp/9100'])
    for (let i = 0; i < 3; i++) {
      dialer.clearBackoff('/dns4/nowhere.test/tcp/9100')
      dialer.reconnect(1)
      await settle()
    }
    expect(resolve.lookups).toBe(3)
    expect(dials).toHaveLength(0)
    expect(lines.filter(l => l.includes('cannot resolve nowhere.test'))).toHaveLength(1)
  })

  it('follows a controller\'s addresses as its digests say them (a restart elsewhere)', async () => {
    const { dialer, peers } = await setup({ resolve: hostsMap({}), listening: new Map() })
    const p = await newPeerId()
    dialer.learnAddrs(p, [`/ip4/10.0.0.5/tcp/9100/p2p/${p}`])
    expect(peers.get(p)?.addrs.map(String)).toEqual([`/ip4/10.0.0.5/tcp/9100/p2p/${p}`])
    dialer.learnAddrs(p, [`/dns/c5.test/tcp/9100/p2p/${p}`])
    expect(peers.get(p)?.addrs.map(String)).toEqual([`/dns/c5.test/tcp/9100/p2p/${p}`])
    // Addresses of another peer are no claim about this one.
    dialer.learnAddrs(p, [`/ip4/10.0.0.6/tcp/9100/p2p/${await newPeerId()}`])
    expect(peers.get(p)?.addrs.map(String)).toEqual([`/dns/c5.test/tcp/9100/p2p/${p}`])
  })
})
