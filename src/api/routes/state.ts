import { Readable } from 'node:stream'
import { errorCodes } from 'fastify'
import { Type } from 'typebox'
import { ErrorBody, ImportReply, PortableState } from '../../wire/index.ts'
import type { Api, ApiComponents } from '../types.ts'

const BINARY = 'application/octet-stream'

/**
 * Bytes of the binary export handed to the socket at a time. A piece of the
 * update is up to half of it (16 MB at 100,000 workers), and TLS encrypts
 * all it is given into its output buffer at once: a copy of the piece,
 * where views of this size leave back-pressure a few hundred KiB to hold.
 */
const EXPORT_WRITE_BYTES = 256 * 1024

/** `pieces` as views of at most EXPORT_WRITE_BYTES (no copies). */
function * views (pieces: readonly Uint8Array[]): Generator<Uint8Array> {
  for (const p of pieces) for (let at = 0; at < p.length; at += EXPORT_WRITE_BYTES) yield p.subarray(at, at + EXPORT_WRITE_BYTES)
}

/** The largest JSON import body for a state of `limit` bytes: the update in base64 (4/3) plus the document's other fields. */
export const jsonImportLimit = (limit: number): number => Math.ceil(limit / 3) * 4 + 4096

/**
 * GET /state/export and POST /state/import — the registry as a portable
 * document; import merges. Both speak two forms: the JSON document
 * (PortableState, the update in base64) and, as `application/octet-stream`
 * (`?format=binary` or that Accept header), the Yjs update's raw bytes. The
 * JSON export is streamed in pieces, never built as one string.
 * `importBodyLimit` is the largest state (update bytes) accepted; a JSON
 * body may be the size of that state in base64.
 */
export function stateRoutes (app: Api, { view, importBodyLimit }: ApiComponents): void {
  app.get('/state/export', {
    config: { access: [], audit: 'state_export' },
    schema: {
      summary: 'Export the registry: a PortableState document (JSON, the update in base64), or with ?format=binary or Accept: application/octet-stream the raw Yjs update',
      querystring: Type.Object({ format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('binary')])) }, { additionalProperties: false }),
      response: { 200: PortableState }
    }
  }, async (req, reply) => {
    const accept = req.headers.accept ?? ''
    void reply.header('x-capmesh-workers', String(view.registryStats().workers))
    const binary = req.query.format === 'binary' || (req.query.format == null && accept.includes(BINARY) && !accept.includes('application/json'))
    if (binary) {
      // The pieces as Yjs encoded them, one after another: the update is never joined into one buffer.
      const pieces = view.exportBinary()
      let length = 0
      for (const p of pieces) length += p.length
      void reply.header('content-length', String(length))
      return await reply.type(BINARY).send(Readable.from(views(pieces), { objectMode: false }) as unknown as PortableState)
    }
    // A stream: fastify skips the serializer, and destroys it (ending the generator) if the client goes away.
    // (The response schema documents the JSON form; a Buffer or stream is sent as it is.)
    return await reply.type('application/json; charset=utf-8').send(Readable.from(view.exportJson(), { objectMode: false }) as unknown as PortableState)
  })

  // Binary bodies only here: every other endpoint takes JSON alone.
  app.addContentTypeParser(BINARY, { parseAs: 'buffer', bodyLimit: jsonImportLimit(importBodyLimit) }, (req, body, done) => {
    if (req.routeOptions.url !== '/state/import') {
      done(new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(BINARY))
      return
    }
    if (body.length > importBodyLimit) {
      done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE())
      return
    }
    done(null, body)
  })

  app.post('/state/import', {
    config: { access: [], audit: 'state_import', trace: 'state_import' },
    bodyLimit: jsonImportLimit(importBodyLimit),
    schema: {
      summary: 'Merge an exported registry into this one: a PortableState document (application/json) or the raw Yjs update (application/octet-stream)',
      // Per media type: the JSON document is checked against its schema; raw bytes by the registry (updateOf).
      body: { content: { 'application/json': { schema: PortableState } } } as unknown as typeof PortableState,
      response: { 200: ImportReply, 400: ErrorBody }
    }
  }, async (req) => await view.importState(req.body))
}
