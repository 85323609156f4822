/**
 * `npm start`: a local demo on loopback. A controller on :9000 with a shared
 * TLS dir, two demo workers registered through the HTTP API and kept alive
 * by heartbeats, then a ready-to-paste curl for /route. Ctrl-C stops all.
 */
import { join, resolve } from 'node:path'
import { resolveControllerConfig } from '../config.ts'
import { Controller } from '../controller/index.ts'
import { httpsClient } from '../utils/https-client.ts'
import { stopOnSignal } from './signals.ts'

export interface DemoInit {
  /** Folder for data dirs and the shared TLS dir. */
  root: string
}

const capability = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  verb: 'invoke',
  version: '1.0.0',
  input_schema: { type: 'object', properties: { text: { type: 'string' } } },
  output_schema: { type: 'object', properties: { text: { type: 'string' } } },
  requires_gpu: false,
  max_concurrency: 8,
  ...extra
})

export async function runDemo (init: DemoInit): Promise<void> {
  const root = resolve(init.root)
  const tlsDir = join(root, 'tls')
  const controller = new Controller({
    config: resolveControllerConfig({ id: 'a', httpsPort: 9000, dataDir: join(root, 'a'), tlsDir, heartbeatIntervalMs: 2000, unhealthyAfterMs: 5000, staleAfterMs: 10_000, logLevel: 'warn' })
  })
  await controller.start()
  const client = httpsClient({ ca: controller.ca.pem })
  const workers = [
    { worker_id: 'demo-echo-1', worker_url: 'https://127.0.0.1:7001', capabilities: [capability('echo', { cost_tokens_per_invocation: 1 })] },
    { worker_id: 'demo-upper-1', worker_url: 'https://127.0.0.1:7002', capabilities: [capability('upper', { slo: { latency_p95_ms: 50 } })] }
  ]
  for (const w of workers) {
    const res = await client.json('POST', `${controller.url}/register`, w)
    console.log(`registered ${w.worker_id} → ${JSON.stringify(res.body)}`)
  }
  const beat = setInterval(() => {
    for (const w of workers) {
      client.json('POST', `${controller.url}/heartbeat`, { worker_id: w.worker_id }).then(async res => {
        if (res.body?.error === 'worker_not_registered') await client.json('POST', `${controller.url}/register`, w)
      }).catch(err => { console.error(`heartbeat ${w.worker_id}: ${(err as Error).message}`) })
    }
  }, 2000)

  console.log(`
capmesh demo running
  controller a   ${controller.url}   (data ${controller.config.dataDir})
  CA             ${controller.ca.path}

Try:
  curl --cacert ${controller.ca.path} -X POST ${controller.url}/route -H 'content-type: application/json' -d '{"verb":"invoke","capability":"echo"}'
  curl --cacert ${controller.ca.path} ${controller.url}/workers
  curl --cacert ${controller.ca.path} '${controller.url}/route?verb=invoke&capability=upper'

Ctrl-C stops everything.`)

  stopOnSignal(async () => {
    clearInterval(beat)
    for (const w of workers) await client.json('POST', `${controller.url}/deregister`, { worker_id: w.worker_id }).catch(() => {})
    await client.close()
    await controller.stop()
  })
}
