// Whether a checkout's dist/ holds a build of its sources as they are now: bin/build.js lists in
// dist/inputs.json every file the build read (src/, bin/build.js, the installed dependencies'
// lock) with its mtime, and any of them changed, gone or unreadable makes the build stale. About
// 130 stat calls: under a millisecond (docs/internals.md).
import { readFileSync, statSync } from 'node:fs'

/** `root`: the checkout, a file: URL ending in `/`. */
export function isBuilt (root) {
  let inputs
  try {
    inputs = JSON.parse(readFileSync(new URL('dist/inputs.json', root), 'utf8')).inputs
  } catch {
    return false
  }
  for (const [file, mtimeMs] of Object.entries(inputs)) {
    try {
      if (statSync(new URL(file, root)).mtimeMs !== mtimeMs) return false
    } catch {
      return false
    }
  }
  return true
}
