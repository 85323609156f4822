import { scenario } from '../src/sim/index.ts'

/** One controller (and the workers at its place) cut off from the majority, then back. */
export default scenario({
  name: 'minority-isolation',
  description: 'Isolate one controller with its workers; both sides keep routing; heal.',
  defaults: { nodes: 5, workers: 200, durationMs: 20_000 },
  async run (sim) {
    await sim.at(sim.d(0.15))
    await sim.isolate(sim.size - 1)
    await sim.at(sim.d(0.3))
    await sim.churn(Math.max(2, Math.floor(sim.init.workers / 40)))
    await sim.at(sim.d(0.6))
    await sim.heal()
    await sim.checkpoint('after heal')
  }
})
