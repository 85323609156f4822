/**
 * Nothing assumes loopback: controllers bootstrap by DNS name (looked up on
 * every dial, so a controller that comes back at a new address under the
 * same name is found again), a controller bound to 0.0.0.0 announces its
 * `--advertise` names (identify, digests, /health, /mesh, its certificate)
 * and never the wildcard, and warns when it has none to announce.
 *
 * Real controllers on loopback. Names other than `localhost` resolve
 * through a map given to the controllers that dial them (`Resolve`), the
 * way /etc/hosts or a cluster DNS would; `localhost` goes through the
 * system's resolver. Nothing here dials an address outside 127.0.0.0/8.
 */
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Controller } from '../../src/controller/index.ts'
import type { Resolve } from '../../src/gossip/index.ts'
import { capmesh } from '../helpers/cli.ts'
import { capability, eventually, freePort, freePorts, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('real-hosts') })
afterEach(async () => { await bed.cleanup() })

/** A resolver over a map that a test may change: a name's DNS record, moved. */
function hostsMap (entries: Record<string, string>): Resolve & { set: (name: string, ip: string) => void, lookups: string[] } {
  const map = new Map(Object.entries(entries))
  const lookups: string[] = []
  const resolve: Resolve = async name => {
    lookups.push(name)
    const ip = map.get(name)
    if (ip == null) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' })
    return [ip]
  }
  return Object.assign(resolve, { set: (name: string, ip: string) => { map.set(name, ip) }, lookups })
}

const connected = (a: Controller, b: Controller): boolean => a.p2p.connectedPeers().includes(b.p2p.peerId)

function workerBody (id: string): Record<string, unknown> {
  return { worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability(`cap-${id}`)] }
}

/** Log records of one controller, for the warnings it gives. */
function recorder (): { logger: pino.Logger, records: Array<{ level: number, msg: string }> } {
  const records: Array<{ level: number, msg: string }> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.length > 0) records.push(JSON.parse(line))
      done()
    }
  })
  return { logger: pino({ level: 'info' }, sink), records }
}

// Generous: several controllers start per test, and a loaded 2-core machine makes each start slow.
describe('bootstrap by DNS name', { timeout: 60_000 }, () => {
  it('a controller bootstrapping by /dns4/localhost/tcp/PORT joins the mesh and converges', async () => {
    const a = await bed.start({ id: 'a', p2pPort: await freePort() })
    const b = await bed.start({ id: 'b', bootstrap: [`/dns4/localhost/tcp/${a.config.p2pPort}`] })
    await eventually(() => connected(a, b) && connected(b, a), 'b connected to a through the name localhost', 15_000)
    expect((await bed.client.json('POST', `${a.url}/register`, workerBody('w1'))).status).toBe(200)
    await eventually(async () => (await bed.client.json('POST', `${b.url}/route`, { verb: 'invoke', capability: 'cap-w1' })).body.worker_id === 'w1',
      'b routes to the worker registered at a', 20_000)
  })

  it('a bootstrap name is looked up on every dial: a controller back at a new address under the same name is found', async () => {
    const port = await freePort()
    const resolve = hostsMap({ 'peer.test': '127.0.0.2' })
    const old = await bed.start({ id: 'old', host: '127.0.0.2', p2pPort: port })
    const x = await bed.start({ id: 'x', bootstrap: [`/dns4/peer.test/tcp/${port}`] }, { resolve })
    await eventually(() => connected(x, old), 'x connected to the controller at 127.0.0.2', 15_000)
    await old.stop()
    // The name now leads to another host (another controller, another peer id, the same port).
    resolve.set('peer.test', '127.0.0.3')
    const moved = await bed.start({ id: 'moved', host: '127.0.0.3', p2pPort: port })
    await eventually(() => connected(x, moved), 'x connected to the controller the name now leads to', 15_000)
    expect(resolve.lookups.filter(n => n === 'peer.test').length).toBeGreaterThan(1)
  })

  it('one bootstrap list for every controller (as in a StatefulSet): each finds itself in it and stops dialling itself', async () => {
    const pa = await freePorts(2)
    const resolveA = hostsMap({ 'a.test': '127.0.0.1', 'b.test': '127.0.0.1' })
    const resolveB = hostsMap({ 'a.test': '127.0.0.1', 'b.test': '127.0.0.1' })
    const list = (pb: number): string[] => [`/dns4/a.test/tcp/${pa}`, `/dns4/b.test/tcp/${pb}`]
    // a starts alone: b.test has nobody yet, and a.test is a itself.
    const a = await bed.start({ id: 'a', p2pPort: pa, bootstrap: list(pa + 1) }, { resolve: resolveA })
    const b = await bed.start({ id: 'b', p2pPort: pa + 1, bootstrap: list(pa + 1) }, { resolve: resolveB })
    await eventually(() => connected(a, b) && connected(b, a), 'a and b connected', 15_000)
    const before = resolveA.lookups.filter(n => n === 'a.test').length
    await new Promise(resolve => setTimeout(resolve, 1500))
    // Found itself at a.test once: not dialled again (a lookup every 30 s at most).
    expect(resolveA.lookups.filter(n => n === 'a.test').length).toBe(before)
    expect(before).toBe(1)
  })

  it('a name that does not resolve is said once, and dialled again until it does', async () => {
    const resolve = hostsMap({})
    const { logger, records } = recorder()
    const a = await bed.start({ id: 'a', p2pPort: await freePort() })
    const x = await bed.start({ id: 'x', bootstrap: [`/dns4/late.test/tcp/${a.config.p2pPort}`] }, { resolve, logger })
    await eventually(() => resolve.lookups.length >= 3, 'three lookups of late.test')
    expect(records.filter(r => r.msg.includes('cannot resolve late.test'))).toHaveLength(1)
    resolve.set('late.test', '127.0.0.1')
    await eventually(() => connected(x, a), 'x connected once late.test resolves', 15_000)
  })
})

