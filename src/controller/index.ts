/**
 * controller — one controller node: the in-memory core (registry +
 * liveness + routing) and the running process around it (data dir, TLS,
 * HTTPS, timers).
 *
 * @example
 * const c = await startController({ config: resolveControllerConfig(localPreset({ id: 'a', dataDir })) })
 * console.log(c.url, c.ca.path)
 * await c.stop()
 */
export { Controller, startController } from './controller.ts'
export type { ControllerInit } from './controller.ts'
export { ControllerCore } from './core.ts'
export type { ControllerCoreInit, CoreEvents, WorkerView } from './core.ts'
