/**
 * `npm run sim:screenshot -- reports/x/report.html docs/sim-report.png`:
 * renders a simulation report in headless Chromium (Debian's package) and
 * saves a full-page screenshot, e.g. for docs/simulations.md.
 */
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { ChromiumNotFoundError, launchChromium } from './chromium.ts'

const [html, png] = process.argv.slice(2)
if (html == null || png == null) {
  console.error('usage: npm run sim:screenshot -- REPORT.html OUT.png')
  process.exit(2)
}
let browser
try {
  browser = await launchChromium()
} catch (err) {
  if (!(err instanceof ChromiumNotFoundError)) throw err
  console.error(`sim:screenshot: ${err.message}`)
  process.exit(1)
}
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 })
  await page.goto(pathToFileURL(resolve(html)).href)
  await page.waitForFunction(() => document.body.dataset.rendered === 'true')
  await page.screenshot({ path: png, fullPage: true })
  console.log(`wrote ${png}`)
} finally {
  await browser.close()
}
