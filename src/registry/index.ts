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
export { Registry, Origin, compareEntries } from './registry.ts'
export type { RegisterInput, RegistryEvents, RegistryInit, RegistryStats, WorkerChange } from './registry.ts'
export { ROOT, SEGMENT_KEY, ownerOf } from './keys.ts'
export { MissingDependencyError, validateUpdate } from './validate.ts'
export type { SealContext, ValidUpdate } from './validate.ts'
export { SEAL_KEY, SEAL_VERSION, SealDirectory, SegmentDigest, UnsignedWriteError, decodeSeal, encodeSeal, entryLeaf, makeSeal, sealMessage } from './seal.ts'
export type { Seal, SealAuthority } from './seal.ts'
export { registryReplica } from './replica.ts'
export { encodeUpdatePieces, piecesLength } from './chunks.ts'
export { FileStore } from './store.ts'
export type { FileStoreInit, LoadResult } from './store.ts'
export { base64Pieces, exportBinary, exportJson, exportState, importState, importStateInSlices, PortableState, STATE_FORMAT, updateOf } from './portable.ts'
export * from './schema.ts'
