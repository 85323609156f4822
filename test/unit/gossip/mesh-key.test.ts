import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError } from '../../../src/errors.ts'
import {
  ensureMeshKey, formatMeshKeys, installMeshKey, meshKeyId, parseMeshKeys, readMeshKey, readMeshKeys, removeMeshKey, useMeshKey
} from '../../../src/gossip/mesh-key.ts'
import { errorOf } from '../../helpers/controllers.ts'

let dir: string
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'capmesh-mesh-key-')) })
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

const KEY = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/

describe('mesh key', () => {
  it('is created once, private, in the swarm key format, and reused after', () => {
    const file = join(dir, 'tls', 'mesh.key')
    const first = ensureMeshKey(file)
    expect(first.created).toBe(true)
    expect(readFileSync(file, 'utf8')).toMatch(KEY)
    expect(first.key).toHaveLength(32)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    const again = ensureMeshKey(file)
    expect(again.created).toBe(false)
    expect(again.key).toEqual(first.key)
    // Two meshes never get the same key.
    expect(ensureMeshKey(join(dir, 'other.key')).key).not.toEqual(first.key)
  })

  it('reads a key written elsewhere (go-ipfs style: CRLF, upper-case hex, trailing newline) as the same key', () => {
    const hex = 'AB'.repeat(32)
    writeFileSync(join(dir, 'crlf.key'), `/key/swarm/psk/1.0.0/\r\n/base16/\r\n${hex}\n`)
    writeFileSync(join(dir, 'lf.key'), `/key/swarm/psk/1.0.0/\n/base16/\n${hex.toLowerCase()}`)
    expect(readMeshKey(join(dir, 'crlf.key'))).toEqual(readMeshKey(join(dir, 'lf.key')))
  })

  it.each([
    ['an empty file', ''],
    ['a key of the wrong length', '/key/swarm/psk/1.0.0/\n/base16/\n' + 'ab'.repeat(31)],
    ['another encoding', '/key/swarm/psk/1.0.0/\n/base64/\n' + 'ab'.repeat(32)],
    ['non-hex digits', '/key/swarm/psk/1.0.0/\n/base16/\n' + 'zz'.repeat(32)],
    ['a PEM file', '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n']
  ])('refuses %s with a ConfigError naming the file and the expected format, and does not replace it', (_name, text) => {
    const file = join(dir, 'bad.key')
    writeFileSync(file, text)
    for (const fn of [() => readMeshKey(file), () => ensureMeshKey(file)]) {
      let err: unknown
      try { fn() } catch (e) { err = e }
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toContain(file)
      expect((err as Error).message).toContain('/key/swarm/psk/1.0.0/')
    }
    expect(readFileSync(file, 'utf8')).toBe(text)
  })

  it('has a short public id: the same for the same key, another for another key, and not the key', () => {
    const a = ensureMeshKey(join(dir, 'a.key')).key
    const b = ensureMeshKey(join(dir, 'b.key')).key
    expect(meshKeyId(a)).toMatch(/^[0-9a-f]{16}$/)
    expect(meshKeyId(readMeshKey(join(dir, 'a.key')))).toBe(meshKeyId(a))
    expect(meshKeyId(b)).not.toBe(meshKeyId(a))
    expect(Buffer.from(a).toString('hex')).not.toContain(meshKeyId(a))
  })

  it('a missing file is a ConfigError for readMeshKey', () => {
    expect(() => readMeshKey(join(dir, 'none.key'))).toThrow(ConfigError)
  })

  it('four processes creating it at once end up with one key', async () => {
    const file = join(dir, 'race', 'mesh.key')
    const script = `import { ensureMeshKey } from ${JSON.stringify(resolve('src/gossip/mesh-key.ts'))}
const { key, created } = ensureMeshKey(${JSON.stringify(file)})
process.stdout.write(JSON.stringify({ key: Buffer.from(key).toString('hex'), created }))`
    const run = async (): Promise<{ key: string, created: boolean }> => await new Promise((resolvePromise, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => { out += d.toString() })
      child.stderr.on('data', (d: Buffer) => { err += d.toString() })
      child.on('error', reject)
      child.on('exit', code => { code === 0 ? resolvePromise(JSON.parse(out)) : reject(new Error(`exit ${code}: ${err}`)) })
    })
    const results = await Promise.all([run(), run(), run(), run()])
    expect(new Set(results.map(r => r.key)).size).toBe(1)
    expect(results.filter(r => r.created)).toHaveLength(1)
    expect(Buffer.from(readMeshKey(file)).toString('hex')).toBe(results[0].key)
  })
})

