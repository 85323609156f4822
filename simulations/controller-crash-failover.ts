import { scenario } from '../src/sim/index.ts'

/** kill -9 of a controller: its workers fail over; the survivors route them; the restarted one catches up. */
export default scenario({
  name: 'controller-crash-failover',
  description: 'Crash one controller, let its workers fail over, restart it on its data dir.',
  defaults: { nodes: 5, workers: 200, durationMs: 20_000 },
  async run (sim) {
    await sim.at(sim.d(0.15))
    await sim.crash(0)
    await sim.at(sim.d(0.45))
    await sim.checkpoint('after failover')
    await sim.restart(0, { keepData: true })
    await sim.checkpoint('after restart')
  }
})
