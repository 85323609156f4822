/**
 * Nesting depth of a JSON value, measured without recursion (so a hostile
 * 100k-deep document cannot overflow the stack while being measured).
 * Returns as soon as `max` is exceeded: the path of the first too-deep spot,
 * or null when the value is within bounds.
 */
export function tooDeep (value: unknown, max: number): string | null {
  const stack: Array<[unknown, number, string]> = [[value, 0, '']]
  while (stack.length > 0) {
    const [v, depth, path] = stack.pop()!
    if (v === null || typeof v !== 'object') continue
    if (depth >= max) return path === '' ? '/' : path
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) stack.push([v[i], depth + 1, `${path}/${i}`])
    } else {
      for (const k of Object.keys(v)) stack.push([(v as Record<string, unknown>)[k], depth + 1, `${path}/${k}`])
    }
  }
  return null
}
