/**
 * The registry as gossip sees it (gossip/replica.ts): state vectors, deltas,
 * a check that does not apply, a checked apply, merges, and the local
 * updates to publish. Everything Yjs stays on this side of the seam.
 */
import * as Y from 'yjs'
import type { CheckResult, Replica } from '../gossip/replica.ts'
import { Origin, type Registry } from './registry.ts'
import { MissingDependencyError, type ValidUpdate } from './validate.ts'

/** Updates worth publishing: this controller's own writes, imports, and entries it put back. */
const PUBLISHED = new Set<Origin>([Origin.local, Origin.import, Origin.restore])

export function registryReplica (registry: Registry): Replica {
  return {
    stateVector: () => registry.encodeStateVector(),
    checkStateVector: sv => { registry.checkStateVector(sv) },
    diff: sv => registry.encodePieces(sv),
    check (update): CheckResult {
      try {
        // The apply that follows checks again only if the document changed in between.
        return { ok: true, token: registry.validate(update, Origin.remote) }
      } catch (err) {
        return { ok: false, missing: err instanceof MissingDependencyError, reason: (err as Error).message }
      }
    },
    apply: (update, token) => registry.applyUpdate(update, Origin.remote, { validated: token as ValidUpdate | undefined }),
    applyDelta: async update => await registry.applyInSlices(update, Origin.remote),
    merge: updates => Y.mergeUpdates(updates),
    onLocalUpdate (listener) {
      const on = (update: Uint8Array, origin: Origin): void => { if (PUBLISHED.has(origin)) listener(update) }
      registry.on('update', on)
      return () => { registry.off('update', on) }
    }
  }
}
