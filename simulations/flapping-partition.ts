import { scenario } from '../src/sim/index.ts'

/** A link that keeps going down and up, faster than the stale window. */
export default scenario({
  name: 'flapping-partition',
  description: 'Partition and heal the halves repeatedly, faster than the stale window.',
  defaults: { nodes: 5, workers: 200, durationMs: 24_000 },
  async run (sim) {
    const flap = Math.max(500, Math.floor(sim.timing.staleMs / 2))
    let t = sim.d(0.1)
    while (t + 2 * flap < sim.d(0.7)) {
      await sim.at(t)
      await sim.partition(sim.halves())
      await sim.at(t + flap)
      await sim.heal()
      t += 2 * flap
    }
    await sim.checkpoint('after flapping')
  }
})
