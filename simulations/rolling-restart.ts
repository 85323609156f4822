import { scenario } from '../src/sim/index.ts'

/** Every controller restarted in turn (odd ones with an empty data dir), as in a deploy. */
export default scenario({
  name: 'rolling-restart',
  description: 'Restart each controller in turn; every other one loses its data dir.',
  defaults: { nodes: 5, workers: 200, durationMs: 30_000 },
  async run (sim) {
    const step = 0.8 / sim.size
    for (let i = 0; i < sim.size; i++) {
      await sim.at(sim.d(0.1 + i * step))
      await sim.restart(i, { keepData: i % 2 === 0 })
      await sim.checkpoint(`after restarting ${sim.nodes[i].id}`)
    }
  }
})
