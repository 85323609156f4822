import { ErrorBody, HeartbeatBody, HeartbeatReply, SupersededBody } from '../schemas.ts'
import type { Api, ApiComponents } from '../types.ts'

/**
 * POST /heartbeat — liveness only, never a registry write. An unknown worker
 * gets HTTP 200 `{error: "worker_not_registered"}`: the platform's workers
 * re-register on exactly that. A heartbeat from an older attachment (its
 * `incarnation` below the registry's, the worker now attached elsewhere)
 * gets 409 superseded and changes nothing.
 */
export function heartbeatRoute (app: Api, { core }: ApiComponents): void {
  app.post('/heartbeat', {
    schema: {
      summary: 'Heartbeat (optionally with load, or status "draining")',
      body: HeartbeatBody,
      response: { 200: HeartbeatReply, 400: ErrorBody, 409: SupersededBody }
    }
  }, async (req) => {
    const { worker_id: id, load, status, incarnation } = req.body
    const draining = status === 'draining' ? true : status === 'ready' ? false : undefined
    if (!core.heartbeat(id, { load, draining, incarnation })) return { error: 'worker_not_registered' as const, worker_id: id }
    return { status: 'acknowledged' as const, timestamp: new Date().toISOString(), state: core.liveness.get(id)?.state ?? 'healthy' }
  })
}
