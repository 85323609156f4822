/**
 * api — the controller's HTTPS surface (fastify): one file per endpoint in
 * `routes/`, schemas in `schemas.ts`, error mapping in `plugins/errors.ts`.
 *
 * @example
 * const app = await buildApi({ view, tls, bodyLimit: 262144, importBodyLimit: 64 << 20 })
 * await app.listen({ host: '127.0.0.1', port: 9000 })
 */
export { buildApi } from './server.ts'
export type { ApiInit } from './server.ts'
export type { Api, ApiComponents } from './types.ts'
