/**
 * bin/capmesh.js runs dist/ (bin/build.js) only while it is a build of the
 * sources as they are, and the TypeScript sources otherwise. Each test uses a
 * small checkout of its own in a temp dir: this repository's bin/ (the real
 * launcher and build), a two-file src/cli, and this checkout's node_modules
 * (esbuild); every run is a real `node bin/capmesh.js` child process.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isBuilt } from '../../bin/built.js'

const REPO = fileURLToPath(new URL('../../', import.meta.url))

const MAIN = `import { fail } from './fail.ts'
// Which file runs, and where this module's import.meta.url says it is (the source file either way).
console.log(JSON.stringify({ file: import.meta.filename, url: import.meta.url }))
if (process.argv.includes('throw')) fail()
`
const FAIL = `interface Reason { why: string }
export function fail (): never {
  const r: Reason = { why: 'on purpose' }
  throw new Error(r.why)
}
`

let dir: string

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'capmesh-built-cli-'))
  mkdirSync(join(dir, 'bin'))
  for (const f of ['capmesh.js', 'built.js', 'build.js', 'stack-traces.js']) copyFileSync(join(REPO, 'bin', f), join(dir, 'bin', f))
  mkdirSync(join(dir, 'src/cli'), { recursive: true })
  writeFileSync(join(dir, 'src/cli/main.ts'), MAIN)
  writeFileSync(join(dir, 'src/cli/fail.ts'), FAIL)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'probe', type: 'module', private: true }))
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'))
})

afterEach(() => {
  rmSync(dir, { recursive: true, force: true })
})

const build = (...args: string[]): string => execFileSync(process.execPath, [join(dir, 'bin/build.js'), ...args], { cwd: dir, encoding: 'utf8' })

function run (args: string[] = [], env: Record<string, string> = {}): { file: string, url: string, stderr: string, status: number | null } {
  const r = spawnSync(process.execPath, [join(dir, 'bin/capmesh.js'), ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env } })
  const line = r.stdout.split('\n').find(l => l.startsWith('{'))
  if (line == null) throw new Error(`no output (status ${r.status}): ${r.stderr}`)
  return { ...(JSON.parse(line) as { file: string, url: string }), stderr: r.stderr, status: r.status }
}

describe('bin/capmesh.js', () => {
  it('runs the TypeScript sources when nothing is built', () => {
    const r = run()
    expect(r.file).toBe(join(dir, 'src/cli/main.ts'))
    expect(isBuilt(new URL(`file://${dir}/`))).toBe(false)
  })

  it('runs dist/ once built; import.meta.url still names the source file', () => {
    expect(build()).toMatch(/built dist\/capmesh\.mjs from 2 source files/)
    expect(isBuilt(new URL(`file://${dir}/`))).toBe(true)
    const r = run()
    expect(r.file).toBe(join(dir, 'dist/capmesh.mjs'))
    expect(r.url).toBe(`file://${join(dir, 'src/cli/main.ts')}`)
    // Fresh: a second `npm run build` has nothing to do.
    expect(build()).toBe('')
  })

  it('runs the sources again when a source file changes after the build, and dist/ after the next build', () => {
    build()
    const fail = join(dir, 'src/cli/fail.ts')
    const { atime, mtime } = statSync(fail)
    utimesSync(fail, atime, new Date(mtime.getTime() + 1000))
    expect(run().file).toBe(join(dir, 'src/cli/main.ts'))
    expect(build()).toMatch(/built/)
    expect(run().file).toBe(join(dir, 'dist/capmesh.mjs'))
  })

  it('runs the sources when a file the build read is gone, or when the build itself changed', () => {
    build()
    rmSync(join(dir, 'src/cli/fail.ts'))
    // The sources then fail to load: what matters is that the stale build did not run.
    const gone = spawnSync(process.execPath, [join(dir, 'bin/capmesh.js')], { cwd: dir, encoding: 'utf8' })
    expect(gone.stdout).toBe('')
    expect(gone.stderr).toContain('fail.ts')
    writeFileSync(join(dir, 'src/cli/fail.ts'), FAIL)
    build('--force')
    const b = join(dir, 'bin/build.js')
    const { atime, mtime } = statSync(b)
    utimesSync(b, atime, new Date(mtime.getTime() + 1000))
    expect(run().file).toBe(join(dir, 'src/cli/main.ts'))
  })

  it('runs the sources when CAPMESH_SOURCES=1', () => {
    build()
    expect(run([], { CAPMESH_SOURCES: '1' }).file).toBe(join(dir, 'src/cli/main.ts'))
  })

  it('names the src/ file and line in the stack trace of an error thrown by built code', () => {
    build()
    const r = run(['throw'])
    expect(r.file).toBe(join(dir, 'dist/capmesh.mjs'))
    expect(r.status).not.toBe(0)
    expect(r.stderr).toContain('Error: on purpose')
    expect(r.stderr).toContain(`at fail (${join(dir, 'src/cli/fail.ts')}:4:9)`)
  })
})

describe('this checkout', () => {
  it('is built and fresh when tests run (the global set-up builds it), so spawned controllers run dist/', () => {
    expect(isBuilt(new URL('../../', import.meta.url))).toBe(true)
  })
})
