/**
 * core — a controller's in-memory heart (registry, liveness, membership,
 * routing, wired together, no I/O) and the one typed view of a controller
 * the API, metrics, CLI and simulations see.
 *
 * @example
 * const core = new ControllerCore({ controllerId: 'a', heartbeatIntervalMs: 30_000, unhealthyAfterMs: 60_000, staleAfterMs: 120_000, digestIntervalMs: 1000, digestKeepaliveMs: 15_000 })
 * core.register({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7001', capabilities })
 * core.route({ verb: 'invoke', capability: 'echo' })
 */
export { ControllerCore } from './core.ts'
export type { ControllerCoreInit, CoreEvents } from './core.ts'
export { ChangeLog, Watcher } from './changes.ts'
export type { ChangeLogInit, ChangeLogPosition, WatchCursor, WatchFilter, WatchMessage } from './changes.ts'
export { controllerView } from './view.ts'
export type { ControllerView, NodeFacts, ViewEvents } from './view.ts'
