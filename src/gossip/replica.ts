/**
 * What gossip needs of the replicated state, and nothing more (as
 * memberlist's Delegate is what its gossip needs of an application): the
 * state vector, the delta a peer with a given state vector lacks, a check of
 * an incoming update that does not apply it, the apply of a checked update,
 * merging updates into one message, and the local updates to publish.
 * registry/ implements it over Yjs; tests use an in-memory one.
 */

/** The verdict of Replica.check on an update from a peer. */
export type CheckResult =
  /** Well-formed and applicable: `token` lets `apply` skip checking it again. */
  | { ok: true, token: unknown }
  /** Not applicable: `missing` if it builds on content this replica lacks (out of order, not malformed). */
  | { ok: false, missing: boolean, reason: string }

export interface Replica {
  /** This replica's state vector. */
  stateVector: () => Uint8Array
  /** Throws if `sv` is not a well-formed state vector. */
  checkStateVector: (sv: Uint8Array) => void
  /**
   * What a replica with state vector `sv` lacks: one update, in pieces to
   * send one after another (a whole registry's, joined, would be held twice
   * for a moment).
   */
  diff: (sv: Uint8Array) => Uint8Array[]
  /** Checks a peer's update against the current state without applying it. */
  check: (update: Uint8Array) => CheckResult
  /**
   * Applies a peer's update (checking it first unless `token` comes from `check`); throws, changing
   * nothing, if it is malformed. True if it changed the replica (an exchange's delta often brings nothing new).
   */
  apply: (update: Uint8Array, token?: unknown) => boolean
  /**
   * Applies an anti-entropy delta, which may be the whole registry (a late joiner, an empty data
   * dir): like `apply`, but it may take turns of the event loop while it works, so the controller
   * keeps answering. @default `apply`
   */
  applyDelta?: (update: Uint8Array) => Promise<boolean>
  /** One update equivalent to all of `updates` (a batch of local writes as one gossip message). */
  merge: (updates: Uint8Array[]) => Uint8Array
  /**
   * Calls `listener` with every local change to publish; returns the unsubscribe function. The
   * listener is called synchronously inside the write, so the context active then (the trace of
   * the request that wrote) is the write's: the mesh sends it along.
   */
  onLocalUpdate: (listener: (update: Uint8Array) => void) => () => void
}
