/**
 * The registry as a portable JSON document (`GET /state/export`,
 * `capmesh state export`), and its import. The payload is a whole-document
 * Yjs update, so importing *merges*: idempotent, order-independent, and
 * never removes what the importing controller already has.
 */
import { Compile } from 'typebox/compile'
import { InvalidStateError } from '../errors.ts'
import { PortableState, STATE_FORMAT } from '../wire/api.ts'
import { Origin, type Registry } from './registry.ts'

export { PortableState, STATE_FORMAT }

const check = Compile(PortableState)

export function exportState (registry: Registry): PortableState {
  return {
    format: STATE_FORMAT,
    version: 1,
    controller_id: registry.controllerId,
    exported_at: new Date().toISOString(),
    workers: registry.size,
    update: Buffer.from(registry.encodeState()).toString('base64')
  }
}

/**
 * Merges a portable document into `registry`. Throws InvalidStateError (and
 * changes nothing) if the document or the update inside it is malformed.
 * Returns how many workers the registry gained.
 */
export function importState (registry: Registry, doc: unknown): { added: number, workers: number } {
  if (!check.Check(doc)) {
    const first = check.Errors(doc)[0]
    throw new InvalidStateError(`not a capmesh state document: ${first != null ? `${first.instancePath || '/'} ${first.message}` : 'invalid'}`)
  }
  const before = registry.size
  registry.applyUpdate(new Uint8Array(Buffer.from(doc.update, 'base64')), Origin.import)
  return { added: registry.size - before, workers: registry.size }
}
