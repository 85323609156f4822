/**
 * The checker: reads a simulation record and judges every invariant of
 * DESIGN.md. A violation names the invariant, the time, the controllers and
 * the evidence (the offending answers), so a developer can reproduce it from
 * the seed. Pure: no I/O, the same record always gives the same verdicts.
 */
import type { Checkpoint, RouteSample, SimRecord, WorkerFate } from './record.ts'

export type InvariantName = 'convergence' | 'no-lost-registrations' | 'no-ghosts' | 'partition-availability' | 'single-owner'

export interface Violation {
  invariant: InvariantName
  /** ms since the start. */
  t: number
  nodes: string[]
  message: string
  evidence: unknown[]
}

export interface Verdict {
  invariant: InvariantName
  ok: boolean
  summary: string
  figures: Record<string, number | null>
}

export interface CheckResult {
  ok: boolean
  verdicts: Verdict[]
  violations: Violation[]
}

/** Route success needed on each side of a partition, after the grace window. */
export const AVAILABILITY_TARGET = 0.99

export function check (rec: SimRecord): CheckResult {
  const violations: Violation[] = []
  const verdicts: Verdict[] = [
    convergence(rec, violations),
    lost(rec, violations),
    ghosts(rec, violations),
    availability(rec, violations),
    singleOwner(rec, violations)
  ]
  return { ok: violations.length === 0, verdicts, violations }
}

/** How long after a death a stale answer is still excused: the owner's unhealthy window plus propagation. */
const grace = (rec: SimRecord): number => rec.timing.unhealthyMs + 2000

function convergence (rec: SimRecord, out: Violation[]): Verdict {
  let worst: number | null = null
  for (const cp of rec.checkpoints) {
    if (!cp.converged) {
      out.push({ invariant: 'convergence', t: cp.t, nodes: Object.keys(cp.views), message: `checkpoint "${cp.label}": controllers did not converge (${cp.detail})`, evidence: [cp.detail] })
    } else if (cp.convergenceMs != null) {
      worst = Math.max(worst ?? 0, cp.convergenceMs)
    }
  }
  const failed = rec.checkpoints.filter(c => !c.converged).length
  return {
    invariant: 'convergence',
    ok: failed === 0 && rec.checkpoints.length > 0,
    summary: rec.checkpoints.length === 0 ? 'no checkpoint was taken' : failed === 0 ? `converged at all ${rec.checkpoints.length} checkpoints; worst ${fmt(worst)} after the last fault ended` : `${failed} of ${rec.checkpoints.length} checkpoints did not converge`,
    figures: { checkpoints: rec.checkpoints.length, worst_convergence_ms: worst }
  }
}

function lost (rec: SimRecord, out: Violation[]): Verdict {
  let missing = 0
  for (const cp of rec.checkpoints) {
    const alive = cp.fates.filter(f => f.status === 'alive')
    for (const [node, view] of Object.entries(cp.views)) {
      const healthy = new Set(view.filter(w => w.state === 'healthy').map(w => w.worker_id))
      const gone = alive.filter(f => !healthy.has(f.id))
      if (gone.length > 0) {
        missing += gone.length
        out.push({ invariant: 'no-lost-registrations', t: cp.t, nodes: [node], message: `checkpoint "${cp.label}": ${gone.length} live workers not routable at ${node}`, evidence: gone.slice(0, 10).map(f => ({ worker: f.id, home: f.home, listed_as: view.find(w => w.worker_id === f.id)?.state ?? 'absent' })) })
      }
    }
  }
  return { invariant: 'no-lost-registrations', ok: missing === 0, summary: missing === 0 ? 'every live worker was routable from every controller at every checkpoint' : `${missing} (worker, controller) pairs missing`, figures: { missing } }
}

function ghosts (rec: SimRecord, out: Violation[]): Verdict {
  const fate = new Map<string, WorkerFate>(rec.fates.map(f => [f.id, f]))
  let count = 0
  for (const cp of rec.checkpoints) {
    if (!cp.converged) continue
    const dead = new Map(cp.fates.filter(f => f.status === 'killed' || f.status === 'stopped').map(f => [f.id, f]))
    // Entries restored from a data dir (or put back after a drop) are `pending` by design until a
    // heartbeat confirms them or the stale window ends: only after that window are they ghosts.
    const restoredAt = Math.max(-Infinity, ...rec.faults.filter(f => (f.name === 'restart' || f.name === 'heal') && f.t <= cp.t).map(f => f.t))
    const ghost = (w: { state: string }): boolean => w.state === 'healthy' || (w.state === 'pending' && cp.t - restoredAt > rec.timing.staleMs + 2000)
    for (const [node, view] of Object.entries(cp.views)) {
      const bad = view.filter(w => dead.has(w.worker_id) && ghost(w) && cp.t - dead.get(w.worker_id)!.since > grace(rec))
      if (bad.length > 0) {
        count += bad.length
        out.push({ invariant: 'no-ghosts', t: cp.t, nodes: [node], message: `checkpoint "${cp.label}": ${node} still routes ${bad.length} dead workers`, evidence: bad.slice(0, 10) })
      }
    }
  }
  const answers: RouteSample[] = []
  for (const r of rec.routes) {
    if (r.worker == null) continue
    const f = fate.get(r.worker)
    if (f == null || (f.status !== 'killed' && f.status !== 'stopped')) continue
    if (r.t > f.since + grace(rec)) answers.push(r)
  }
  if (answers.length > 0) {
    count += answers.length
    const nodes = [...new Set(answers.map(a => a.node))]
    out.push({ invariant: 'no-ghosts', t: answers[0].t, nodes, message: `${answers.length} /route answers named a worker dead for longer than ${grace(rec)} ms`, evidence: answers.slice(0, 10).map(a => ({ ...a, died_at: fate.get(a.worker!)!.since, fate: fate.get(a.worker!)!.status })) })
  }
  return { invariant: 'no-ghosts', ok: count === 0, summary: count === 0 ? 'no dead worker was routed to after its owner could know' : `${count} ghost sightings`, figures: { ghosts: count } }
}

