#!/usr/bin/env node
// capmesh's command line. It runs dist/capmesh.mjs, the sources built into plain JavaScript
// (bin/build.js; `npm install`, `npm start` and `npm test` build it), when that build is as new
// as every source file it was made from; otherwise (not built, or a source edited since) it runs
// the TypeScript sources through Node 22's type stripping, slower to start but never stale.
// The project's `node@22` devDependency provides that Node.
import { readFileSync, statSync } from 'node:fs'

const [major] = process.versions.node.split('.').map(Number)
if (major < 22) {
  console.error(`capmesh needs Node.js 22 or newer (this is ${process.version}). From a checkout, run it through npm (npm start, npx capmesh ...) so the project's own Node 22 is used.`)
  process.exit(1)
}

const root = new URL('../', import.meta.url)

/** Whether dist/ holds a build of the sources as they are now (about 130 stat calls, well under 1 ms... see docs/internals.md). */
function built () {
  if (process.env.CAPMESH_SOURCES === '1') return false
  let inputs
  try {
    inputs = JSON.parse(readFileSync(new URL('dist/inputs.json', root), 'utf8')).inputs
  } catch {
    return false
  }
  for (const [file, mtimeMs] of Object.entries(inputs)) {
    try {
      if (statSync(new URL(file, root)).mtimeMs !== mtimeMs) return false
    } catch {
      return false
    }
  }
  return true
}

await import(built() ? '../dist/capmesh.mjs' : '../src/cli/main.ts')
