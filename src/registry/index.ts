/**
 * registry — the Yjs document of workers and capabilities, its segments and
 * compaction, validation of updates, and crash-safe persistence.
 *
 * @example
 * const reg = new Registry({ controllerId: 'a' })
 * reg.on('change', changes => index.apply(changes))
 * reg.register({ worker_id: 'w1', worker_url: 'https://127.0.0.1:7001', capabilities })
 * peer.applyUpdate(reg.encodeDiff(peer.encodeStateVector()), Origin.remote)
 */
export { MissingDependencyError, Registry, Origin, ROOT, SEGMENT_KEY, compareEntries, ownerOf, validateUpdate } from './registry.ts'
export type { RegisterInput, RegistryEvents, RegistryInit, RegistryStats, ValidUpdate, WorkerChange } from './registry.ts'
export { FileStore } from './store.ts'
export type { FileStoreInit, LoadResult } from './store.ts'
export { exportState, importState, PortableState, STATE_FORMAT } from './portable.ts'
export * from './schema.ts'
