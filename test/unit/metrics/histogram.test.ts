import { Histogram, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { LabelledHistogram } from '../../../src/metrics/histogram.ts'

const buckets = [0.0005, 0.001, 0.0025, 0.01, 1]
const name = 'x_request_duration_seconds'
const help = 'Time from request to response, by route.'

/** The same observations into prom-client's Histogram and a LabelledHistogram, each in its own registry. */
function both (observations: Array<[string, number]>): { ours: Registry, theirs: Registry } {
  const ours = new Registry()
  const theirs = new Registry()
  const h = new LabelledHistogram({ name, help, label: 'route', buckets, registers: [ours] })
  const p = new Histogram({ name, help, labelNames: ['route'], buckets, registers: [theirs] })
  for (const [route, v] of observations) {
    h.observe(route, v)
    p.observe({ route }, v)
  }
  return { ours, theirs }
}

describe('LabelledHistogram', () => {
  // Below, on and between the bounds, past the last one; label values a Prometheus parser must see escaped.
  const observations: Array<[string, number]> = [
    ['/route', 0.0004], ['/route', 0.0005], ['/route', 0.00051], ['/route', 0.3], ['/route', 7],
    ['/heartbeat', 0.002], ['unmatched', 0], ['/a "quoted"\\path', 0.01]
  ]

  it('prints what a prom-client Histogram with the same observations prints', async () => {
    const { ours, theirs } = both(observations)
    expect(await ours.metrics()).toBe(await theirs.metrics())
    // As JSON too, but for prom-client's exemplar slot (null: exemplars are off).
    const json = async (r: Registry) => JSON.parse(JSON.stringify(await r.getMetricsAsJSON(), (k, v) => k === 'exemplar' ? undefined : v))
    expect(await json(ours)).toEqual(await json(theirs))
  })

  it('prints its header alone before any observation, and after reset', async () => {
    const { ours, theirs } = both([])
    expect(await ours.metrics()).toBe(await theirs.metrics())
    const again = both(observations)
    again.ours.resetMetrics()
    expect(await again.ours.metrics()).toBe(await theirs.metrics())
  })

  it('observes through a kept series as through observe(), before and after a reset', async () => {
    const ours = new Registry()
    const h = new LabelledHistogram({ name, help, label: 'route', buckets, registers: [ours] })
    const kept = new Map<string, ReturnType<LabelledHistogram['seriesOf']>>()
    const record = (route: string, v: number): void => {
      if (!kept.has(route)) kept.set(route, h.seriesOf(route))
      h.record(kept.get(route)!, v)
    }
    for (const [route, v] of observations) record(route, v)
    expect(await ours.metrics()).toBe(await both(observations).theirs.metrics())
    ours.resetMetrics()
    for (const [route, v] of observations.slice(0, 3)) record(route, v)
    expect(await ours.metrics()).toBe(await both(observations.slice(0, 3)).theirs.metrics())
  })
})
