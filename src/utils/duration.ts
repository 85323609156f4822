import { ConfigError } from '../errors.ts'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/

/**
 * Parses `500ms`, `2s`, `1.5m`, `1h` or a bare number of milliseconds into
 * milliseconds. Throws a ConfigError naming `what` on anything else.
 */
export function parseDuration (value: string | number, what = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new ConfigError(`${what}: expected a non-negative duration, got ${value}`)
    return value
  }
  const m = DURATION.exec(value.trim())
  if (m == null) throw new ConfigError(`${what}: "${value}" is not a duration (use e.g. 500ms, 2s, 1m)`)
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 'ms'])
}

/** Formats milliseconds the way parseDuration reads them back (`1500` → `1.5s`). */
export function formatDuration (ms: number): string {
  if (ms < 1000) return `${ms}ms`
  if (ms < 60_000) return `${+(ms / 1000).toFixed(3)}s`
  return `${+(ms / 60_000).toFixed(3)}m`
}
