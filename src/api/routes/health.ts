import type { Api, ApiComponents } from '../types.ts'

const started = Date.now()

/** GET /health — liveness of the controller itself and a summary of what it holds. */
export function healthRoute (app: Api, { core, health, sync }: ApiComponents): void {
  app.get('/health', { schema: { summary: 'Controller health' } }, async () => {
    const s = sync()
    // Self-preservation says more (it is cut off from many); behind says it cannot catch up with some.
    const status = core.selfPreservation.workers || core.selfPreservation.peers ? 'self_preservation' : s.state === 'behind' ? 'behind' : 'ok'
    return {
      status,
      controller_id: core.controllerId,
      uptime_s: Math.round((Date.now() - started) / 1000),
      workers: core.stateCounts(),
      own_workers: core.liveness.counts(),
      registry: core.registry.stats(),
      sync: s,
      ...health()
    }
  })
}

/** GET /mesh — peer id, addresses, connected controllers, sync state with each, owner liveness. */
export function meshRoute (app: Api, { mesh }: ApiComponents): void {
  app.get('/mesh', { schema: { summary: 'Mesh status' } }, async () => mesh())
}
