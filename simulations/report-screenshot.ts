/**
 * `npm run sim:screenshot -- reports/x/report.html docs/sim-report.png`:
 * renders a simulation report in headless Chromium (Debian's package) and
 * saves a full-page screenshot, e.g. for docs/simulations.md.
 */
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { scriptArgs } from './args.ts'
import { ChromiumNotFoundError, launchChromium } from './chromium.ts'

const { positionals: [html, png] } = scriptArgs({
  script: 'sim:screenshot',
  summary: `Renders a simulation report (the report.html that \`npm run sim -- <scenario> --out DIR\` writes)
in headless Chromium and saves a full-page screenshot, e.g. docs/sim-report.png. Needs Debian's
chromium (apt-get install chromium) at /usr/bin/chromium, or CHROMIUM_PATH set to another one.`,
  options: {},
  positionals: [
    { name: 'REPORT.html', description: 'the report to render' },
    { name: 'OUT.png', description: 'where the screenshot goes (overwritten)' }
  ]
})

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
