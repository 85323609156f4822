import { DeregisterReply, DrainBody, DrainReply, ErrorBody, SupersededBody, WorkerIdBody } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/**
 * POST /deregister — remove a worker (idempotent). POST /drain — stop routing
 * to it, keep it listed; like a heartbeat, a drain from an older attachment
 * of a worker now attached elsewhere gets 409 superseded and changes nothing.
 */
export function deregisterRoute (app: Api, { view }: ApiComponents): void {
  app.post('/deregister', {
    config: { access: ['worker'], audit: 'deregister', trace: 'deregister' },
    schema: {
      summary: 'Deregister a worker (idempotent)',
      body: WorkerIdBody,
      response: { 200: DeregisterReply, 400: ErrorBody }
    }
  }, async (req) => view.deregister(req.body.worker_id, req.identity))

  app.post('/drain', {
    config: { access: ['worker'], audit: 'drain', trace: 'drain' },
    schema: {
      summary: 'Mark a worker draining: listed, not routed to',
      body: DrainBody,
      response: { 200: DrainReply, 400: ErrorBody, 409: SupersededBody }
    }
  }, async (req) => view.drain(req.body.worker_id, req.body.incarnation, req.identity))
}
