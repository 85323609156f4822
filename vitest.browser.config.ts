import { defineConfig } from 'vitest/config'
import { BROWSER } from './vitest.config.ts'

// `npm run test:browser`: the tests that load a page in Debian's chromium (apt-get install
// chromium). Each also runs a small simulation, so one file at a time, like the sim project.
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/build.ts'],
    include: [BROWSER],
    testTimeout: 120_000,
    hookTimeout: 30_000,
    maxWorkers: 1,
    fileParallelism: false,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest-browser.json' }
  }
})
