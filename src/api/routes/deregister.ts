import { DrainBody, ErrorBody, SupersededBody, WorkerIdBody } from '../schemas.ts'
import { Type } from 'typebox'
import type { Api, ApiComponents } from '../types.ts'

/**
 * POST /deregister — remove a worker (idempotent). POST /drain — stop routing
 * to it, keep it listed; like a heartbeat, a drain from an older attachment
 * of a worker now attached elsewhere gets 409 superseded and changes nothing.
 */
export function deregisterRoute (app: Api, { core }: ApiComponents): void {
  app.post('/deregister', {
    schema: {
      summary: 'Deregister a worker (idempotent)',
      body: WorkerIdBody,
      response: { 200: Type.Object({ status: Type.Literal('deregistered'), worker_id: Type.String(), known: Type.Boolean() }), 400: ErrorBody }
    }
  }, async (req) => {
    const known = core.deregister(req.body.worker_id)
    return { status: 'deregistered' as const, worker_id: req.body.worker_id, known }
  })

  app.post('/drain', {
    schema: {
      summary: 'Mark a worker draining: listed, not routed to',
      body: DrainBody,
      response: {
        200: Type.Union([
          Type.Object({ status: Type.Literal('draining'), worker_id: Type.String() }),
          Type.Object({ error: Type.Literal('worker_not_registered'), worker_id: Type.String() })
        ]),
        400: ErrorBody,
        409: SupersededBody
      }
    }
  }, async (req) => {
    const id = req.body.worker_id
    if (!core.drain(id, req.body.incarnation)) return { error: 'worker_not_registered' as const, worker_id: id }
    return { status: 'draining' as const, worker_id: id }
  })
}
