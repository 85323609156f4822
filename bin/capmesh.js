#!/usr/bin/env node
// capmesh's command line. Sources are TypeScript run by Node 22's built-in
// type stripping; the project's `node@22` devDependency provides that Node.
const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  console.error(`capmesh needs Node.js 22 or newer (this is ${process.version}). From a checkout, run it through npm (npm start, npx capmesh ...) so the project's own Node 22 is used.`)
  process.exit(1)
}
await import('../src/cli/main.ts')
