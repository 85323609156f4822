import { scenario } from '../src/sim/index.ts'

/** Two halves; registrations and deregistrations on both sides while cut; heal; everyone must agree. */
export default scenario({
  name: 'partition-heal',
  description: 'Split the mesh in two halves, churn workers on both sides, heal.',
  defaults: { nodes: 5, workers: 200, durationMs: 20_000 },
  async run (sim) {
    await sim.checkpoint('start')
    await sim.at(sim.d(0.15))
    await sim.partition(sim.halves())
    await sim.at(sim.d(0.35))
    await sim.churn(Math.max(2, Math.floor(sim.init.workers / 20)))
    await sim.at(sim.d(0.6))
    await sim.heal()
    await sim.checkpoint('after heal')
  }
})