describe('mesh key ring', () => {
  const block = (hex: string): string => `/key/swarm/psk/1.0.0/\n/base16/\n${hex}\n`
  const a = 'aa'.repeat(32)
  const b = 'bb'.repeat(32)

  it('reads several keys, the first the primary, blank lines between them allowed; a one-key file is a one-key ring', () => {
    writeFileSync(join(dir, 'ring.key'), `${block(a)}\n\n${block(b.toUpperCase())}`)
    const keys = readMeshKeys(join(dir, 'ring.key'))
    expect(keys.map(k => Buffer.from(k).toString('hex'))).toEqual([a, b])
    expect(readMeshKey(join(dir, 'ring.key'))).toEqual(keys[0])
    expect(parseMeshKeys(formatMeshKeys(keys), 'x')).toEqual(keys)
    writeFileSync(join(dir, 'one.key'), block(a))
    expect(readMeshKeys(join(dir, 'one.key'))).toHaveLength(1)
  })

  it.each([
    ['the same key twice', () => block(a) + block(a), 'key 2 is the same as key 1'],
    ['a broken second block', () => block(a) + '/key/swarm/psk/1.0.0/\n/base16/\n' + 'ab'.repeat(31) + '\n', ':4 is not a libp2p swarm key'],
    ['text after the keys', () => block(a) + 'hello\n', ':4 is not a libp2p swarm key'],
    ['more keys than a ring holds', () => Array.from({ length: 9 }, (_, i) => block(i.toString(16).padStart(2, '0').repeat(32))).join(''), 'at most 8']
  ])('refuses %s with a ConfigError naming the file', (_what, text, why) => {
    const file = join(dir, 'bad-ring.key')
    writeFileSync(file, text())
    const err = errorOf(() => readMeshKeys(file))
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message).toContain(file)
    expect(err.message).toContain(why)
  })

  it('install adds a key last (not primary), use makes it primary, remove drops a key but never the primary; each writes the file whole, mode 0600', async () => {
    const file = join(dir, 'mesh.key')
    const { key: first } = ensureMeshKey(file)
    const idA = meshKeyId(first)
    const installed = await installMeshKey(file)
    expect(installed.changed).toBe(true)
    expect(readMeshKeys(file).map(meshKeyId)).toEqual([idA, installed.id])
    expect(statSync(file).mode & 0o777).toBe(0o600)
    // Installing a key the ring holds changes nothing.
    expect((await installMeshKey(file, readMeshKeys(file)[1])).changed).toBe(false)
    await expect(removeMeshKey(file, idA)).rejects.toThrow(/primary key/)
    // A unique prefix of at least 4 hex digits names a key.
    const used = await useMeshKey(file, installed.id.slice(0, 6))
    expect(used).toMatchObject({ id: installed.id, changed: true })
    expect(readMeshKeys(file).map(meshKeyId)).toEqual([installed.id, idA])
    expect((await useMeshKey(file, installed.id)).changed).toBe(false)
    const removed = await removeMeshKey(file, idA)
    expect(removed.keys.map(meshKeyId)).toEqual([installed.id])
    expect(readMeshKeys(file).map(meshKeyId)).toEqual([installed.id])
    await expect(removeMeshKey(file, idA)).rejects.toThrow(/holds no key/)
    await expect(useMeshKey(file, 'xyz')).rejects.toBeInstanceOf(ConfigError)
    await expect(useMeshKey(file, '12')).rejects.toThrow(/4 to 16 hex digits/)
  })
})
