/**
 * controller — the composition root: builds and runs one controller (data
 * dir, store, TLS, mesh key, mesh, API, metrics, timers) around the core.
 *
 * @example
 * const c = await startController({ config: resolveControllerConfig(localPreset({ id: 'a', dataDir })) })
 * console.log(c.url, c.ca.path)
 * await c.stop()
 */
export { Controller, startController } from './controller.ts'
export type { ControllerInit } from './controller.ts'
