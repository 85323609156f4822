import { scenario } from '../src/sim/index.ts'

/**
 * Faults only a real network has (`--net netns`): a controller that crashes
 * while its host stays up (connections refused), one whose link goes down
 * (packets vanish: connections hang until their own timeouts), a one-way
 * partition, and a flapping link. Each checkpoint right after a fault times
 * how long the workers took to fail over and the mesh to agree.
 */
export default scenario({
  name: 'black-hole',
  description: 'Crash (refused) vs link down (black-holed) failover, a one-way partition, a flapping link. Needs --net netns.',
  defaults: { nodes: 5, workers: 200, durationMs: 40_000 },
  async run (sim) {
    await sim.checkpoint('start')
    // Refused: the process is gone, its host answers every connection with a reset.
    await sim.at(sim.d(0.05))
    await sim.crash(1)
    await sim.checkpoint('failover from a crashed controller (refused)', { sinceLastFault: true })
    await sim.restart(1, { keepData: true })
    await sim.checkpoint('after restart')
    // Black-holed: its link goes down, nothing answers.
    await sim.at(sim.d(0.3))
    await sim.linkDown(0)
    await sim.checkpoint('failover from a black-holed controller (dropped)', { sinceLastFault: true })
    await sim.linkUp(0)
    await sim.checkpoint('after its link is back')
    // One way: what the last controller's place sends to the others is lost; what they send arrives.
    await sim.at(sim.d(0.55))
    const last = sim.size - 1
    await sim.oneWay([last], sim.nodes.map(n => n.index).filter(i => i !== last))
    await sim.at(sim.d(0.7))
    await sim.heal()
    await sim.checkpoint('after a one-way partition')
    // A flapping link: down and up three times.
    await sim.flap(last, { times: 3, periodMs: Math.max(1000, Math.round(sim.durationMs / 40)) })
    await sim.checkpoint('after a flapping link')
  }
})
