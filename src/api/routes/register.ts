import { ErrorBody, RegisterBatchBody, RegisterBatchReply, RegisterBody, RegisterReply } from '../../wire/index.ts'
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
  }, (req) => view.register(req.body, req.identity))

  /**
   * POST /register/batch — several workers in one request, each decided as
   * /register decides it, the registered ones written in one registry
   * transaction (one seal). A malformed batch is refused whole (400);
   * otherwise 200 with a result per worker (registered or refused).
   */
  app.post('/register/batch', {
    config: { access: ['worker'], audit: 'register', trace: 'register' },
    schema: {
      summary: 'Register several workers in one request (one result each)',
      body: RegisterBatchBody,
      response: { 200: RegisterBatchReply, 400: ErrorBody }
    }
  }, (req) => {
    const reply = view.registerBatch(req.body.workers, req.identity)
    req.auditItems = reply.results.map(r => ({ worker_id: r.worker_id, outcome: r.status === 'registered' ? 'ok' : (r.reason ?? r.code ?? 'refused') }))
    return reply
  })
}
