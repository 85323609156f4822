import { ErrorBody, RegisterBody, RegisterReply } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** POST /register — attach a worker here; routable at once. */
export function registerRoute (app: Api, { view }: ApiComponents): void {
  app.post('/register', {
    config: { access: ['worker'], audit: 'register', trace: 'register' },
    schema: {
      summary: 'Register a worker and its capabilities',
      body: RegisterBody,
      response: { 200: RegisterReply, 400: ErrorBody }
    }
  }, async (req) => view.register(req.body, req.identity))
}
