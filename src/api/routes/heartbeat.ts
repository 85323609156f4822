import { ErrorBody, HeartbeatBody, HeartbeatReply } from '../schemas.ts'
import type { Api, ApiComponents } from '../types.ts'

/**
 * POST /heartbeat — liveness only, never a registry write. An unknown worker
 * gets HTTP 200 `{error: "worker_not_registered"}`: the platform's workers
 * re-register on exactly that.
 */
export function heartbeatRoute (app: Api, { core }: ApiComponents): void {
  app.post('/heartbeat', {
    schema: {
      summary: 'Heartbeat (optionally with load, or status "draining")',
      body: HeartbeatBody,
      response: { 200: HeartbeatReply, 400: ErrorBody }
    }
  }, async (req) => {
    const { worker_id: id, load, status } = req.body
    const draining = status === 'draining' ? true : status === 'ready' ? false : undefined
    if (!core.heartbeat(id, { load, draining })) return { error: 'worker_not_registered' as const, worker_id: id }
    return { status: 'acknowledged' as const, timestamp: new Date().toISOString(), state: core.liveness.get(id)?.state ?? 'healthy' }
  })
}
