/**
 * `npm run sim:screenshot -- reports/x/report.html docs/sim-report.png`:
 * renders a simulation report in headless Chromium (Debian's package) and
 * saves a full-page screenshot, e.g. for docs/simulations.md.
 */
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { chromium } from 'playwright-core'

const [html, png] = process.argv.slice(2)
if (html == null || png == null) {
  console.error('usage: npm run sim:screenshot -- REPORT.html OUT.png')
  process.exit(2)
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
})
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 })
  await page.goto(pathToFileURL(resolve(html)).href)
  await page.waitForFunction(() => document.body.dataset.rendered === 'true')
  await page.screenshot({ path: png, fullPage: true })
  console.log(`wrote ${png}`)
} finally {
  await browser.close()
}
