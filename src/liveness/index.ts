/**
 * liveness — worker health beside the registry: heartbeats, health states
 * and timeouts for the workers this controller owns (Liveness), the word of
 * other owners about theirs (OwnerTracker), and self-preservation. Nothing
 * here writes to the CRDT.
 *
 * @example
 * const live = new Liveness({ unhealthyAfterMs: 600, staleAfterMs: 1200 })
 * live.track('w1', 'healthy')
 * live.heartbeat('w1', { load: 2 })
 * live.on('expire', id => registry.deregister(id))
 */
export { Liveness } from './liveness.ts'
export type { HealthState, HeartbeatInput, LivenessEvents, LivenessInit, WorkerHealth } from './liveness.ts'
export { OwnerTracker } from './owners.ts'
export type { OwnerDigest, OwnerInfo, OwnerStatus, OwnerTrackerEvents, OwnerTrackerInit } from './owners.ts'
