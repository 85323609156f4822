/**
 * `npm run bench:compaction` — DESIGN.md's bound: after 1M registrations and
 * deregistrations with 10k workers live, the encoded registry must stay
 * within 2x a fresh encoding of the live entries.
 *
 * Two replicas: the writer churns (every op is a real Registry.register or
 * .deregister, compaction runs by itself), a second replica receives every
 * update as a peer would, so the bound is checked where it matters (on a
 * peer that only ever applied updates) as well as on the writer.
 *
 *   npm run bench:compaction -- [--ops 1000000] [--live 10000]
 */
import * as Y from 'yjs'
import { Origin, Registry } from '../../src/registry/index.ts'
import { scriptArgs } from '../args.ts'

const { values } = scriptArgs({
  script: 'bench:compaction',
  summary: `The compaction bound: after --ops registrations and deregistrations with --live workers live,
the encoded registry (on the writer and on a peer that only applied its updates) must stay
within 2x a fresh encoding of the live entries.`,
  options: {
    ops: { type: 'string', value: 'N', default: '1000000', description: 'registrations + deregistrations in all' },
    live: { type: 'string', value: 'N', default: '10000', description: 'workers registered at any time' }
  }
})
const OPS = Number(values.ops)
const LIVE = Number(values.live)

const cap = { name: 'echo', verb: 'invoke', version: '1.0.0', input_schema: { type: 'object' }, output_schema: { type: 'object' }, requires_gpu: false, max_concurrency: 4 }
const writer = new Registry({ controllerId: 'a' })
const peer = new Registry({ controllerId: 'b' })
writer.on('update', (u, origin) => { if (origin === Origin.local) peer.applyUpdate(u, Origin.remote) })

const reg = (i: number): void => { writer.register({ worker_id: `worker-${i}`, worker_url: `https://10.0.${(i >> 8) & 255}.${i & 255}:8443`, capabilities: [cap] }) }

const fresh = (): number => {
  const d = new Y.Doc()
  const m = d.getMap('workers')
  d.transact(() => { for (const w of writer.workers()) m.set(w.worker_id, w) })
  return Y.encodeStateAsUpdate(d).length
}

const t0 = performance.now()
for (let i = 0; i < LIVE; i++) reg(i)
let next = LIVE
let ops = LIVE
const rows: string[] = []
const checkpoint = (): void => {
  const f = fresh()
  const w = writer.encodeState().length
  const p = peer.encodeState().length
  rows.push(`${String(ops).padStart(9)}  ${String(writer.size).padStart(6)}  ${(f / 1e6).toFixed(2).padStart(8)}  ${(w / 1e6).toFixed(2).padStart(8)}  ${(w / f).toFixed(2).padStart(6)}  ${(p / 1e6).toFixed(2).padStart(8)}  ${(p / f).toFixed(2).padStart(6)}  ${String(writer.stats().compactions).padStart(6)}`)
  console.log(rows.at(-1))
}
console.log(`registrations+deregistrations  live  fresh MB  writer MB  ratio  peer MB  ratio  compactions`)
checkpoint()
const every = Math.max(1, Math.floor(OPS / 10))
// Between the printed checkpoints, sample at a stride co-prime with the compaction period so the
// worst phase (just before a compaction) is seen too.
const SAMPLE = 4_998
let sampledWorst = 0
let cachedFresh = 0
while (ops < OPS) {
  // Deregister the oldest live worker and register a new one: the live count stays at LIVE.
  writer.deregister(`worker-${next - LIVE}`)
  reg(next++)
  ops += 2
  if (ops % every < 2) checkpoint()
  else if (ops % SAMPLE < 2) {
    if (cachedFresh === 0) cachedFresh = fresh()
    sampledWorst = Math.max(sampledWorst, writer.encodeState().length / cachedFresh, peer.encodeState().length / cachedFresh)
  }
}
checkpoint()
const secs = (performance.now() - t0) / 1000
const f = fresh()
const worst = Math.max(writer.encodeState().length / f, peer.encodeState().length / f, sampledWorst)
console.log(`\n${ops} ops in ${secs.toFixed(1)} s (${Math.round(ops / secs)} ops/s incl. peer apply); live ${writer.size}; peer live ${peer.size}`)
console.log(`worst encoded/fresh ratio over the run (checkpoints + ${Math.floor(OPS / SAMPLE)} samples): ${worst.toFixed(2)} (target <= 2.00) ${worst <= 2 ? 'MET' : 'MISSED'}`)
if (peer.size !== writer.size) console.log('WARNING: peer and writer disagree on the live set')
