/**
 * `npm run bench:seal-apply` — what owner-signed segments add to applying a
 * heal's delta, in one process, with no network.
 *
 * Owners (registries sharing one SealDirectory) register `--entries` workers
 * between them one at a time, as `/register` does (one transaction, so one
 * reseal, each); a receiver that already held their state from before
 * (`--base` workers) gets the delta a peer would send it after a heal
 * (encodeDiff against its state vector). Timed: validate alone, then
 * validate + apply (ControllerCore: registry, view, routing index), each into
 * a fresh receiver, seals on and off alternating, `--rounds` rounds; medians.
 *
 * `--single` times instead what one receiver pays for a single
 * registration: an owner registers `--updates` workers one at a time, and a
 * receiver holding `--base` workers checks each update and then applies it
 * with that verdict, one by one, as gossip delivers them; CPU µs per update,
 * seals on and off, beside the cost of one Ed25519 verification (the floor
 * of a sealed update).
 *
 * `--compare DIR` loads the same code from another checkout (a `git worktree`
 * of an older commit, with node_modules linked) and alternates it with this
 * one round by round, so before/after come from one process on one machine
 * state.
 *
 *   npm run bench:seal-apply
 *   npm run bench:seal-apply -- --entries 5000,10000 --owners 4 --compare /tmp/old
 *   npm run bench:seal-apply -- --single --base 10000 --compare /tmp/old
 */
