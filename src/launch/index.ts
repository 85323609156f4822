/**
 * launch — capmesh processes started as children (controllers, demo
 * workers) and the control channel a parent drives them with: what
 * `npm start`, `capmesh local`, the simulation harness, tests and
 * benchmarks share. No child outlives its launcher.
 *
 * @example
 * const c = await spawnController({ id: 'a', args: ['--id', 'a', '--https-port', '0', '--p2p-port', '0'], ipc: true })
 * await c.control({ cmd: 'block', peers: [otherPeerId] })
 * await c.stop()
 */
export { CLI, spawnController, spawnWorker } from './spawn.ts'
export type { ChildController, ChildWorker, SpawnInit } from './spawn.ts'
export { acceptSimControl } from './control.ts'
export type { SimCommand, SimEvent, SimReply } from './control.ts'
