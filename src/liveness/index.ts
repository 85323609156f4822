/**
 * liveness — worker health beside the registry: heartbeats, health states
 * and timeouts for the workers this controller owns, and worker
 * self-preservation. What other controllers say of theirs is membership's.
 * Nothing here writes to the CRDT.
 *
 * @example
 * const live = new Liveness({ unhealthyAfterMs: 600, staleAfterMs: 1200 })
 * live.track('w1', 'healthy')
 * live.heartbeat('w1', { load: 2 })
 * live.on('expire', id => registry.deregister(id))
 */
export { Liveness } from './liveness.ts'
export type { HealthState, HeartbeatInput, LivenessEvents, LivenessInit, WorkerHealth } from './liveness.ts'
