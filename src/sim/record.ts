/** What a simulation records: the input of the checker and of the report. */

export interface FaultRecord {
  /** ms since the start. */
  t: number
  name: string
  args: unknown
}

export interface RouteSample {
  t: number
  /** Controller asked. */
  node: string
  capability: string
  /** HTTP status; 0 when the controller could not be reached. */
  status: number
  worker: string | null
  /** Controller the answered worker is attached to. */
  owner: string | null
}

export interface StateSample {
  t: number
  node: string
  /** The controller's registry hash (equal hashes: equal registries). */
  hash: string
  healthy: number
  total: number
  selfPreservation: boolean
}

export interface WorkerFate {
  id: string
  /** Index of the place the worker runs at. */
  home: number
  capability: string
  status: 'alive' | 'draining' | 'killed' | 'stopped'
  /** ms since the start when it entered `status`. */
  since: number
}

export interface Checkpoint {
  label: string
  /** When the views were taken. */
  t: number
  startedAt: number
  /** When the last heal/restart/clear happened (convergence is measured from there). */
  faultEndedAt: number
  converged: boolean
  convergenceMs: number | null
  detail: string
  /** Per controller: the workers it lists. */
  views: Record<string, Array<{ worker_id: string, state: string, controller_id: string, incarnation: number }>>
  /** Per live worker: where its agent says it is attached. */
  attachments: Record<string, { controller: string | null, incarnation: number }>
  fates: WorkerFate[]
}

export interface SimRecord {
  scenario: string
  seed: string
  /** The network: `loopback`, or `netns` (a namespace and an address per host, faults dropping packets). Absent in older records: loopback. */
  net?: 'loopback' | 'netns'

  nodes: string[]
  workers: number
  timing: { heartbeatMs: number, unhealthyMs: number, staleMs: number }
  durationMs: number
  /** Starting the cluster and attaching the workers, before t = 0 (ms). */
  setupMs: number
  /** Worst event-loop delay of the harness process (ms): high means the agents were starved, not the mesh. */
  harnessLagMaxMs: number
  faults: FaultRecord[]
  routes: RouteSample[]
  states: StateSample[]
  checkpoints: Checkpoint[]
  fates: WorkerFate[]
  rss: Array<{ t: number, node: string, rssMb: number }>
}
