import { scenario } from '../src/sim/index.ts'

/** Bursts of register/deregister and worker deaths on both sides of a partition. */
export default scenario({
  name: 'churn-under-partition',
  description: 'Partition, then bursts of churn, kills and drains on both sides; heal.',
  defaults: { nodes: 5, workers: 200, durationMs: 24_000 },
  async run (sim) {
    await sim.at(sim.d(0.1))
    await sim.partition(sim.halves())
    const burst = Math.max(2, Math.floor(sim.init.workers / 20))
    for (const f of [0.2, 0.3, 0.4, 0.5]) {
      await sim.at(sim.d(f))
      await sim.churn(burst)
      for (const id of sim.pick(sim.workerIds('alive'), 2)) sim.killWorker(id)
    }
    for (const id of sim.pick(sim.workerIds('alive'), 2)) await sim.drainWorker(id)
    await sim.at(sim.d(0.6))
    await sim.heal()
    await sim.checkpoint('after heal')
  }
})
