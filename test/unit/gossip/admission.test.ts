import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError } from '../../../src/errors.ts'
import { Admission, parseAllowList } from '../../../src/gossip/admission.ts'
import { errorOf } from '../../helpers/controllers.ts'

let dir: string
let file: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'capmesh-admission-'))
  file = join(dir, 'peers.allow')
})
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

/** Peer ids of fresh Ed25519 keys (what controllers have). */
const peers: string[] = []
let secp: string
let rsaLike: string
beforeAll(async () => {
  for (let i = 0; i < 4; i++) peers.push(peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString())
  secp = peerIdFromPrivateKey(await generateKeyPair('secp256k1')).toString()
  // A CIDv1 / base32 peer id of an Ed25519 key is still an Ed25519 peer id: accepted.
  rsaLike = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toCID().toString()
})

describe('the allow list file', () => {
  it('reads "<controller-id> <peer-id>" lines, with blank lines, comments and trailing comments', () => {
    const text = `# the mesh\n\na ${peers[0]}\n  b\t${peers[1]}   # the second\r\nc.1_x-y ${peers[2]}\n${'d'.repeat(64)} ${rsaLike}\n`
    expect(parseAllowList(text, 'f')).toEqual([
      { controllerId: 'a', peerId: peers[0] },
      { controllerId: 'b', peerId: peers[1] },
      { controllerId: 'c.1_x-y', peerId: peers[2] },
      { controllerId: 'd'.repeat(64), peerId: rsaLike }
    ])
    // The same line twice is the same fact, not a conflict.
    expect(parseAllowList(`a ${peers[0]}\na ${peers[0]}\n`, 'f')).toHaveLength(1)
    expect(parseAllowList('', 'f')).toEqual([])
  })

  it.each([
    ['a line with one field', () => `a ${peers[0]}\nb\n`, 2, 'expected "<controller-id> <peer-id>", got 1 field'],
    ['a line with three fields', () => `a ${peers[0]} extra\n`, 1, 'got 3 fields'],
    ['a controller id with a space-free bad character', () => `# ok\na/b ${peers[0]}\n`, 2, 'is not a controller id'],
    ['a controller id starting with a symbol', () => `-a ${peers[0]}\n`, 1, 'is not a controller id'],
    ['a controller id longer than 64', () => `${'a'.repeat(65)} ${peers[0]}\n`, 1, 'is not a controller id'],
    ['a peer id that does not parse', () => 'a 12D3KooWnotapeerid\n', 1, 'is not a libp2p peer id'],
    ['a peer id of a secp256k1 key', () => `a ${secp}\n`, 1, 'secp256k1 key; controllers have Ed25519 keys'],
    ['one controller with two peer ids', () => `a ${peers[0]}\nb ${peers[1]}\n\na ${peers[2]}\n`, 4, 'controller "a" is already given peer 12D3KooW'],
    ['one peer id for two controllers', () => `a ${peers[0]}\nb ${peers[0]}\n`, 2, 'is already controller "a" on line 1']
  ])('refuses %s with a ConfigError naming file:line and why', (_what, text, line, why) => {
    const err = errorOf(() => parseAllowList(text(), '/etc/capmesh/peers.allow'))
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.name).toBe('ConfigError')
    expect(err.message).toContain(`/etc/capmesh/peers.allow:${line}: `)
    expect(err.message).toContain(why)
  })
})

