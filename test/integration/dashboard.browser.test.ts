/**
 * The dashboard (`GET /ui`) in real headless Chromium (Debian's package,
 * driven by playwright-core), against a real mesh of three controllers and
 * real worker agents, the browser presenting a client certificate issued by
 * the mesh's CA and verifying the controller's (simulations/chromium.ts):
 *
 * - the page loads offline (nothing but the controller's origin is
 *   reachable) with no console errors and shows the mesh, in two columns
 *   at 1280×800 and one on a phone, never wider than the screen;
 * - a worker registered at another controller appears within the issue's
 *   2 s;
 * - a controller stopped: the dashboard shows it gone, and its workers,
 *   which fail over on their own, under their new controllers;
 * - a controller whose certificate the mesh's CA did not sign is refused.
 *
 * Runs with `npm run test:browser`; /ui's identity rules and path
 * traversal are tested without a browser in ui.test.ts.
 */
import { join } from 'node:path'
import { getCACertificates, setDefaultCACertificates } from 'node:tls'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { workerAgent, type WorkerAgent } from '../../src/agent/index.ts'
import type { Controller } from '../../src/controller/index.ts'
import type { Capability } from '../../src/wire/index.ts'
import { dashboardContext, launchChromium } from '../../simulations/chromium.ts'
import { capability, eventually, testBed, type TestBed } from '../helpers/controllers.ts'

let bed: TestBed
let browser: Browser | null = null
let ctx: BrowserContext | null = null
const agents: WorkerAgent[] = []
const defaultCas = getCACertificates('default')

beforeAll(async () => {
  // First, so that a missing Chromium fails at once rather than after the mesh starts.
  browser = await launchChromium()
  bed = await testBed('dashboard')
})
afterAll(async () => {
  await ctx?.close()
  await browser?.close()
  for (const a of agents.splice(0)) await a.stop().catch(() => {})
  await bed?.cleanup()
  setDefaultCACertificates(defaultCas)
})

async function startMesh (ids: string[]): Promise<Controller[]> {
  const first = await bed.start({ id: ids[0] })
  const cs = [first]
  for (const id of ids.slice(1)) cs.push(await bed.start({ id, bootstrap: [first.p2p.multiaddrs[0]] }))
  await eventually(() => cs.every(c => {
    const peers = new Set(c.p2p.connectedPeers())
    return cs.every(o => o === c || peers.has(o.p2p.peerId))
  }), 'a full mesh of three controllers', 15_000)
  return cs
}

/** A real worker agent with a failover list, attaching to `affinity` while it is reachable. */
async function agent (id: string, cap: string, controllers: Controller[], affinity: Controller): Promise<WorkerAgent> {
  const a = workerAgent({
    workerId: id,
    workerUrl: `https://127.0.0.1:7000/${id}`,
    capabilities: [capability(cap) as unknown as Capability],
    controllers: controllers.map(c => c.url),
    tls: await bed.identity('worker', id),
    heartbeatIntervalMs: 200,
    affinity: affinity.config.id
  })
  a.on('error', () => {})
  agents.push(a)
  await a.start()
  return a
}

const row = (page: Page, id: string): ReturnType<Page['locator']> => page.locator(`#workers tr[data-worker="${id}"]`)

