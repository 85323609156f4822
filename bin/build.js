#!/usr/bin/env node
// Builds the `capmesh` command line into plain JavaScript: dist/capmesh.mjs (ESM, Node 22) and
// the chunks its lazily loaded commands import, with source maps naming src/ files. Run by
// `npm install` (prepare), `npm start`, `npm test` and `npm run build`; bin/capmesh.js runs it
// when it is fresh and the TypeScript sources otherwise (see dist/inputs.json below).
//
//   node bin/build.js            build dist/ unless it is fresh (bin/built.js)
//   node bin/build.js --force    build it anyway
//   node bin/build.js --outdir D build into D
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { isBuilt } from './built.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
/** Written last: every source file the bundle was built from with its mtime, which bin/capmesh.js compares. */
export const INPUTS_FILE = 'inputs.json'

/**
 * A bundled module's `import.meta.url` becomes its source file's URL, reckoned from where the
 * bundle lies: code that finds files beside itself (the dashboard's src/ui, bin/capmesh.js from
 * src/launch, the netns relay) finds the same files from dist/ as from src/.
 */
const sourceUrls = (outdir) => ({
  name: 'source-import-meta-url',
  setup (build) {
    build.onLoad({ filter: /\.ts$/ }, async ({ path }) => {
      const text = readFileSync(path, 'utf8')
      if (!text.includes('import.meta.url')) return undefined
      const rel = relative(outdir, path).split('\\').join('/')
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'ts' }
    })
  }
})

/**
 * Keeps only the mappings into capmesh's own files (src/): stack frames there name the .ts file
 * and line, frames in a dependency the bundled file and line (each dependency's code is there as
 * it was, under a comment naming its file). Mappings of the dependencies made the maps ten times
 * larger, and reading them on a controller's first error would stall it for most of a second
 * (bin/stack-traces.js reads a chunk's map then).
 */
async function ownMappingsOnly (file) {
  const { decode, encode } = await import('@jridgewell/sourcemap-codec')
  const map = JSON.parse(readFileSync(file, 'utf8'))
  const own = map.sources.map(s => !s.includes('node_modules/'))
  map.mappings = encode(decode(map.mappings).map(line => line.filter(seg => seg.length > 1 && own[seg[1]])))
  writeFileSync(file, JSON.stringify(map))
}

/** The mtime of every file under src/ and of the other files a build depends on, by path from the root. */
function mtimes () {
  const files = readdirSync(join(ROOT, 'src'), { recursive: true }).map(f => `src/${f.split('\\').join('/')}`)
  const all = [...files, 'bin/build.js', 'node_modules/.package-lock.json']
  return new Map(all.flatMap(f => {
    try {
      return [[f, statSync(join(ROOT, f)).mtimeMs]]
    } catch {
      return []
    }
  }))
}

/** Builds into `outdir` (default dist/) and returns the number of source files it holds. */
export async function build ({ outdir = join(ROOT, 'dist') } = {}) {
  const { build: esbuild } = await import('esbuild')
  const tmp = `${outdir}.tmp-${process.pid}`
  const before = mtimes()
  rmSync(tmp, { recursive: true, force: true })
  const result = await esbuild({
    absWorkingDir: ROOT,
    entryPoints: { capmesh: join(ROOT, 'src/cli/main.ts') },
    outdir: tmp,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    // Without whitespace and with shorter syntax the chunks a controller loads are ~40 % smaller:
    // V8 keeps every script's text in the heap (an idle controller held ~11 MB of it), and parses
    // less at start. Names stay as written: stack traces and `constructor.name` read as in the source.
    minifyWhitespace: true,
    minifySyntax: true,
    // Dependencies too: one file read per chunk instead of resolving and compiling ~1,000 modules
    // at every start. Their CommonJS modules call require() for Node's own modules, which an ES
    // module has only when given one.
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    // Maps name src/ and node_modules/ files, which a checkout has: no copy of their text.
    sourcemap: true,
    sourcesContent: false,
    metafile: true,
    logLevel: 'warning',
    plugins: [sourceUrls(outdir)]
  })
  for (const f of readdirSync(tmp)) if (f.endsWith('.map')) await ownMappingsOnly(join(tmp, f))
  const sources = Object.keys(result.metafile.inputs).filter(f => !f.includes('node_modules/')).sort()
  // Also stale once the build itself changes or `npm install` changes the dependencies.
  const tracked = [...sources, 'bin/build.js', 'node_modules/.package-lock.json'].filter(f => existsSync(join(ROOT, f)))
  // A file changed while esbuild read it may not be in the bundle as it is now: recorded as 0, it
  // makes this build stale from the start.
  const inputs = Object.fromEntries(tracked.map(f => {
    const { mtimeMs } = statSync(join(ROOT, f))
    return [f, before.get(f) === mtimeMs ? mtimeMs : 0]
  }))
  writeFileSync(join(tmp, INPUTS_FILE), JSON.stringify({ inputs }, null, 1) + '\n')
  // Moved in file by file, the entry and the list of inputs last: a capmesh starting meanwhile
  // runs the old build, the new one, or (the list not matching yet) the sources, never half of
  // one. Chunk names carry a hash of their content, so a process still running the old build
  // finds its lazily imported chunks; those of older builds go once they are an hour old.
  mkdirSync(outdir, { recursive: true })
  const last = ['capmesh.mjs.map', 'capmesh.mjs', INPUTS_FILE]
  const made = readdirSync(tmp)
  for (const f of [...made.filter(f => !last.includes(f)), ...last]) renameSync(join(tmp, f), join(outdir, f))
  rmSync(tmp, { recursive: true, force: true })
  for (const f of readdirSync(outdir)) {
    if (!made.includes(f) && Date.now() - statSync(join(outdir, f)).mtimeMs > 3600_000) rmSync(join(outdir, f), { force: true })
  }
  return sources.length
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { outdir: { type: 'string' }, force: { type: 'boolean' } } })
  const outdir = values.outdir != null ? resolve(values.outdir) : undefined
  if (outdir == null && values.force !== true && isBuilt(pathToFileURL(`${ROOT}/`).href)) process.exit(0)
  if (!existsSync(join(ROOT, 'node_modules/esbuild'))) {
    // An install without devDependencies (`npm install --omit=dev`): bin/capmesh.js runs the sources.
    console.log('capmesh: esbuild is not installed, not building dist/ (bin/capmesh.js runs the TypeScript sources)')
    process.exit(0)
  }
  const t0 = performance.now()
  const n = await build({ outdir })
  console.log(`capmesh: built ${relative(process.cwd(), outdir ?? join(ROOT, 'dist')) || '.'}/capmesh.mjs from ${n} source files in ${Math.round(performance.now() - t0)} ms`)
}
