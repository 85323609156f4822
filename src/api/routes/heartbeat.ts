import { ErrorBody, HeartbeatBody, HeartbeatReply, SupersededBody } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/**
 * POST /heartbeat — liveness only, never a registry write. An unknown worker
 * gets HTTP 200 `{error: "worker_not_registered"}`: the platform's workers
 * re-register on exactly that. A heartbeat from an older attachment (its
 * `incarnation` below the registry's, the worker now attached elsewhere)
 * gets 409 superseded and changes nothing.
 */
export function heartbeatRoute (app: Api, { view }: ApiComponents): void {
  app.post('/heartbeat', {
    config: { access: ['worker'], trace: 'heartbeat' },
    schema: {
      summary: 'Heartbeat (optionally with load, or status "draining")',
      body: HeartbeatBody,
      response: { 200: HeartbeatReply, 400: ErrorBody, 409: SupersededBody }
    }
  }, async (req) => view.heartbeat(req.body, req.identity))
}
