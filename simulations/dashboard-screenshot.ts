/**
 * `npm run dashboard:screenshot -- [--out docs/dashboard.png] [--phone FILE]`:
 * a picture of the live dashboard (`GET /ui`) in the middle of a failover.
 * Starts three controllers in this process (loopback, the local preset's
 * fast timeouts, a CA made for the run), opens controller a's dashboard in
 * headless Chromium (Debian's package) as a client identity, attaches worker
 * agents to all three, stops c, and once a shows c gone and its workers
 * moved, saves a 1280×800 screenshot (and one at phone width).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { WorkerAgent } from '../src/agent/index.ts'
import type { Controller as ControllerType } from '../src/controller/index.ts'
import type { Capability } from '../src/wire/index.ts'
import { scriptArgs } from './args.ts'

const { values } = scriptArgs({
  script: 'dashboard:screenshot',
  summary: `Starts a mesh of three controllers and worker agents in this process, opens controller a's
dashboard (GET /ui) in headless Chromium as a client identity, stops controller c, and saves a
screenshot once a shows c gone and its workers moved. Needs Debian's chromium (apt-get install
chromium) at /usr/bin/chromium, or CHROMIUM_PATH set to another one.`,
  options: {
    out: { type: 'string', value: 'FILE', default: 'docs/dashboard.png', description: 'the 1280×800 screenshot (overwritten)' },
    phone: { type: 'string', value: 'FILE', description: 'also a screenshot at phone width (390×844, full page)' },
    workers: { type: 'string', value: 'N', default: '12', description: 'worker agents, spread over the three controllers and four capabilities' }
  }
})

// Loaded once the options are read: --help and a bad flag answer without starting anything heavy.
const { workerAgent } = await import('../src/agent/index.ts')
const { localPreset, resolveControllerConfig } = await import('../src/config.ts')
const { Controller } = await import('../src/controller/index.ts')
const { ensureTls, issueIdentity } = await import('../src/tls/index.ts')
const { ChromiumNotFoundError, dashboardContext, launchChromium } = await import('./chromium.ts')

const HOST = '127.0.0.1'
const CAPABILITIES = ['resize', 'ocr', 'translate', 'embed']

const capability = (name: string): Capability => ({
  name, verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4
})

async function until (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

let browser
try {
  browser = await launchChromium()
} catch (err) {
  if (!(err instanceof ChromiumNotFoundError)) throw err
  console.error(`dashboard:screenshot: ${err.message}`)
  process.exit(1)
}
const root = mkdtempSync(join(tmpdir(), 'capmesh-dashboard-'))
const controllers: ControllerType[] = []
const agents: WorkerAgent[] = []
try {
  const tlsDir = join(root, 'tls')
  const tls = await ensureTls({ dir: tlsDir, hosts: [HOST] })
  const start = async (id: string, bootstrap: string[]): Promise<ControllerType> => {
    const c = new Controller({ config: resolveControllerConfig(localPreset({ id, host: HOST, dataDir: join(root, id), tlsDir, bootstrap })) })
    await c.start()
    controllers.push(c)
    return c
  }
  const a = await start('a', [])
  const b = await start('b', [a.p2p.multiaddrs[0]])
  const c = await start('c', [a.p2p.multiaddrs[0]])
  await until(() => ['b', 'c'].every(id => a.view.members()[id]?.status === 'alive'), 'a full mesh')

  const client = await issueIdentity({ dir: tlsDir, role: 'client', name: 'dashboard' })
  const ctx = await dashboardContext(browser, [{ origin: a.url, ca: tls.ca, cert: client.cert, key: client.key }], { viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 })
  const page = await ctx.newPage()
  await page.goto(`${a.url}/ui`)
  await page.waitForFunction(() => document.body.dataset.ready === 'true')

  const mesh = [a, b, c]
  for (let i = 0; i < Number(values.workers); i++) {
    const id = `worker-${i + 1}`
    const home = mesh[i % 3]
    const identity = await issueIdentity({ dir: tlsDir, role: 'worker', name: id })
    const agent = workerAgent({
      workerId: id,
      workerUrl: `https://${HOST}:7000/${id}`,
      capabilities: [capability(CAPABILITIES[i % CAPABILITIES.length])],
      controllers: [home, ...mesh.filter(x => x !== home)].map(x => x.url),
      tls: { ca: tls.ca, cert: identity.cert, key: identity.key },
      heartbeatIntervalMs: 200,
      affinity: home.config.id
    })
    agent.on('error', () => {})
    agents.push(agent)
    await agent.start()
    // Spread out in time, so the charts have something to show.
    await new Promise(resolve => setTimeout(resolve, 150))
  }
  const onC = agents.filter(x => x.controller?.id === 'c').map(x => x.workerId)
  await until(async () => await page.locator('#workers tr[data-owner="c"]').count() === onC.length, 'c\'s workers on the dashboard')
  await new Promise(resolve => setTimeout(resolve, 2000))

  await c.stop()
  controllers.splice(controllers.indexOf(c), 1)
  await page.locator('#controllers tr[data-controller="c"] td[data-status="gone"]').waitFor({ timeout: 30_000 })
  await until(async () => await page.locator('#workers tr.moved').count() === onC.length, 'c\'s workers moved on the dashboard')
  // A few more samples of the state chart after the move.
  await new Promise(resolve => setTimeout(resolve, 4000))
  await page.screenshot({ path: values.out })
  console.log(`wrote ${values.out}`)
  if (values.phone != null) {
    await page.setViewportSize({ width: 390, height: 844 })
    await new Promise(resolve => setTimeout(resolve, 500))
    await page.screenshot({ path: values.phone, fullPage: true })
    console.log(`wrote ${values.phone}`)
  }
  await ctx.close()
} finally {
  await browser.close()
  for (const x of agents) await x.stop().catch(() => {})
  for (const x of controllers) await x.stop().catch(() => {})
  rmSync(root, { recursive: true, force: true })
}
