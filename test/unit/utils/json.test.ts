import { describe, expect, it } from 'vitest'
import { tooDeep } from '../../../src/utils/json.ts'

/** `{"a":{"a":…1}}` with `n` objects. */
const nested = (n: number): unknown => JSON.parse('{"a":'.repeat(n) + '1' + '}'.repeat(n))

describe('tooDeep', () => {
  it('passes a flat object, and any value up to the limit', () => {
    expect(tooDeep({ verb: 'invoke', capability: 'echo', n: 1, b: true, z: null }, 64)).toBeNull()
    expect(tooDeep({}, 1)).toBeNull()
    expect(tooDeep('text', 0)).toBeNull()
    expect(tooDeep(nested(3), 3)).toBeNull()
    expect(tooDeep([[1], { a: [2] }], 3)).toBeNull()
  })

  it('names the first spot past the limit, in objects and arrays', () => {
    expect(tooDeep(nested(4), 3)).toBe('/a/a/a')
    expect(tooDeep({ ok: 1, list: [1, [2, [3]]] }, 3)).toBe('/list/1/1')
    expect(tooDeep({ a: 1 }, 0)).toBe('/')
    // A flat object is one level: refused only by a limit of 0.
    expect(tooDeep({ verb: 'x' }, 1)).toBeNull()
  })

  it('measures a 100,000-deep document without overflowing the stack', () => {
    const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000))
    expect(tooDeep(deep, 64)).toBe('/' + Array(64).fill(0).join('/'))
    expect(tooDeep(nested(100_000), 64)).toBe('/a'.repeat(64))
  })

  it('looks only at own properties, whatever the prototype holds', () => {
    const o = Object.create({ inherited: { a: { a: { a: 1 } } } }) as Record<string, unknown>
    o.own = 1
    expect(tooDeep(o, 2)).toBeNull()
    o.deep = { a: { a: 1 } }
    expect(tooDeep(o, 2)).toBe('/deep/a')
  })
})
