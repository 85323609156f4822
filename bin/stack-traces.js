// Stack traces of the built CLI (dist/) name the src/ files and lines they came from, as
// `--enable-source-maps` would, but a chunk's source map is read only when a stack through that
// chunk is first formatted: with source maps enabled Node reads every chunk's map as it loads,
// which cost a controller about 0.15 s at every start (docs/internals.md). Frames in the
// dependencies stay in dist/ (bin/build.js keeps only the mappings into src/).
import { readFileSync } from 'node:fs'
import { SourceMap } from 'node:module'
import { fileURLToPath } from 'node:url'

/** Maps every stack frame in a file under `dir` (a file: URL ending in `/`) through that file's `.map`. */
export function mapStackTraces (dir) {
  const maps = new Map()
  const mapOf = (file) => {
    if (!maps.has(file)) {
      let map = null
      try {
        map = new SourceMap(JSON.parse(readFileSync(fileURLToPath(`${file}.map`), 'utf8')))
      } catch {}
      maps.set(file, map)
    }
    return maps.get(file)
  }
  const frame = (f) => {
    const text = `    at ${f}`
    const file = f.getFileName()
    const line = f.getLineNumber()
    const column = f.getColumnNumber()
    if (file == null || !file.startsWith(dir) || line == null || column == null) return text
    const e = mapOf(file)?.findEntry(line - 1, column - 1)
    // The nearest mapping may lie lines above, in a src/ module before this dependency's code.
    if (e?.originalSource == null || e.generatedLine !== line - 1) return text
    // V8's own wording of the frame, with the bundle's file:line:column replaced.
    const at = `${file}:${line}:${column}`
    const i = text.lastIndexOf(at)
    const original = `${fileURLToPath(new URL(e.originalSource, file))}:${e.originalLine + 1}:${e.originalColumn + 1}`
    return i < 0 ? text : `${text.slice(0, i)}${original}${text.slice(i + at.length)}`
  }
  Error.prepareStackTrace = (err, frames) => {
    let head
    try {
      head = Error.prototype.toString.call(err)
    } catch {
      head = 'Error'
    }
    return [head, ...frames.map(frame)].join('\n')
  }
}
