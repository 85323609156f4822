import { collectDefaultMetrics, Registry } from 'prom-client'

let processRegistry: Registry | null = null

/**
 * The process-wide registry of Node's own metrics (`process_*`, `nodejs_*`),
 * created on first use: its event-loop and GC monitors run once per process,
 * however many controllers or agents it hosts.
 */
export function processMetrics (): Registry {
  if (processRegistry == null) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/** `own`'s metrics, followed by the process's when `withProcess`. */
export async function exposition (own: Registry, withProcess: boolean): Promise<string> {
  const text = await own.metrics()
  return withProcess ? `${text}\n${await processMetrics().metrics()}` : text
}
