import { scenario } from '../src/sim/index.ts'

/** kill -9 of a controller: its workers fail over; the survivors route them; the restarted one catches up. */
export default scenario({
  name: 'controller-crash-failover',
  description: 'Crash one controller, let its workers fail over, restart it on its data dir.',
  defaults: { nodes: 5, workers: 200, durationMs: 20_000 },
  async run (sim) {
    await sim.at(sim.d(0.15))
    await sim.crash(0)
    // Timed from the crash: how long its workers took to fail over and the mesh to agree.
    await sim.checkpoint('after failover', { sinceLastFault: true })
    await sim.at(sim.d(0.45))
    await sim.restart(0, { keepData: true })
    await sim.checkpoint('after restart')
  }
})