import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto'
import { loadavg } from 'node:os'
import { resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import * as Y from 'yjs'
import { scriptArgs } from '../args.ts'
import { ed25519VerifiesPerSecond } from './machine.ts'

const { values } = scriptArgs({
  script: 'bench:seal-apply',
  summary: `Checking and applying a heal's delta into a replica in one process, owner-signed segments
on and off (and, with --compare, against another checkout), medians of alternating rounds.
With --single: what one receiver pays per single-registration update instead.`,
  options: {
    entries: { type: 'string', value: 'N[,N]', default: '5000,10000', description: 'workers in the delta (registered one at a time)' },
    owners: { type: 'string', value: 'N', default: '1', description: 'controllers that registered them (a heal at N = 8: 4 per side)' },
    base: { type: 'string', value: 'N', default: '200', description: 'workers the receiver already holds, in the same segments' },
    rounds: { type: 'string', value: 'N', default: '7', description: 'rounds, each timing every variant once' },
    seals: { type: 'string', value: 'on|off|both', default: 'both', description: 'owner-signed segments on, off, or both alternating' },
    compare: { type: 'string', value: 'DIR', description: 'another checkout of capmesh to time beside this one, alternating' },
    single: { type: 'boolean', default: false, description: 'instead: CPU per single-registration update at one receiver, checked then applied one by one' },
    updates: { type: 'string', value: 'N', default: '2000', description: 'with --single: single-registration updates a round' }
  }
})
const SIZES = values.entries.split(',').map(Number)
const OWNERS = Number(values.owners)
const BASE = Number(values.base)
const ROUNDS = Number(values.rounds)
if (SIZES.some(n => !Number.isInteger(n) || n < 1)) throw new Error(`--entries: "${values.entries}" is not a list of positive integers`)
if (![OWNERS, ROUNDS].every(n => Number.isInteger(n) && n >= 1) || !Number.isInteger(BASE) || BASE < 0) throw new Error('--owners, --rounds: positive integers; --base: an integer ≥ 0')
if (!['on', 'off', 'both'].includes(values.seals)) throw new Error(`--seals: expected on, off or both, got ${values.seals}`)
const SEALS: boolean[] = values.seals === 'both' ? [false, true] : [values.seals === 'on']
const UPDATES = Number(values.updates)
if (!Number.isInteger(UPDATES) || UPDATES < 1) throw new Error(`--updates: "${values.updates}" is not a positive integer`)

/** What the bench needs from a checkout: its core, registry and seal directory. */
interface Code {
  label: string
  ControllerCore: typeof import('../../src/core/index.ts').ControllerCore
  SealDirectory: typeof import('../../src/registry/index.ts').SealDirectory
  Origin: typeof import('../../src/registry/index.ts').Origin
}

async function load (label: string, dir: string): Promise<Code> {
  const core = await import(resolve(dir, 'src/core/index.ts')) as typeof import('../../src/core/index.ts')
  const registry = await import(resolve(dir, 'src/registry/index.ts')) as typeof import('../../src/registry/index.ts')
  return { label, ControllerCore: core.ControllerCore, SealDirectory: registry.SealDirectory, Origin: registry.Origin }
}

const CORE_TIMES = { heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 }
const cap = (name: string): any => ({ name, verb: 'run', version: '1.0.0', input_schema: {}, output_schema: {}, requires_gpu: false, max_concurrency: 4 })

/** A heal's delta built with `code`: the receiver's state before it, and the delta. */
interface Scenario {
  code: Code
  sealed: boolean
  dir: InstanceType<Code['SealDirectory']>
  before: Uint8Array
  delta: Uint8Array
  expect: number
  /** Structs and delete ranges in the delta. */
  shape: string
}

function scenario (code: Code, sealed: boolean, entries: number): Scenario {
  const dir = new code.SealDirectory()
  const owners = Array.from({ length: OWNERS }, (_, i) => new code.ControllerCore({ controllerId: `owner-${i}`, seals: sealed ? dir.authority(`owner-${i}`) : false, ...CORE_TIMES }))
  const reg = (k: number, tag: string): void => {
    const o = owners[k % OWNERS]
    o.registry.register({ worker_id: `${tag}-${k}`, worker_url: `https://10.0.${(k >> 8) & 255}.${k & 255}:8443/`, capabilities: [cap(`cap-${k % 100}`)] })
  }
  for (let k = 0; k < BASE; k++) reg(k, 'base')
  // The receiver's state before: what every owner had written by then.
  const probe = receiver(code, dir, sealed)
  for (const o of owners) probe.registry.applyUpdate(o.registry.encodeState(), code.Origin.remote)
  const before = probe.registry.encodeState()
  for (let k = 0; k < entries; k++) reg(k, 'heal')
  // One peer holding all of the other half, as after the heal's first exchanges.
  const peer = receiver(code, dir, sealed)
  for (const o of owners) peer.registry.applyUpdate(o.registry.encodeState(), code.Origin.remote)
  const delta = peer.registry.encodeDiff(probe.registry.encodeStateVector())
  const decoded = Y.decodeUpdate(delta)
  const ranges = [...decoded.ds.clients.values()].reduce((n, r) => n + r.length, 0)
  return { code, sealed, dir, before, delta, expect: BASE + entries, shape: `${decoded.structs.length} / ${ranges}` }
}

let receivers = 0
function receiver (code: Code, dir: Scenario['dir'], sealed: boolean): InstanceType<Code['ControllerCore']> {
  const id = `probe-${receivers++}`
  // It trusts the owners' seals (it writes nothing).
  return new code.ControllerCore({ controllerId: id, seals: sealed ? dir.authority(id) : false, ...CORE_TIMES })
}

/** Wall and CPU time of `fn` (CPU: this process's user + system, so time spent waiting for a core on a loaded machine is not counted). */
function timed (fn: () => void): { wall: number, cpu: number } {
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  fn()
  const wall = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { wall, cpu: (c.user + c.system) / 1000 }
}

/** One timing: validate alone and validate + apply, each into a fresh receiver holding `before`. */
function once (s: Scenario): { validate: { wall: number, cpu: number }, apply: { wall: number, cpu: number } } {
  const a = receiver(s.code, s.dir, s.sealed)
  a.registry.applyUpdate(s.before, s.code.Origin.remote)
  const validate = timed(() => { a.registry.validate(s.delta, s.code.Origin.remote) })
  const b = receiver(s.code, s.dir, s.sealed)
  b.registry.applyUpdate(s.before, s.code.Origin.remote)
  const apply = timed(() => { b.registry.applyUpdate(s.delta, s.code.Origin.remote) })
  if (b.registry.size !== s.expect) throw new Error(`${s.code.label}: ${b.registry.size} workers after the apply, expected ${s.expect}`)
  return { validate, apply }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
const ms = (x: number): string => `${x.toFixed(1)} ms`

const codes = [await load('this checkout', resolve(import.meta.dirname, '../..'))]
if (values.compare != null) codes.push(await load(`--compare ${values.compare}`, values.compare))

/** `--single`: an owner's single-registration updates, and the receiver's state before them. */
interface Singles { code: Code, sealed: boolean, dir: Scenario['dir'], before: Uint8Array, updates: Uint8Array[] }

function singles (code: Code, sealed: boolean): Singles {
  const dir = new code.SealDirectory()
  const owner = new code.ControllerCore({ controllerId: 'owner-0', seals: sealed ? dir.authority('owner-0') : false, ...CORE_TIMES })
  const reg = (k: number, tag: string): void => {
    owner.registry.register({ worker_id: `${tag}-${k}`, worker_url: `https://10.0.${(k >> 8) & 255}.${k & 255}:8443/`, capabilities: [cap(`cap-${k % 100}`)] })
  }
  for (let k = 0; k < BASE; k++) reg(k, 'base')
  const before = owner.registry.encodeState()
  const updates: Uint8Array[] = []
  owner.registry.on('update', (u, origin) => { if (origin === code.Origin.local) updates.push(u) })
  for (let k = 0; k < UPDATES; k++) reg(k, 'single')
  return { code, sealed, dir, before, updates }
}

/** CPU µs per update at a fresh receiver holding `before`: each checked, then applied with the verdict (the gossip path). */
function onceSingles (s: Singles): number {
  const r = receiver(s.code, s.dir, s.sealed)
  r.registry.applyUpdate(s.before, s.code.Origin.remote)
  const c0 = process.cpuUsage()
  for (const u of s.updates) {
    const checked = r.replica.check(u)
    if (!checked.ok) throw new Error(`${s.code.label}: an update was refused: ${checked.reason}`)
    r.replica.apply(u, checked.token)
  }
  const c = process.cpuUsage(c0)
  if (r.registry.size !== BASE + UPDATES) throw new Error(`${s.code.label}: ${r.registry.size} workers after the updates, expected ${BASE + UPDATES}`)
  return (c.user + c.system) / UPDATES
}

/** CPU µs of one Ed25519 verification (node:crypto, as seals verify), median of 5 runs of 200. */
function verifyCpuMicros (): number {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const message = randomBytes(120)
  const signature = sign(null, message, privateKey)
  const runs: number[] = []
  for (let r = 0; r < 6; r++) {
    const c0 = process.cpuUsage()
    for (let i = 0; i < 200; i++) verify(null, message, publicKey, signature)
    const c = process.cpuUsage(c0)
    if (r > 0) runs.push((c.user + c.system) / 200)
  }
  return median(runs)
}

const verifies = ed25519VerifiesPerSecond()
console.log(`bench:seal-apply  ${new Date().toISOString()}  load ${loadavg().map(l => l.toFixed(2)).join(' ')}  ${verifies} Ed25519 verifies/s  owners ${OWNERS}, base ${BASE}, ${ROUNDS} rounds`)
if (values.single) {
  const variants = codes.flatMap(code => SEALS.map(sealed => singles(code, sealed)))
  const times = variants.map(() => [] as number[])
  for (const v of variants) onceSingles(v)
  for (let r = 0; r < ROUNDS; r++) {
    const order = variants.map((_, i) => i)
    if (r % 2 === 1) order.reverse()
    for (const i of order) times[i].push(onceSingles(variants[i]))
  }
  console.log(`\n${UPDATES} single-registration updates from one owner, each checked then applied at a receiver holding ${BASE} workers; CPU µs per update, medians of ${ROUNDS} (one Ed25519 verification: ${verifyCpuMicros().toFixed(1)} µs of CPU)`)
  console.log('| code | seals | µs per update | min–max |')
  console.log('|---|---|---|---|')
  variants.forEach((v, i) => {
    console.log(`| ${v.code.label} | ${v.sealed ? 'on' : 'off'} | ${median(times[i]).toFixed(1)} | ${Math.min(...times[i]).toFixed(1)}–${Math.max(...times[i]).toFixed(1)} |`)
  })
}
for (const entries of values.single ? [] : SIZES) {
  const scenarios = codes.flatMap(code => SEALS.map(sealed => scenario(code, sealed, entries)))
  const times = scenarios.map(() => ({ validate: [] as number[], apply: [] as number[], validateCpu: [] as number[], applyCpu: [] as number[] }))
  // Warm-up round, untimed: JIT and first-use costs land on no variant.
  for (const s of scenarios) once(s)
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate the order too, so no variant always runs right after the same one.
    const order = scenarios.map((_, i) => i)
    if (r % 2 === 1) order.reverse()
    for (const i of order) {
      const t = once(scenarios[i])
      times[i].validate.push(t.validate.wall)
      times[i].apply.push(t.apply.wall)
      times[i].validateCpu.push(t.validate.cpu)
      times[i].applyCpu.push(t.apply.cpu)
    }
  }
  console.log(`\n${entries} entries from ${OWNERS} owner(s); medians of ${ROUNDS}, CPU time (wall time)`)
  console.log('| code | seals | delta | structs / delete ranges | validate alone | validate + apply | min–max of validate + apply, CPU |')
  console.log('|---|---|---|---|---|---|---|')
  scenarios.forEach((s, i) => {
    const t = times[i]
    console.log(`| ${s.code.label} | ${s.sealed ? 'on' : 'off'} | ${(s.delta.length / 1e6).toFixed(2)} MB | ${s.shape} | ${ms(median(t.validateCpu))} (${ms(median(t.validate))}) | ${ms(median(t.applyCpu))} (${ms(median(t.apply))}) | ${ms(Math.min(...t.applyCpu))}–${ms(Math.max(...t.applyCpu))} |`)
  })
}
console.log(`\nload after: ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
