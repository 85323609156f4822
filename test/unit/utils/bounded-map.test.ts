import { describe, expect, it } from 'vitest'
import { BoundedMap } from '../../../src/utils/bounded-map.ts'

describe('BoundedMap', () => {
  it('holds at most max entries, forgetting the oldest first', () => {
    const m = new BoundedMap<string, number>(2)
    m.set('a', 1)
    m.set('b', 2)
    m.set('c', 3)
    expect(m.size).toBe(2)
    expect(m.get('a')).toBeUndefined()
    expect(m.get('b')).toBe(2)
    expect(m.get('c')).toBe(3)
  })

  it('a touching get makes an entry the most recently used; a plain get does not', () => {
    const m = new BoundedMap<string, number>(2)
    m.set('a', 1)
    m.set('b', 2)
    m.get('a', true)
    m.set('c', 3)
    expect(m.get('a')).toBe(1)
    expect(m.get('b')).toBeUndefined()
    m.get('a') // no touch: a is still the oldest
    m.set('d', 4)
    expect(m.get('a')).toBeUndefined()
    expect(m.get('c')).toBe(3)
  })

  it('setting an existing key replaces it without evicting another', () => {
    const m = new BoundedMap<string, number>(2)
    m.set('a', 1)
    m.set('b', 2)
    m.set('a', 10)
    expect(m.size).toBe(2)
    expect(m.get('a')).toBe(10)
    expect(m.get('b')).toBe(2)
    expect(m.delete('a')).toBe(true)
    expect(m.size).toBe(1)
    m.clear()
    expect(m.size).toBe(0)
  })

  it('max 0 keeps nothing; a negative or fractional max is refused', () => {
    const m = new BoundedMap<string, number>(0)
    m.set('a', 1)
    expect(m.get('a')).toBeUndefined()
    expect(() => new BoundedMap(-1)).toThrow(RangeError)
    expect(() => new BoundedMap(1.5)).toThrow(RangeError)
  })
})
