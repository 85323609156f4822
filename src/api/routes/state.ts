import { ErrorBody, ImportReply, PortableState } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

/** GET /state/export and POST /state/import — the registry as a portable document; import merges. */
export function stateRoutes (app: Api, { view, importBodyLimit }: ApiComponents): void {
  app.get('/state/export', { config: { access: [], audit: 'state_export' }, schema: { summary: 'Export the registry (a Yjs update, base64)', response: { 200: PortableState } } }, async () => view.exportState())

  app.post('/state/import', {
    config: { access: [], audit: 'state_import', trace: 'state_import' },
    bodyLimit: importBodyLimit,
    schema: { summary: 'Merge an exported registry into this one', body: PortableState, response: { 200: ImportReply, 400: ErrorBody } }
  }, async (req) => view.importState(req.body))
}
