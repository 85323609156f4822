/**
 * The wire contract is declared once (src/wire/) and published: every
 * endpoint's request and reply schemas appear in /openapi.json, /health and
 * /mesh included, and the replies a controller sends match them.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Compile } from 'typebox/compile'
import { HealthReply, MeshReply } from '../../src/wire/index.ts'
import { testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
beforeEach(async () => { bed = await testBed('openapi') })
afterEach(async () => { await bed.cleanup() })

describe('the published contract', () => {
  it('/openapi.json has every endpoint with its reply schema, and /health and /mesh answer to theirs', async () => {
    const a = await bed.start({ id: 'a' })
    await bed.start({ id: 'b', bootstrap: [a.p2p.multiaddrs[0]] })
    const spec = (await bed.client.json('GET', `${a.url}/openapi.json`)).body
    for (const [path, method] of [['/register', 'post'], ['/register/batch', 'post'], ['/heartbeat', 'post'], ['/deregister', 'post'], ['/drain', 'post'], ['/route', 'post'], ['/route', 'get'],
      ['/capabilities', 'get'], ['/workers', 'get'], ['/health', 'get'], ['/mesh', 'get'], ['/state/export', 'get'], ['/state/import', 'post'], ['/ui/mesh', 'get']]) {
      const op = spec.paths?.[path]?.[method]
      expect(op, `${method.toUpperCase()} ${path} in /openapi.json`).toBeDefined()
      expect(op.responses?.['200']?.content?.['application/json']?.schema, `${method.toUpperCase()} ${path} has a 200 reply schema`).toBeDefined()
    }
    const health = spec.paths['/health'].get.responses['200'].content['application/json'].schema
    expect(Object.keys(health.properties)).toEqual(expect.arrayContaining(['status', 'sync', 'mesh', 'workers', 'own_workers']))
    const checkHealth = Compile(HealthReply)
    const checkMesh = Compile(MeshReply)
    const h = (await bed.client.json('GET', `${a.url}/health`)).body
    const m = (await bed.client.json('GET', `${a.url}/mesh`)).body
    expect(checkHealth.Check(h), JSON.stringify([...checkHealth.Errors(h)].slice(0, 3))).toBe(true)
    expect(checkMesh.Check(m), JSON.stringify([...checkMesh.Errors(m)].slice(0, 3))).toBe(true)
  })
})
