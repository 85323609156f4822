/**
 * The audit trail: every registry-changing request is logged once answered,
 * with the identity that asked, the worker and the outcome, refused ones
 * included, and without secrets (no keys, no tokens, no bodies).
 */
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { localPreset, resolveControllerConfig } from '../../src/config.ts'
import { Controller } from '../../src/controller/index.ts'
import { httpsClient } from '../../src/utils/https-client.ts'
import { capability, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let controller: Controller | null = null
beforeEach(async () => { bed = await testBed('audit') })
afterEach(async () => {
  await controller?.stop()
  controller = null
  await bed.cleanup()
})

describe('the audit trail', () => {
  it('logs who registered, deregistered, drained or imported what, and refusals, without secrets', async () => {
    const lines: Array<Record<string, any>> = []
    const sink = new Writable({ write (chunk, _enc, cb) { for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l)); cb() } })
    const config = resolveControllerConfig(localPreset({ id: 'a', dataDir: join(bed.root, 'a'), tlsDir: bed.tlsDir, logLevel: 'info' }))
    controller = await new Controller({ config, logger: pino({ level: 'info' }, sink) }).start()
    const url = controller.url
    const w1tls = await bed.identity('worker', 'w1')
    const w1 = httpsClient(w1tls)
    const reg = (id: string) => ({ worker_id: id, worker_url: `https://127.0.0.1:7000/${id}`, capabilities: [capability('echo')] })
    try {
      expect((await w1.json('POST', `${url}/register`, reg('w1'))).status).toBe(200)
      expect((await w1.json('POST', `${url}/register`, reg('w2'))).status).toBe(403)
      expect((await w1.json('POST', `${url}/drain`, { worker_id: 'w1' })).status).toBe(200)
      expect((await bed.client.json('POST', `${url}/deregister`, { worker_id: 'w1' })).status).toBe(200)
    } finally {
      await w1.close()
    }
    const audit = lines.filter(l => l.audit != null)
    expect(audit.map(l => [l.audit, l.identity, l.worker_id, l.status, l.outcome])).toEqual([
      ['register', 'spiffe://capmesh.local/worker/w1', 'w1', 200, 'ok'],
      ['register', 'spiffe://capmesh.local/worker/w1', 'w2', 403, 'worker_not_covered'],
      ['drain', 'spiffe://capmesh.local/worker/w1', 'w1', 200, 'ok'],
      ['deregister', 'spiffe://capmesh.local/operator/operator', 'w1', 200, 'ok']
    ])
    const text = JSON.stringify(lines)
    expect(text).not.toContain('PRIVATE KEY')
    expect(text).not.toContain(w1tls.cert.split('\n')[1])
  })
})
