import { ErrorBody, RegisterBody, RegisterReply } from '../schemas.ts'
import type { Api, ApiComponents } from '../types.ts'

/** POST /register — attach a worker here; routable at once. */
export function registerRoute (app: Api, { core }: ApiComponents): void {
  app.post('/register', {
    schema: {
      summary: 'Register a worker and its capabilities',
      body: RegisterBody,
      response: { 200: RegisterReply, 400: ErrorBody }
    }
  }, async (req) => {
    const rec = core.register(req.body)
    return { status: 'registered' as const, worker_id: rec.worker_id, incarnation: rec.incarnation, controller_id: rec.owner }
  })
}
