/**
 * Moving a registry between controllers over HTTPS: the JSON export (streamed)
 * and the binary one (the raw Yjs update), import of either, the limits and
 * refusals of the binary form, and an export whose client goes away.
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'
import type { Controller } from '../../src/controller/index.ts'

let bed: TestBed
let source: Controller
/** Platform timeouts: the source's workers never heartbeat, and the targets are not in one mesh with it; neither may expire during a test. */
const apart = { heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000 }

beforeAll(async () => {
  bed = await testBed('state-transfer')
  source = await bed.start(apart)
  for (let i = 0; i < 30; i++) {
    const res = await bed.client.json('POST', source.url + '/register', { worker_id: `s${i}`, worker_url: `https://127.0.0.1:7001/s${i}`, capabilities: [capability(`cap-${i % 3}`)] })
    expect(res.status).toBe(200)
  }
}, 60_000)
afterAll(async () => { await bed.cleanup() })

/** The whole body of a GET, as bytes. */
async function bytesOf (url: string, accept: string): Promise<{ status: number, type: string, workers: string | undefined, length: string | undefined, body: Buffer }> {
  const res = await bed.client.stream(url, { headers: { accept } })
  const chunks: Uint8Array[] = []
  try {
    for await (const c of res.body) chunks.push(c)
  } finally {
    res.close()
  }
  return { status: res.status, type: String(res.headers['content-type']), workers: res.headers['x-capmesh-workers'] as string | undefined, length: res.headers['content-length'] as string | undefined, body: Buffer.concat(chunks) }
}

describe('GET /state/export', () => {
  it('streams the JSON document, and gives the raw update for ?format=binary or Accept: application/octet-stream', async () => {
    const json = await bytesOf(source.url + '/state/export', 'application/json')
    expect(json.status).toBe(200)
    expect(json.type).toContain('application/json')
    expect(json.workers).toBe('30')
    const doc = JSON.parse(json.body.toString('utf8'))
    expect(doc).toMatchObject({ format: 'capmesh-state', version: 1, controller_id: source.config.id, workers: 30 })
    expect(Object.keys(doc).sort()).toEqual(['controller_id', 'exported_at', 'format', 'update', 'version', 'workers'])

    const byQuery = await bytesOf(source.url + '/state/export?format=binary', '*/*')
    const byAccept = await bytesOf(source.url + '/state/export', 'application/octet-stream')
    // Sent in the pieces Yjs encoded it in, announced whole: byte for byte the registry's own encode.
    const state = Buffer.from(source.core.registry.encodeState())
    expect(Buffer.from(doc.update, 'base64').equals(state)).toBe(true)
    for (const b of [byQuery, byAccept]) {
      expect(b.status).toBe(200)
      expect(b.type).toBe('application/octet-stream')
      expect(b.length).toBe(String(state.length))
      expect(b.body).toEqual(state)
    }
  })

  it('a registry of several MB (an update in many pieces) exports whole in both forms, byte for byte its encode', async () => {
    const bulk = { type: 'object', description: 'y'.repeat(100_000) }
    for (let i = 0; i < 40; i++) source.core.registry.register({ worker_id: `many${i}`, worker_url: `https://127.0.0.1:7003/m${i}`, capabilities: [capability('many', { input_schema: { ...bulk, title: `m${i}` } }) as never] })
    try {
      const state = Buffer.from(source.core.registry.encodeState())
      expect(state.length).toBeGreaterThan(4_000_000)
      const bin = await bytesOf(source.url + '/state/export?format=binary', '*/*')
      expect(bin.length).toBe(String(state.length))
      expect(bin.body.equals(state)).toBe(true)
      const json = await bytesOf(source.url + '/state/export', 'application/json')
      const update = JSON.parse(json.body.toString('utf8')).update as string
      expect(update).toBe(state.toString('base64'))
    } finally {
      for (let i = 0; i < 40; i++) source.core.registry.deregister(`many${i}`)
    }
  }, 120_000)

  it('a client that goes away mid-export ends it: the controller lets the encoded registry go', async () => {
    // Big enough (~40 MB of JSON) that the response cannot all sit in socket buffers while the client reads nothing.
    const bulk = { type: 'object', description: 'x'.repeat(150_000) }
    for (let i = 0; i < 200; i++) source.core.registry.register({ worker_id: `bulk${i}`, worker_url: `https://127.0.0.1:7002/b${i}`, capabilities: [capability('bulk', { input_schema: bulk }) as never] })
    const res = await bed.client.stream(source.url + '/state/export', { headers: { accept: 'application/json' } })
    const it = res.body[Symbol.asyncIterator]()
    expect((await it.next()).done).toBe(false)
    // The client now reads nothing: the export waits, open, with its state.
    await eventually(() => source.core.exportsInProgress === 1, 'an export in progress')
    res.close()
    await eventually(() => source.core.exportsInProgress === 0, 'the export ended when its client left', 15_000)
    expect((await bed.client.json('GET', source.url + '/health')).status).toBe(200)
    for (let i = 0; i < 200; i++) source.core.registry.deregister(`bulk${i}`)
  }, 120_000)
})

