/**
 * Scenarios: small files in `simulations/` that say what happens when.
 *
 * @example
 * export default scenario({
 *   name: 'partition-heal',
 *   description: 'Two halves, writes on both sides, heal.',
 *   defaults: { nodes: 5, workers: 200, durationMs: 20_000 },
 *   async run (sim) {
 *     await sim.at(sim.d(0.15)); await sim.partition(sim.halves())
 *     await sim.at(sim.d(0.6)); await sim.heal(); await sim.checkpoint('after heal')
 *   }
 * })
 */
import { existsSync } from 'node:fs'
import { isAbsolute, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError } from '../errors.ts'
import type { Simulation } from './harness.ts'

export interface ScenarioDefaults {
  nodes: number
  workers: number
  durationMs: number
}

export interface SimApi extends Simulation {
  /** A time `fraction` of the way through the planned duration (ms). */
  d: (fraction: number) => number
  /** The nodes split in two halves: [[0..k-1], [k..n-1]]. */
  halves: () => number[][]
  /** The planned duration (ms). */
  durationMs: number
}

export interface Scenario {
  name: string
  description: string
  defaults: ScenarioDefaults
  /** Drives the faults. The harness heals everything and takes a final checkpoint afterwards. */
  run: (sim: SimApi) => Promise<void>
}

export function scenario (s: Scenario): Scenario {
  return s
}

/** Loads `simulations/<name>.ts` (or a path) and checks it is a scenario. */
export async function loadScenario (nameOrPath: string, dir = 'simulations'): Promise<Scenario> {
  const candidates = isAbsolute(nameOrPath) || nameOrPath.includes('/') ? [resolve(nameOrPath)] : [resolve(join(dir, `${nameOrPath}.ts`)), resolve(join(dir, nameOrPath))]
  const file = candidates.find(f => existsSync(f) && f.endsWith('.ts'))
  if (file == null) throw new ConfigError(`no scenario "${nameOrPath}" (looked for ${candidates.join(', ')})`)
  const mod = await import(pathToFileURL(file).href) as { default?: Scenario }
  const s = mod.default
  if (s == null || typeof s.run !== 'function' || typeof s.name !== 'string') throw new ConfigError(`${file} does not export a default scenario({ name, run, ... })`)
  return s
}
