/**
 * Reading a controller's `GET /metrics` (Prometheus text format) in tests.
 */
import type { HttpsClient } from '../../src/utils/https-client.ts'

export interface Sample { name: string, labels: Record<string, string>, value: number }

export interface Scrape {
  samples: Sample[]
  /** Metric families declared (`# TYPE` lines), name → type. */
  types: Map<string, string>
  /**
   * Sum of `name`'s samples whose labels include `labels` (0 if the family
   * has no such series yet). Throws if the family is not there at all.
   */
  sum: (name: string, labels?: Record<string, string>) => number
}

export function parseMetrics (text: string): Scrape {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type != null) types.set(type[1], type[2])
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m == null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    samples.push({ name: m[1], labels, value: Number(m[3]) })
  }
  const sum = (name: string, labels: Record<string, string> = {}): number => {
    const family = name.replace(/_(bucket|sum|count)$/, '')
    if (!types.has(name) && !types.has(family)) throw new Error(`no metric ${name} in the scrape`)
    return samples.filter(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0)
  }
  return { samples, types, sum }
}

/** GET /metrics at `base`, checked to be the Prometheus text format, parsed. */
export async function scrape (client: HttpsClient, base: string): Promise<Scrape> {
  const res = await client.json('GET', `${base}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`)
  if (!String(res.headers['content-type']).startsWith('text/plain; version=0.0.4')) throw new Error(`GET /metrics: content-type ${String(res.headers['content-type'])}`)
  return parseMetrics(res.body as string)
}