describe('POST /state/import, binary', () => {
  it('imports the raw update, as the JSON document does', async () => {
    const target = await bed.start(apart)
    const bin = await bytesOf(source.url + '/state/export?format=binary', '*/*')
    const res = await bed.client.upload(target.url + '/state/import', bin.body, 'application/octet-stream')
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ status: 'imported', added: 30, workers: 30 })
    expect(target.core.registryHash).toBe(source.core.registryHash)
    // Again: nothing new.
    const again = await bed.client.upload(target.url + '/state/import', bin.body, 'application/octet-stream')
    expect(again.body).toMatchObject({ status: 'imported', added: 0, workers: 30 })
  })

  it('refuses garbage, an empty body, a state over the limit and binary bodies elsewhere, changing nothing', async () => {
    const target = await bed.start({ ...apart, importBodyLimit: 4096 })
    const hash = target.core.registryHash
    const garbage = await bed.client.upload(target.url + '/state/import', Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 250, 251]), 'application/octet-stream')
    expect(garbage.status).toBe(400)
    expect(garbage.body.code).toBe('CAPMESH_ERR_INVALID_STATE')
    const empty = await bed.client.upload(target.url + '/state/import', Buffer.alloc(0), 'application/octet-stream')
    expect(empty.status).toBe(400)
    const big = await bed.client.upload(target.url + '/state/import', Buffer.alloc(5000, 1), 'application/octet-stream')
    expect(big.status).toBe(413)
    expect(big.body.code).toBe('CAPMESH_ERR_BODY_TOO_LARGE')
    const elsewhere = await bed.client.upload(target.url + '/register', Buffer.from('{}'), 'application/octet-stream')
    expect(elsewhere.status).toBe(415)
    expect(elsewhere.body.code).toBe('CAPMESH_ERR_UNSUPPORTED_MEDIA_TYPE')
    expect(target.core.registryHash).toBe(hash)
    expect(target.core.registry.size).toBe(0)
  })
})

describe('capmesh state export | import', () => {
  const bin = fileURLToPath(new URL('../../bin/capmesh.js', import.meta.url))
  const cli = async (...args: string[]): Promise<{ stdout: string, stderr: string }> => await promisify(execFile)(process.execPath, [bin, 'state', ...args, '--tls-dir', bed.tlsDir], { timeout: 60_000 })

  it('writes either form to a file and imports either back (JSON told from binary by its first byte)', async () => {
    const json = join(bed.root, 'registry.json')
    const raw = join(bed.root, 'registry.bin')
    const out = await cli('export', '--controller', source.url, '--out', json)
    expect(out.stderr).toContain(`exported ${source.core.registry.size} workers`)
    await cli('export', '--controller', source.url, '--binary', '--out', raw)
    const doc = JSON.parse(readFileSync(json, 'utf8'))
    expect(doc.format).toBe('capmesh-state')
    expect(readFileSync(raw)).toEqual(Buffer.from(doc.update, 'base64'))
    for (const file of [json, raw]) {
      const target = await bed.start(apart)
      const res = await cli('import', file, '--controller', target.url)
      expect(res.stdout).toContain(`imported: ${source.core.registry.size} new workers`)
      expect(target.core.registryHash).toBe(source.core.registryHash)
    }
  }, 120_000)
})