describe('--advertise', { timeout: 60_000 }, () => {
  it('bound to 0.0.0.0, a controller announces its advertised name (identify, digests, /health, /mesh, certificate) and peers reach it by that name', async () => {
    const port = await freePort()
    const a = await bed.start({ id: 'a', host: '0.0.0.0', p2pPort: port, advertise: ['ctl-a.test'] })
    const peerId = a.p2p.peerId
    expect(a.p2p.multiaddrs).toEqual([`/dns/ctl-a.test/tcp/${port}/p2p/${peerId}`])

    const url = `https://127.0.0.1:${a.port}`
    const health = (await bed.client.json('GET', `${url}/health`)).body
    expect(health.mesh.advertised_addrs).toEqual([`/dns/ctl-a.test/tcp/${port}/p2p/${peerId}`])
    expect(health.mesh.listen_addrs).toEqual([`/ip4/0.0.0.0/tcp/${port}`])
    const mesh = (await bed.client.json('GET', `${url}/mesh`)).body
    expect(mesh.advertised_addrs).toEqual(health.mesh.advertised_addrs)
    expect(JSON.stringify([health, mesh])).not.toContain('0.0.0.0/tcp/' + String(port) + '/p2p')

    const cert = new X509Certificate(readFileSync(join(bed.tlsDir, 'server.pem')))
    expect(cert.checkHost('ctl-a.test')).toBe('ctl-a.test')

    // b knows a only by name; c knows only b, and learns of a from b's digests: by the name a
    // advertises, which c looks up itself.
    const resolve = hostsMap({ 'ctl-a.test': '127.0.0.1' })
    const b = await bed.start({ id: 'b', bootstrap: [`/dns4/ctl-a.test/tcp/${port}`] }, { resolve })
    await eventually(() => connected(b, a), 'b connected to a by its name', 15_000)
    const c = await bed.start({ id: 'c', bootstrap: [b.p2p.multiaddrs[0]] }, { resolve })
    await eventually(() => connected(c, a) && connected(c, b), 'c connected to a, introduced by b', 15_000)
    expect(resolve.lookups).toContain('ctl-a.test')
  })

  it('bound to 0.0.0.0 without --advertise, a controller announces no wildcard and warns that peers will see its interface addresses', async () => {
    const { logger, records } = recorder()
    const a = await bed.start({ id: 'a', host: '0.0.0.0', p2pPort: await freePort() }, { logger })
    expect(a.p2p.multiaddrs.length).toBeGreaterThan(0)
    for (const addr of a.p2p.multiaddrs) expect(addr).not.toMatch(/^\/ip[46]\/(0\.0\.0\.0|::)\//)
    expect(records.some(r => r.level === 40 && r.msg.includes('without --advertise'))).toBe(true)
  })

  it('the same with a port picked at start (0): no wildcard announced', async () => {
    const a = await bed.start({ id: 'a', host: '0.0.0.0' })
    expect(a.p2p.multiaddrs.length).toBeGreaterThan(0)
    for (const addr of a.p2p.multiaddrs) expect(addr).not.toMatch(/^\/ip[46]\/(0\.0\.0\.0|::)\//)
    expect(a.p2p.listenAddrs[0]).toMatch(/^\/ip4\/0\.0\.0\.0\/tcp\/[1-9]\d*$/)
  })
})

describe('the deployed layout: peer keys made ahead, an allow list nobody writes', { timeout: 60_000 }, () => {
  it('capmesh peer-key creates a controller\'s key once and writes its line; controllers started on those data dirs with certificate files admit each other and no one else', async () => {
    const allow = join(bed.root, 'deployed', 'peers.allow')
    const dataDir = (id: string): string => join(bed.root, 'deployed', id)
    const lines: string[] = []
    for (const id of ['d1', 'd2']) {
      const made = await capmesh(['peer-key', '--id', id, '--data-dir', dataDir(id), '--allow', allow])
      expect(made.code, made.stderr).toBe(0)
      lines.push(made.stdout.trim())
      // Again: the same key, the same line, the file unchanged.
      const before = readFileSync(allow, 'utf8')
      const again = await capmesh(['peer-key', '--id', id, '--data-dir', dataDir(id), '--allow', allow])
      expect(again.stdout.trim()).toBe(made.stdout.trim())
      expect(readFileSync(allow, 'utf8')).toBe(before)
    }
    expect(readFileSync(allow, 'utf8').split('\n').filter(l => l.length > 0 && !l.startsWith('#'))).toEqual(lines)
    const bad = await capmesh(['peer-key', '--id', 'not an id', '--data-dir', dataDir('x')])
    expect(bad.code).toBe(2)
    expect(existsSync(dataDir('x'))).toBe(false)

    // Certificate files (as on a real host: the TLS dir's CA key is not used, the list is never written).
    const files = { tlsCert: join(bed.tlsDir, 'server.pem'), tlsKey: join(bed.tlsDir, 'server-key.pem'), tlsCa: join(bed.tlsDir, 'ca.pem'), meshKey: join(bed.tlsDir, 'mesh.key'), peerAllow: allow }
    const d1 = await bed.start({ id: 'd1', dataDir: dataDir('d1'), p2pPort: await freePort(), ...files })
    const d2 = await bed.start({ id: 'd2', dataDir: dataDir('d2'), bootstrap: [d1.p2p.multiaddrs[0]], ...files })
    expect(lines).toEqual([`d1 ${d1.p2p.peerId}`, `d2 ${d2.p2p.peerId}`])
    await eventually(() => connected(d1, d2) && connected(d2, d1), 'd1 and d2 admit each other', 20_000)
    // A controller whose key is not in the list: refused by both, though it holds the mesh key.
    const stranger = await bed.start({ id: 'd3', bootstrap: [d1.p2p.multiaddrs[0]], ...files })
    await eventually(async () => (await bed.client.json('GET', `${d1.url}/mesh`)).body.refused.some((r: { peer_id: string }) => r.peer_id === stranger.p2p.peerId),
      'd1 refused the controller its allow list does not name', 20_000)
    expect(connected(d1, stranger)).toBe(false)
    expect(readFileSync(allow, 'utf8').split('\n').filter(l => l.length > 0 && !l.startsWith('#'))).toEqual(lines)
  })
})
