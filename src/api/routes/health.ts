import { HealthReply, MeshReply } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** GET /health — the controller itself: status, what it holds, its mesh, anti-entropy, its store. */
export function healthRoute (app: Api, { view }: ApiComponents): void {
  app.get('/health', { schema: { summary: 'Controller health', response: { 200: HealthReply } } }, () => view.health())
}

/** GET /mesh — peer id, addresses, connected peers, anti-entropy with each, what each other controller last said. */
export function meshRoute (app: Api, { view }: ApiComponents): void {
  app.get('/mesh', { schema: { summary: 'Mesh status', response: { 200: MeshReply } } }, () => view.mesh())
}
