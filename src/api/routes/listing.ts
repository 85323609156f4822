import { DEFAULT_WORKERS_PAGE, MAX_WORKERS_PAGE } from '../../constants.ts'
import { ValidationError } from '../../errors.ts'
import { CapabilitiesReply, ErrorBody, WorkersQuerystring, WorkersReply } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** GET /capabilities and GET /workers — what the registry holds, with health. */
export function listingRoutes (app: Api, { view }: ApiComponents): void {
  app.get('/capabilities', { schema: { summary: 'Capabilities on offer', response: { 200: CapabilitiesReply } } }, () => {
    return { capabilities: view.capabilities() }
  })

  app.get('/workers', {
    schema: { summary: 'Workers with state and last heartbeat', querystring: WorkersQuerystring, response: { 200: WorkersReply, 400: ErrorBody } }
  }, (req) => {
    const limit = req.query.limit != null ? Number(req.query.limit) : DEFAULT_WORKERS_PAGE
    if (limit > MAX_WORKERS_PAGE) throw new ValidationError(`querystring/limit must be ≤ ${MAX_WORKERS_PAGE}`, [{ field: 'querystring/limit', message: `must be <= ${MAX_WORKERS_PAGE}` }])
    return view.workers({ state: req.query.state, capability: req.query.capability, limit, offset: Number(req.query.offset ?? 0) })
  })
}
