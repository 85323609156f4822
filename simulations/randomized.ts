import { scenario } from '../src/sim/index.ts'

/**
 * A seeded schedule of random faults, Jepsen-style: partitions (halves,
 * random splits, isolations), crashes and restarts, slow links, message
 * loss, worker kills, drains and churn. Same seed, same schedule. Every fault
 * is repaired before the next checkpoint so the mesh must converge.
 */
export default scenario({
  name: 'randomized',
  description: 'Seeded random faults (partitions, crashes, restarts, slow links, loss, worker faults), repaired in rounds.',
  defaults: { nodes: 5, workers: 200, durationMs: 30_000 },
  async run (sim) {
    const rounds = Math.max(1, Math.floor(sim.durationMs / 10_000))
    const span = (sim.d(0.9) - sim.d(0.05)) / rounds
    for (let r = 0; r < rounds; r++) {
      const t0 = sim.d(0.05) + r * span
      await sim.at(t0)
      const kind = Math.floor(sim.rng() * 5)
      const node = Math.floor(sim.rng() * sim.size)
      if (kind === 0) {
        await sim.partition(sim.halves())
      } else if (kind === 1) {
        // A random split into two non-empty groups.
        const ids = sim.pick(sim.nodes.map(n => n.index), sim.size)
        const k = 1 + Math.floor(sim.rng() * (sim.size - 1))
        await sim.partition([ids.slice(0, k), ids.slice(k)])
      } else if (kind === 2) {
        await sim.isolate(node)
      } else if (kind === 3) {
        await sim.crash(node)
      } else {
        await sim.slow(node, 50 + Math.floor(sim.rng() * 150))
        await sim.loss(0.1 + sim.rng() * 0.3)
      }
      await sim.at(t0 + span * 0.3)
      await sim.churn(Math.max(1, Math.floor(sim.init.workers / 50)))
      for (const id of sim.pick(sim.workerIds('alive'), 1 + Math.floor(sim.rng() * 3))) sim.killWorker(id)
      if (sim.rng() < 0.5) for (const id of sim.pick(sim.workerIds('alive'), 1)) await sim.drainWorker(id)
      await sim.at(t0 + span * 0.55)
      if (kind === 3) await sim.restart(node, { keepData: sim.rng() < 0.5 })
      if (kind <= 2) await sim.heal()
      if (kind === 4) await sim.clearNetworkFaults()
      await sim.checkpoint(`round ${r + 1}`)
    }
  }
})