describe('Admission', () => {
  it('admits the listed peers and maps controllers to peers both ways', () => {
    writeFileSync(file, `a ${peers[0]}\nb ${peers[1]}\n`)
    const adm = new Admission({ file })
    adm.load()
    expect(adm.admitted(peers[0])).toBe(true)
    expect(adm.admitted(peers[2])).toBe(false)
    expect(adm.peerOf('b')).toBe(peers[1])
    expect(adm.peerOf('z')).toBeUndefined()
    expect(adm.controllerOf(peers[0])).toBe('a')
    expect(adm.controllerOf(peers[3])).toBeUndefined()
    expect(adm.entries()).toEqual([{ controllerId: 'a', peerId: peers[0] }, { controllerId: 'b', peerId: peers[1] }])
  })

  it('a missing file admits nobody at first; a reload that finds it missing, or bad, keeps the list in force', () => {
    const adm = new Admission({ file })
    adm.load()
    expect(adm.missing).toBe(true)
    expect(adm.size).toBe(0)
    writeFileSync(file, `a ${peers[0]}\n`)
    const changes: unknown[] = []
    adm.on('change', c => changes.push(c))
    expect(adm.reload()).toEqual({ changed: true })
    expect(changes).toEqual([{ added: [peers[0]], removed: [] }])
    writeFileSync(file, `a ${peers[0]}\nb nonsense\n`)
    const err = errorOf(() => adm.reload())
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message).toContain(`${file}:2:`)
    expect(adm.admitted(peers[0])).toBe(true)
    rmSync(file)
    expect(errorOf(() => adm.reload())).toBeInstanceOf(ConfigError)
    expect(adm.admitted(peers[0])).toBe(true)
    // A bad file at the first load is an error too (the controller does not start).
    writeFileSync(file, 'a b c\n')
    expect(errorOf(() => new Admission({ file }).load())).toBeInstanceOf(ConfigError)
  })

  it('recheck() reads the file again for a peer it does not know, only if the file changed; a change names who came and went', () => {
    writeFileSync(file, `a ${peers[0]}\nb ${peers[1]}\n`)
    const adm = new Admission({ file })
    adm.load()
    const changes: Array<{ added: string[], removed: string[] }> = []
    adm.on('change', c => changes.push(c))
    expect(adm.recheck(peers[2])).toBe(false)
    expect(changes).toEqual([])
    writeFileSync(file, `a ${peers[0]}\nc ${peers[2]}\n`)
    expect(adm.admitted(peers[2])).toBe(false)
    expect(adm.recheck(peers[2])).toBe(true)
    expect(changes).toEqual([{ added: [peers[2]], removed: [peers[1]] }])
    expect(adm.reloadIfChanged()).toEqual({ changed: false })
    // A bad version is kept out, quietly for recheck (the periodic reload logs it), and read again once it changes.
    writeFileSync(file, `a ${peers[0]}\nd ${peers[3]} x\n`)
    expect(adm.recheck(peers[3])).toBe(false)
    expect(adm.admitted(peers[2])).toBe(true)
    writeFileSync(file, `a ${peers[0]}\nd ${peers[3]}\n`)
    expect(adm.recheck(peers[3])).toBe(true)
  })

  it('admitSelf adds the line, replaces a stale one of the same controller or peer, and keeps comments and the others', async () => {
    const adm = new Admission({ file })
    adm.load()
    expect(await adm.admitSelf('a', peers[0])).toEqual({ written: true })
    expect(adm.peerOf('a')).toBe(peers[0])
    expect(readFileSync(file, 'utf8')).toMatch(/^# capmesh peer allow list/)
    expect(await adm.admitSelf('a', peers[0])).toEqual({ written: false })
    writeFileSync(file, `${readFileSync(file, 'utf8')}# b is ours\nb ${peers[1]}\n`)
    // a's data dir was recreated: a new peer id replaces its line.
    await adm.admitSelf('a', peers[2])
    // b's data dir now runs as controller "b2": its peer id moves to the new name.
    await adm.admitSelf('b2', peers[1])
    const lines = readFileSync(file, 'utf8').split('\n').filter(l => !l.startsWith('#') && l !== '')
    expect(lines.sort()).toEqual([`a ${peers[2]}`, `b2 ${peers[1]}`])
    expect(readFileSync(file, 'utf8')).toContain('# b is ours')
    expect(adm.peerOf('b')).toBeUndefined()
    expect(adm.controllerOf(peers[1])).toBe('b2')
  })

  it('admitSelf refuses to touch a bad file', async () => {
    writeFileSync(file, 'a not-a-peer\n')
    await expect(new Admission({ file }).admitSelf('b', peers[1])).rejects.toBeInstanceOf(ConfigError)
    expect(readFileSync(file, 'utf8')).toBe('a not-a-peer\n')
  })

  it('eight processes admitting themselves at once all end up in the file', async () => {
    const script = (id: string, peer: string): string => `import { Admission } from ${JSON.stringify(resolve('src/gossip/admission.ts'))}
await new Admission({ file: ${JSON.stringify(file)} }).admitSelf(${JSON.stringify(id)}, ${JSON.stringify(peer)})`
    const ids = await Promise.all(Array.from({ length: 8 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    await Promise.all(ids.map(async (peer, i) => await new Promise<void>((resolvePromise, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script(`c${i}`, peer)], { stdio: ['ignore', 'ignore', 'pipe'] })
      let err = ''
      child.stderr.on('data', (d: Buffer) => { err += d.toString() })
      child.on('exit', code => { code === 0 ? resolvePromise() : reject(new Error(`exit ${code}: ${err}`)) })
    })))
    const adm = new Admission({ file })
    adm.load()
    expect(adm.entries().map(e => e.controllerId).sort()).toEqual(ids.map((_, i) => `c${i}`).sort())
    for (const [i, p] of ids.entries()) expect(adm.peerOf(`c${i}`)).toBe(p)
  })

  it('remembers refused peers, most recent first, and says to log each at most once a minute', () => {
    const adm = new Admission({ file })
    adm.load()
    const t = 1_000_000
    expect(adm.refuse(peers[0], '/ip4/127.0.0.1/tcp/5', 'inbound', t)).toBe(true)
    expect(adm.refuse(peers[0], null, 'dial', t + 1000)).toBe(false)
    expect(adm.refuse(peers[1], null, 'introduced', t + 2000)).toBe(true)
    expect(adm.refuse(peers[0], null, 'inbound', t + 61_000)).toBe(true)
    expect(adm.refused()).toEqual([
      { peerId: peers[0], count: 3, lastAt: t + 61_000, address: '/ip4/127.0.0.1/tcp/5', reason: 'inbound' },
      { peerId: peers[1], count: 1, lastAt: t + 2000, address: null, reason: 'introduced' }
    ])
    // A refused peer that is then admitted is no longer listed as refused.
    writeFileSync(file, `a ${peers[1]}\n`)
    adm.reload()
    expect(adm.refused().map(r => r.peerId)).toEqual([peers[0]])
  })
})