describe('the dashboard in Chromium', () => {
  it('loads without console errors, shows a worker registered at another controller within 2 s, and a controller gone with its workers failing over', async () => {
    const [a, b, c] = await startMesh(['a', 'b', 'c'])
    const client = await bed.identity('client', 'browser')
    ctx = await dashboardContext(browser!, [{ origin: a.url, ca: bed.ca, cert: client.cert, key: client.key }], { viewport: { width: 1280, height: 800 } })
    const page = await ctx.newPage()
    const errors: string[] = []
    page.on('console', m => { if (m.type() === 'error') errors.push(m.text()) })
    page.on('pageerror', e => { errors.push(e.message) })
    page.on('requestfailed', r => { errors.push(`${r.url()}: ${r.failure()?.errorText ?? 'failed'}`) })

    const res = await page.goto(`${a.url}/ui`)
    expect(res?.status()).toBe(200)
    await page.waitForFunction(() => document.body.dataset.ready === 'true', undefined, { timeout: 15_000 })
    await expect.poll(async () => await page.locator('#self-id').innerText()).toBe('a')
    // The mesh: all three alive, b and c linked and agreeing with a.
    for (const id of ['a', 'b', 'c']) {
      await page.locator(`#controllers tr[data-controller="${id}"] td[data-status="alive"]`).waitFor({ timeout: 15_000 })
    }
    for (const id of ['b', 'c']) {
      await page.locator(`#controllers tr[data-controller="${id}"] td[data-agrees="yes"]`).waitFor({ timeout: 15_000 })
      await page.locator(`#mesh-graph line[data-link="${id}"]`).waitFor({ timeout: 15_000 })
    }
    expect(await page.locator('#mesh-graph circle').count()).toBe(3)
    // Both charts are drawn (Chart.js from node_modules, served by the controller).
    expect(await page.locator('canvas').count()).toBe(2)
    expect(await page.evaluate(() => typeof (window as unknown as { Chart?: unknown }).Chart)).toBe('function')

    // A worker registered at b appears at a's dashboard: the bound, 2 s, as the wait.
    await agent('w-at-b', 'resize', [b], b)
    await row(page, 'w-at-b').waitFor({ timeout: 2000 })
    expect(await row(page, 'w-at-b').getAttribute('data-owner')).toBe('b')
    await page.locator('#capabilities tr[data-capability="resize"]').waitFor()
    // Its propagation from b was measured from the watch.
    await expect.poll(async () => await page.locator('#latency').innerText(), { timeout: 10_000 }).toMatch(/p50 \d+ ms/)

    // Workers attached to c, with every controller in their failover lists.
    const movers = ['m1', 'm2', 'm3']
    for (const id of movers) await agent(id, 'ocr', [c, b, a], c)
    for (const id of movers) {
      await row(page, id).waitFor({ timeout: 10_000 })
      expect(await row(page, id).getAttribute('data-owner')).toBe('c')
    }

    await c.stop()

    // c is shown gone, its link down; its workers under b or a, marked as moved from c.
    await page.locator('#controllers tr[data-controller="c"] td[data-status="gone"]').waitFor({ timeout: 20_000 })
    await page.locator('#controllers tr[data-controller="c"] td[data-link="down"]').waitFor({ timeout: 20_000 })
    for (const id of movers) {
      await eventually(async () => ['a', 'b'].includes(await row(page, id).getAttribute('data-owner') ?? ''), `${id} shown under its new controller`, 20_000)
      const agentNow = agents.find(x => x.workerId === id)!
      expect(await row(page, id).getAttribute('data-owner')).toBe(agentNow.controller?.id)
      expect(await row(page, id).innerText()).toContain('from c')
    }
    const failovers = await page.locator('#failovers li').allInnerTexts()
    for (const id of movers) expect(failovers.some(t => t.includes(`${id} moved c →`))).toBe(true)
    await page.locator('#feed li[data-kind="controller_status"]', { hasText: /controller c \w+ → gone/ }).first().waitFor()

    // 1280×800: two columns side by side, nothing wider than the window.
    const box = async (id: string): Promise<{ x: number, y: number, width: number, height: number }> => (await page.locator(id).boundingBox())!
    const layout = async (): Promise<{ scroll: number, mesh: Awaited<ReturnType<typeof box>>, workers: Awaited<ReturnType<typeof box>> }> =>
      ({ scroll: await page.evaluate(() => document.documentElement.scrollWidth), mesh: await box('#mesh-panel'), workers: await box('#workers-panel') })
    const wide = await layout()
    expect(wide.scroll).toBeLessThanOrEqual(1280)
    expect(wide.workers.y).toBe(wide.mesh.y)
    expect(wide.workers.x).toBeGreaterThanOrEqual(wide.mesh.x + wide.mesh.width)
    // A phone: one column, still nothing wider than the screen (wide tables scroll inside their panel).
    await page.setViewportSize({ width: 390, height: 844 })
    await expect.poll(async () => (await layout()).workers.y > (await layout()).mesh.y).toBe(true)
    const narrow = await layout()
    expect(narrow.scroll).toBeLessThanOrEqual(390)
    expect(narrow.workers.x).toBe(narrow.mesh.x)
    expect(errors).toEqual([])
  }, 120_000)

  it('verifies the controller\'s certificate: one signed by another CA is refused, no page is shown', async () => {
    // Its own TLS dir: a CA of its own, which the browser context was not told to trust.
    const stranger = await bed.start({ id: 'stranger', tlsDir: join(bed.root, 'other-tls') })
    const client = await bed.identity('client', 'browser')
    const other = await dashboardContext(browser!, [{ origin: stranger.url, ca: bed.ca, cert: client.cert, key: client.key }])
    try {
      const page = await other.newPage()
      const res = await page.goto(`${stranger.url}/ui`)
      // playwright-core's TLS proxy answers for the connection it refused to make.
      expect(res?.status()).toBe(503)
      expect(await page.content()).toContain('self-signed certificate in certificate chain')
      expect(await page.locator('#mesh-panel').count()).toBe(0)
    } finally {
      await other.close()
    }
  }, 60_000)
})
