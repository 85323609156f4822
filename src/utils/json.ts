/**
 * Nesting depth of a JSON value, measured without recursion (so a hostile
 * 100k-deep document cannot overflow the stack while being measured).
 * Returns as soon as `max` is exceeded: the path of the first too-deep spot,
 * or null when the value is within bounds.
 */
export function tooDeep (value: unknown, max: number): string | null {
  // Paths are built only once a value is known to be too deep: building one per node
  // was most of the cost of checking a 5,000-entry delta.
  return withinDepth(value, max) ? null : deepPath(value, max)
}

function withinDepth (value: unknown, max: number): boolean {
  if (max >= 1 && flat(value)) return true
  const values: unknown[] = [value]
  const depths: number[] = [0]
  while (values.length > 0) {
    const v = values.pop()
    const depth = depths.pop()!
    if (v === null || typeof v !== 'object') continue
    if (depth >= max) return false
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        values.push(v[i])
        depths.push(depth + 1)
      }
    } else {
      for (const k of Object.keys(v)) {
        values.push((v as Record<string, unknown>)[k])
        depths.push(depth + 1)
      }
    }
  }
  return true
}

/** An object whose values are all primitives (most request bodies): checked without allocating. */
function flat (value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  for (const k in value) {
    if (!Object.hasOwn(value, k)) return false
    const v = (value as Record<string, unknown>)[k]
    if (v !== null && typeof v === 'object') return false
  }
  return true
}

function deepPath (value: unknown, max: number): string | null {
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
