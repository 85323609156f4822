import { HealthReply, MeshReply } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** GET /health — the controller itself: status, what it holds, its mesh, anti-entropy, its store. */
export function healthRoute (app: Api, { view, healthOpen }: ApiComponents): void {
  // Open by default: load balancers and the agent's closeness probes ask it before they hold an identity.
  // Required (--health-auth required): any identity, workers included: a worker agent ranks controllers
  // (and honours its affinity) by /health round trips made with its own identity.
  app.get('/health', { config: { access: healthOpen ? 'open' : ['worker', 'client', 'metrics'] }, schema: { summary: 'Controller health', response: { 200: HealthReply } } }, async () => view.health())
}

/** GET /mesh — peer id, addresses, connected peers, anti-entropy with each, what each other controller last said. */
export function meshRoute (app: Api, { view }: ApiComponents): void {
  app.get('/mesh', { config: { access: [] }, schema: { summary: 'Mesh status', response: { 200: MeshReply } } }, async () => view.mesh())
}
