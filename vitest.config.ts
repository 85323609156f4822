import { defineConfig } from 'vitest/config'

// Simulations start whole clusters of controller processes and hundreds of agents: they run
// after everything else, one file at a time, so they never compete with other integration
// tests for this machine's two cores.
const SIM = 'test/integration/sim-*.test.ts'
/** Tests that build the container image and run deploy/ under podman: `npm run test:containers` (vitest.containers.config.ts), never `npm test`. */
export const CONTAINERS = 'test/integration/deploy-*.test.ts'

/** Tests that drive a real browser (Debian's chromium): `npm run test:browser` (vitest.browser.config.ts), never `npm test`. */
export const BROWSER = 'test/**/*.browser.test.ts'

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/build.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest.json' },
    projects: [
      {
        extends: true,
        test: {
          name: 'main',
          include: ['test/**/*.test.ts'],
          exclude: [SIM, CONTAINERS, BROWSER],
          // Integration tests start real controllers and libp2p nodes: keep CPU contention on 2 cores sane.
          maxWorkers: 2,
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: 'sim',
          include: [SIM],
          exclude: [BROWSER],
          maxWorkers: 1,
          fileParallelism: false,
          testTimeout: 240_000,
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
