/**
 * Headless Chromium for looking at simulation reports (`sim:screenshot`,
 * `npm run test:browser`): Debian's package (`apt-get install chromium`),
 * driven by playwright-core, which never downloads a browser of its own.
 */
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

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
