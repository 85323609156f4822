/**
 * Prometheus metrics of one worker agent: its counters (registrations,
 * retries, failovers, heartbeats), its state and where it is attached, all
 * read from the agent when scraped. The demo worker serves them at its own
 * `GET /metrics`; a worker built on the agent can do the same.
 *
 *   const metrics = agentMetrics(agent)
 *   app.get('/metrics', async (_req, reply) => reply.type(metrics.contentType).send(await metrics.text()))
 */
import { Counter, Gauge, Registry } from 'prom-client'
import type { AgentState, WorkerAgent } from '../agent/index.ts'
import { exposition } from './process.ts'

export interface AgentMetricsInit {
  /** Include the Node process metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean
}

const STATES: AgentState[] = ['idle', 'attached', 'detached', 'draining', 'stopped']

export class AgentMetrics {
  readonly registry = new Registry()
  private readonly withProcess: boolean

  constructor (agent: WorkerAgent, init: AgentMetricsInit = {}) {
    this.withProcess = init.processMetrics ?? true
    const registers = [this.registry]
    const c = agent.counters
    /** A counter whose value the agent keeps: handed over at scrape time. */
    const counter = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers, collect () { this.reset(); this.inc(read()) } })
    }

    new Gauge({
      name: 'capmesh_agent_info',
      help: 'This worker and the controller it is attached to now (value always 1; controller_id empty while detached).',
      labelNames: ['worker_id', 'controller_id'],
      registers,
      collect () {
        this.reset()
        this.set({ worker_id: agent.workerId, controller_id: agent.controller?.id ?? '' }, 1)
      }
    })
    new Gauge({
      name: 'capmesh_agent_state',
      help: '1 for the agent\'s current state, 0 for the others.',
      labelNames: ['state'],
      registers,
      collect () { for (const s of STATES) this.set({ state: s }, agent.state === s ? 1 : 0) }
    })
    new Gauge({
      name: 'capmesh_agent_incarnation',
      help: 'Incarnation of the current attachment (bumped on each registration: the newest wins everywhere).',
      registers,
      collect () { this.set(agent.incarnation) }
    })
    new Counter({
      name: 'capmesh_agent_registrations_total',
      help: 'Registration attempts, by result (rejected: a 4xx, permanent).',
      labelNames: ['result'],
      registers,
      collect () {
        this.reset()
        for (const r of ['ok', 'failed', 'rejected'] as const) this.inc({ result: r }, c.registrations[r])
      }
    })
    new Counter({
      name: 'capmesh_agent_heartbeats_total',
      help: 'Heartbeats, by result (failed: an error, or an answer later than one interval).',
      labelNames: ['result'],
      registers,
      collect () {
        this.reset()
        for (const r of ['ok', 'failed'] as const) this.inc({ result: r }, c.heartbeats[r])
      }
    })
    counter('capmesh_agent_retries_total', 'Registration retries (back-off with jitter).', () => c.retries)
    counter('capmesh_agent_failovers_total', 'Moves to another controller after consecutive heartbeat failures.', () => c.failovers)
    counter('capmesh_agent_moves_total', 'Moves to a clearly closer controller.', () => c.moves)
    counter('capmesh_agent_reregistrations_total', 'Registrations again at the same controller (it lost the worker, or holds a newer attachment).', () => c.reregistrations)
    new Gauge({
      name: 'capmesh_agent_heartbeat_rtt_seconds',
      help: 'Heartbeat round trip: the last one, and a moving average (EWMA, 0.2).',
      labelNames: ['kind'],
      registers,
      collect () {
        this.reset()
        if (c.heartbeatRttMs.last != null) this.set({ kind: 'last' }, c.heartbeatRttMs.last / 1000)
        if (c.heartbeatRttMs.avg != null) this.set({ kind: 'avg' }, c.heartbeatRttMs.avg / 1000)
      }
    })
  }

  /** The exposition format's content type. */
  get contentType (): string { return this.registry.contentType }

  /** Every metric in the Prometheus text format. */
  async text (): Promise<string> {
    return await exposition(this.registry, this.withProcess)
  }
}

/** Creates an agent's metrics (see AgentMetrics). */
export function agentMetrics (agent: WorkerAgent, init?: AgentMetricsInit): AgentMetrics {
  return new AgentMetrics(agent, init)
}
