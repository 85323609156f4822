/**
 * Vitest global set-up: brings dist/ up to date before any test runs, so tests that spawn
 * bin/capmesh.js run the built CLI as users do, and the code they edited (`npx vitest run FILE`
 * right after a change under src/ builds first). Nothing to do when dist/ is fresh (a few stat
 * calls); a build takes a few seconds.
 */
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export default function setup (): void {
  execFileSync(process.execPath, [fileURLToPath(new URL('../../bin/build.js', import.meta.url))], { stdio: 'inherit' })
}
