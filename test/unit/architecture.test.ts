/**
 * The layering docs/architecture.md draws is the one the imports follow:
 * every folder of src/ has a layer there, and a file imports (type imports
 * included) only from folders of lower layers. libp2p stays in gossip/,
 * Yjs in registry/, fastify in api/ (and the demo worker's own server), and
 * the worker SDK loads none of them (and of OpenTelemetry only its API).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const ROOT = resolve(import.meta.dirname, '../..')
const SRC = join(ROOT, 'src')

/** `| L | folder | ... |` rows between the layer markers of docs/architecture.md. */
function layers (): Map<string, number> {
  const doc = readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8')
  const block = /<!-- layers:begin -->\n([\s\S]*?)\n<!-- layers:end -->/.exec(doc)?.[1] ?? ''
  const out = new Map<string, number>()
  for (const line of block.split('\n')) {
    const m = /^\|\s*(\d+)\s*\|([^|]+)\|/.exec(line)
    if (m == null) continue
    for (const name of m[2].split(',').map(s => s.trim().replace(/`/g, '').replace(/\/$/, '').replace(/\.ts$/, ''))) out.set(name, Number(m[1]))
  }
  return out
}

function files (dir: string): string[] {
  return readdirSync(dir).flatMap(f => {
    const p = join(dir, f)
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : []
  })
}

interface Import { spec: string, typeOnly: boolean }

/** Every module a file imports or re-exports (static and dynamic), and whether only for types. */
function importsOf (file: string): Import[] {
  const text = readFileSync(file, 'utf8')
  const out: Import[] = []
  for (const m of text.matchAll(/^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'/gm)) out.push({ spec: m[3], typeOnly: m[2] != null })
  for (const m of text.matchAll(/^\s*import\s+'([^']+)'/gm)) out.push({ spec: m[1], typeOnly: false })
  for (const m of text.matchAll(/import\('([^']+)'\)/g)) out.push({ spec: m[1], typeOnly: false })
  return out
}

/** The top-level unit of src/ a file belongs to: its folder, or its own name for files at the root. */
const unitOf = (file: string): string => relative(SRC, file).split('/')[0].replace(/\.ts$/, '')

const LIBP2P = /^(libp2p|@libp2p\/|@chainsafe\/)/
const YJS = /^(yjs|lib0)(\/|$)/
const FASTIFY = /^(fastify|@fastify\/)/

describe('architecture', () => {
  const table = layers()
  const all = files(SRC)

  it('docs/architecture.md gives every folder and root file of src/ a layer', () => {
    const units = [...new Set(all.map(unitOf))].sort()
    expect(units.filter(u => !table.has(u)), 'units without a layer in the drawing').toEqual([])
    expect([...table.keys()].filter(u => !units.includes(u)), 'layers naming what src/ does not have').toEqual([])
  })

  it('no file imports from its own layer or above (type imports included)', () => {
    const wrong: string[] = []
    for (const file of all) {
      const from = unitOf(file)
      for (const { spec } of importsOf(file)) {
        if (!spec.startsWith('.')) continue
        const to = unitOf(resolve(dirname(file), spec))
        if (to === from) continue
        if ((table.get(to) ?? Infinity) >= (table.get(from) ?? -Infinity)) wrong.push(`${relative(SRC, file)} → ${to} (layer ${table.get(from)} → ${table.get(to)})`)
      }
    }
    expect(wrong).toEqual([])
  })

  it('libp2p is imported only in gossip/, Yjs only in registry/, fastify only in api/ and the demo worker', () => {
    const wrong: string[] = []
    for (const file of all) {
      const where = relative(SRC, file)
      for (const { spec, typeOnly } of importsOf(file)) {
        if (LIBP2P.test(spec) && !where.startsWith('gossip/')) wrong.push(`${where}: ${spec}`)
        if (YJS.test(spec) && !where.startsWith('registry/')) wrong.push(`${where}: ${spec}`)
        if (FASTIFY.test(spec) && !where.startsWith('api/') && where !== 'cli/worker.ts' && !typeOnly) wrong.push(`${where}: ${spec}`)
      }
    }
    expect(wrong).toEqual([])
  })

  /** Every module reachable from `entry` by runtime imports (type imports are erased), and the packages they import. */
  const closure = (entry: string): { files: string[], packages: string[] } => {
    const seen = new Set<string>()
    const packages = new Set<string>()
    const visit = (file: string): void => {
      if (seen.has(file)) return
      seen.add(file)
      for (const { spec, typeOnly } of importsOf(file)) {
        if (typeOnly) continue
        if (spec.startsWith('.')) visit(resolve(dirname(file), spec))
        else packages.add(spec)
      }
    }
    visit(join(ROOT, entry))
    return { files: [...seen].map(f => relative(SRC, f)), packages: [...packages] }
  }
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, string> }

  it('the worker SDK (capmesh/agent) loads neither libp2p, Yjs nor fastify, and of OpenTelemetry only @opentelemetry/api', () => {
    expect(pkg.exports['./agent']).toBe('./src/agent/index.ts')
    const { files, packages } = closure(pkg.exports['./agent'])
    expect(packages.filter(p => LIBP2P.test(p) || YJS.test(p) || FASTIFY.test(p))).toEqual([])
    // OpenTelemetry only as its API (tiny, a no-op without an SDK): the application chooses the SDK.
    expect(packages.filter(p => p.startsWith('@opentelemetry/') && p !== '@opentelemetry/api')).toEqual([])
    expect(files.filter(f => !/^(agent|utils|wire)\/|^(constants|errors)\.ts$/.test(f))).toEqual([])
  })

  it('the route client SDK (capmesh/client) loads neither libp2p, Yjs nor fastify: routing\'s Router and nothing else of the controller', () => {
    expect(pkg.exports['./client']).toBe('./src/client/index.ts')
    const { files, packages } = closure(pkg.exports['./client'])
    expect(packages.filter(p => LIBP2P.test(p) || YJS.test(p) || FASTIFY.test(p))).toEqual([])
    expect(files.filter(f => !/^(client|routing|utils|wire)\/|^(constants|errors)\.ts$/.test(f))).toEqual([])
    // The same selection code as /route, not a copy.
    expect(files).toContain('routing/router.ts')
  })
})
