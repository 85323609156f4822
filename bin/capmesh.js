#!/usr/bin/env node
// capmesh's command line. It runs dist/capmesh.mjs, the sources and their dependencies built
// into plain JavaScript (bin/build.js; `npm install`, `npm start` and `npm test` build it), when
// that build is as new as every file it was made from; otherwise (not built, or a source edited
// since) the TypeScript sources through Node 22's type stripping: slower to start, never stale.
// CAPMESH_SOURCES=1 runs the sources in any case. The project's `node@22` devDependency
// provides that Node.
const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  console.error(`capmesh needs Node.js 22 or newer (this is ${process.version}). From a checkout, run it through npm (npm start, npx capmesh ...) so the project's own Node 22 is used.`)
  process.exit(1)
}

const { isBuilt } = await import('./built.js')
if (process.env.CAPMESH_SOURCES !== '1' && isBuilt(new URL('../', import.meta.url))) {
  const { mapStackTraces } = await import('./stack-traces.js')
  mapStackTraces(new URL('../dist/', import.meta.url).href)
  await import('../dist/capmesh.mjs')
} else {
  await import('../src/cli/main.ts')
}
