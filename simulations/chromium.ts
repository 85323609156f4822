/**
 * Headless Chromium for looking at simulation reports (`sim:screenshot`,
 * `npm run test:browser`): Debian's package (`apt-get install chromium`),
 * driven by playwright-core, which never downloads a browser of its own.
 */
import { existsSync } from 'node:fs'
import { getCACertificates, setDefaultCACertificates } from 'node:tls'
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions } from 'playwright-core'

/** Where Debian's package installs it; `CHROMIUM_PATH` points elsewhere. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** No sandbox (CI runs as root), no GPU, and nothing that reaches the network on its own. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

export class ChromiumNotFoundError extends Error {
  constructor (path: string) {
    super(`no Chromium at ${path}: install Debian's package (apt-get install chromium) or set CHROMIUM_PATH`)
    this.name = 'ChromiumNotFoundError'
  }
}

/** Starts headless Chromium; says how to install it when it is missing (playwright's own error does not). */
export async function launchChromium (): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) throw new ChromiumNotFoundError(CHROMIUM_PATH)
  return await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS })
}

/** A controller's dashboard as a browser sees it: its origin, the CA that signed its certificate, and the client identity to present. */
export interface DashboardAccess {
  /** The controller's https://host:port. */
  origin: string
  /** PEM CA the controller's server certificate chains to. */
  ca: string
  /** PEM client certificate (a client or operator identity) and its key. */
  cert: string
  key: string
}

/**
 * A browser context that opens controllers' dashboards (`GET /ui`) as the
 * client identity each is given, e.g. a client certificate from
 * `capmesh certs issue --role client`.
 *
 * playwright-core presents client certificates through a TLS proxy in
 * this process: it, not Chromium, verifies the controller's certificate,
 * against Node's default CAs. So the mesh's CA is added to them for this
 * process (`tls.setDefaultCACertificates`); verification stays on, and a
 * controller whose certificate the CA did not sign is refused. Only the
 * origins given are reachable: any other request is aborted, so the page
 * must work offline.
 */
export async function dashboardContext (browser: Browser, access: DashboardAccess[], options: Omit<BrowserContextOptions, 'clientCertificates'> = {}): Promise<BrowserContext> {
  const have = new Set(getCACertificates('default'))
  const add = access.map(a => a.ca).filter(ca => !have.has(ca))
  if (add.length > 0) setDefaultCACertificates([...have, ...new Set(add)])
  const ctx = await browser.newContext({
    ...options,
    clientCertificates: access.map(a => ({ origin: new URL(a.origin).origin, cert: Buffer.from(a.cert), key: Buffer.from(a.key) }))
  })
  const origins = new Set(access.map(a => new URL(a.origin).origin))
  await ctx.route('**/*', async route => { await (origins.has(new URL(route.request().url()).origin) ? route.continue() : route.abort()) })
  return ctx
}
