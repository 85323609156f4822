/**
 * client — the route client SDK (`capmesh/client`): a local copy of what a
 * controller routes by, kept current through its `GET /watch` stream,
 * answering `route()` in-process with the same selection code as `/route`,
 * failing over between controllers and resuming its stream, with
 * empty-push protection. Loads no libp2p, Yjs or fastify.
 *
 * @example
 * const routes = routeClient({
 *   controllers: ['https://127.0.0.1:9000', 'https://127.0.0.1:9001'],
 *   tls: { ca: readFileSync('.capmesh/tls/ca.pem', 'utf8'), cert: readFileSync('.capmesh/tls/client.pem', 'utf8'), key: readFileSync('.capmesh/tls/client-key.pem', 'utf8') },
 *   capabilities: ['upper']
 * })
 * await routes.start()
 * const { worker_url } = routes.route({ verb: 'invoke', capability: 'upper' })
 */
export { RouteClient, routeClient } from './route-client.ts'
export type { RouteClientCounters, RouteClientEvents, RouteClientInit } from './route-client.ts'
export { LocalView } from './local-view.ts'
export type { CapabilityKey, LocalViewEvents, LocalViewInit } from './local-view.ts'