interface Interval { start: number, end: number, groups: string[][] }

function partitions (rec: SimRecord): Interval[] {
  const out: Interval[] = []
  let open: Interval | null = null
  for (const f of rec.faults) {
    if (f.name === 'partition') {
      if (open != null) { open.end = f.t; out.push(open) }
      open = { start: f.t, end: rec.durationMs, groups: f.args as string[][] }
    } else if (f.name === 'heal' && open != null) {
      open.end = f.t
      out.push(open)
      open = null
    }
  }
  if (open != null) out.push(open)
  return out
}

function availability (rec: SimRecord, out: Violation[]): Verdict {
  const intervals = partitions(rec)
  const fateAt = (id: string, t: number): WorkerFate['status'] => {
    const f = rec.fates.find(x => x.id === id)
    return f == null ? 'stopped' : f.since <= t ? f.status : 'alive'
  }
  let worst: number | null = null
  let samples = 0
  for (const iv of intervals) {
    // Excused: the other side's owners are not yet known silent (unhealthy window) plus a digest and a probe.
    const from = iv.start + rec.timing.unhealthyMs + 1000
    if (from >= iv.end) continue
    for (const group of iv.groups) {
      const members = new Set(group)
      const homes = new Set(group.map(id => rec.nodes.indexOf(id)))
      const reachable = (cap: string, t: number): boolean => rec.fates.some(f => f.capability === cap && homes.has(f.home) && fateAt(f.id, t) === 'alive' && f.since <= t - grace(rec))
      const homeOf = (worker: string): number => rec.fates.find(f => f.id === worker)?.home ?? -1
      const asked = rec.routes.filter(r => r.t >= from && r.t < iv.end && members.has(r.node) && r.status !== 0 && reachable(r.capability, r.t))
      if (asked.length === 0) continue
      const failed = asked.filter(r => r.status !== 200 || !homes.has(homeOf(r.worker!)))
      const ratio = (asked.length - failed.length) / asked.length
      samples += asked.length
      worst = Math.min(worst ?? 1, ratio)
      if (ratio < AVAILABILITY_TARGET) {
        out.push({ invariant: 'partition-availability', t: failed[0].t, nodes: group, message: `side ${group.join('+')} of the partition at ${fmt(iv.start)}: ${(ratio * 100).toFixed(1)}% of routes reached a worker on its side (target ${AVAILABILITY_TARGET * 100}%)`, evidence: failed.slice(0, 10) })
      }
    }
  }
  return {
    invariant: 'partition-availability',
    ok: worst == null || worst >= AVAILABILITY_TARGET,
    summary: intervals.length === 0 ? 'no partition in this run' : worst == null ? 'no route query fell inside a partition after its grace window' : `worst side: ${(worst * 100).toFixed(2)}% of ${samples} route queries reached a worker on the asking side`,
    figures: { partitions: intervals.length, worst_side_ratio: worst, samples }
  }
}

function singleOwner (rec: SimRecord, out: Violation[]): Verdict {
  let bad = 0
  for (const cp of rec.checkpoints.filter(c => c.converged)) {
    for (const f of cp.fates.filter(x => x.status === 'alive')) {
      const seen = Object.entries(cp.views).map(([node, v]) => ({ node, w: v.find(x => x.worker_id === f.id) })).filter(x => x.w != null)
      const owners = new Set(seen.map(x => `${x.w!.controller_id}#${x.w!.incarnation}`))
      const agent = cp.attachments[f.id]
      const agreesWithAgent = agent?.controller == null || seen.every(x => x.w!.controller_id === agent.controller)
      if (owners.size > 1 || !agreesWithAgent) {
        bad++
        out.push({ invariant: 'single-owner', t: cp.t, nodes: seen.map(x => x.node), message: `checkpoint "${cp.label}": ${f.id} has ${owners.size} owners across controllers${agreesWithAgent ? '' : ` (its agent is attached to ${agent.controller})`}`, evidence: [...seen.map(x => ({ node: x.node, owner: x.w!.controller_id, incarnation: x.w!.incarnation })), { agent }] })
      }
    }
  }
  return { invariant: 'single-owner', ok: bad === 0, summary: bad === 0 ? 'every live worker had one owner everywhere, the one its agent is attached to' : `${bad} workers with conflicting owners`, figures: { conflicts: bad } }
}

function fmt (ms: number | null): string {
  return ms == null ? 'n/a' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`
}

/** Checkpoints' convergence times, for the report. */
export function convergenceTimes (rec: SimRecord): Array<{ label: string, ms: number | null }> {
  return rec.checkpoints.map((c: Checkpoint) => ({ label: c.label, ms: c.convergenceMs }))
}
