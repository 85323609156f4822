import { defineConfig } from 'vitest/config'
import { CONTAINERS } from './vitest.config.ts'

// `npm run test:containers`: builds the container image (deploy/Containerfile) and runs
// deploy/compose.yaml and the Kubernetes manifests' command lines under podman. Needs podman,
// podman-compose and the node:22-slim base image; a build takes both cores for minutes, so it is
// not part of `npm test` and runs one file at a time.
export default defineConfig({
  test: {
    globalSetup: ['test/helpers/build.ts'],
    include: [CONTAINERS],
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 600_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'reports/vitest-containers.json' }
  }
})
