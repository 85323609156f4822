/** Reading the identity layer's JSON files (subject map, policy, JWKS) with errors that name the file and the bad entry. */
import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.ts'

/** The parsed JSON of `file`; ConfigError `<what> <file>: ...` when it cannot be read or parsed. */
export function readJsonFile (file: string, what: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`${what} ${file}: cannot read it: ${(err as Error).message}`, { file })
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`${what} ${file}: not JSON: ${(err as Error).message}`, { file })
  }
}

/** A thrower of ConfigErrors `<what> <source>: <path>: <message>`, with `{file, path}` as details. */
export function configFailure (what: string, source: string): (path: string, message: string) => never {
  return (path, message) => {
    throw new ConfigError(`${what} ${source}: ${path === '' ? '' : `${path}: `}${message}`, { file: source, path })
  }
}

/** A JSON-pointer-like path without the leading slash: `rules/1/capabilities/0`, `subjects/CN=a~1b`. */
export function pointer (segments: Array<string | number>): string {
  return segments.map(s => String(s).replace(/~/g, '~0').replace(/\//g, '~1')).join('/')
}

export function isPlainObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
