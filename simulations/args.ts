/**
 * Command-line options of the scripts under `simulations/` (`sim:soak`,
 * `sim:screenshot`, every `bench:*`): each script declares its options once,
 * with what they mean and their defaults, and gets `--help` / `-h` and a
 * clear exit on a bad flag from that one declaration.
 *
 *   const { values } = scriptArgs({
 *     script: 'bench:compaction',
 *     summary: 'Encoded registry size under churn.',
 *     options: { ops: { type: 'string', value: 'N', default: '1000000', description: 'registrations + deregistrations' } }
 *   })
 *
 * Parsing is node:util parseArgs (strict); values stay strings or booleans
 * as before, each script converts them itself.
 */
import { parseArgs } from 'node:util'
import { ValidationError } from '../src/errors.ts'

interface OptionBase {
  /** What the option does, one line of the help. */
  description: string
  /** One-letter alias (`-x`); `h` is taken by help. */
  short?: string
  /** Set by the script itself when it starts a copy of itself as a child: listed apart in the help. */
  internal?: boolean
}

export interface StringOption extends OptionBase {
  type: 'string'
  /** What the help shows for the value: `N`, `D` (a duration), `FILE`. @default 'VALUE' */
  value?: string
  default?: string
}

export interface BooleanOption extends OptionBase {
  type: 'boolean'
  default?: boolean
}

export type OptionSpec = StringOption | BooleanOption

export interface PositionalSpec {
  /** As the help shows it, e.g. `REPORT.html`. */
  name: string
  description: string
}

export interface ScriptSpec<O extends Record<string, OptionSpec>> {
  /** The npm script that runs it (`bench:route`): the usage line is `npm run <script> -- ...`. */
  script: string
  /** What the script does, a few lines at the top of the help. */
  summary: string
  options: O
  /** Required positional arguments, in order; with none declared, any positional is an error. */
  positionals?: PositionalSpec[]
}

/** A declared option's parsed value: a string or boolean, `undefined` only when it has no default and was not given. */
export type OptionValues<O extends Record<string, OptionSpec>> = {
  [K in keyof O]: (O[K] extends BooleanOption ? boolean : string) | (O[K] extends { default: string | boolean } ? never : undefined)
}

export interface ParsedArgs<O extends Record<string, OptionSpec>> {
  values: OptionValues<O>
  positionals: string[]
}

const HELP: BooleanOption = { type: 'boolean', short: 'h', description: 'show this help and exit' }

/**
 * Parses `args` against `spec`. Returns `'help'` when `--help` / `-h` is
 * among them (even beside a bad flag: asking for help is never an error);
 * throws a ValidationError whose one problem names the flag otherwise.
 */
export function parseScriptArgs<O extends Record<string, OptionSpec>> (spec: ScriptSpec<O>, args: string[]): ParsedArgs<O> | 'help' {
  if ('help' in spec.options || Object.values(spec.options).some(o => o.short === 'h')) {
    // A mistake in the script, not in its command line: not a ValidationError, so it is not reported as bad input.
    throw new TypeError(`${spec.script}: --help and -h are declared by scriptArgs itself`)
  }
  // Not strict: the tokens say what went wrong, so each mistake gets its own short message.
  const { tokens } = parseArgs({ args, options: { ...spec.options, help: HELP }, strict: false, allowPositionals: true, tokens: true })
  if (tokens.some(t => t.kind === 'option' && t.name === 'help')) return 'help'
  const positionals: string[] = []
  for (const t of tokens) {
    if (t.kind === 'positional') {
      positionals.push(t.value)
      continue
    }
    if (t.kind !== 'option') continue
    // hasOwn: `--toString` is unknown too, not Object.prototype's.
    const o = Object.hasOwn(spec.options, t.name) ? spec.options[t.name] : undefined
    if (o == null) throw problem(t.rawName, `unknown option ${t.rawName}`)
    // `--seeds --nodes 8` would read "--nodes" as the seeds: strict parseArgs refuses that too.
    if (o.type === 'string' && (t.value == null || (t.inlineValue === false && t.value.startsWith('-')))) {
      throw problem(t.rawName, `option ${t.rawName} needs a value (${t.rawName} ${o.value ?? 'VALUE'})`)
    }
    if (o.type === 'boolean' && t.inlineValue === true) throw problem(t.rawName, `option ${t.rawName} takes no value`)
  }
  const declared = spec.positionals ?? []
  if (positionals.length > declared.length) {
    throw problem(positionals[declared.length], `unexpected argument ${JSON.stringify(positionals[declared.length])}`)
  }
  if (positionals.length < declared.length) throw problem(declared[positionals.length].name, `missing ${declared[positionals.length].name}`)
  // The strict parse fills in the defaults; what it still refuses (checked above, so nothing
  // expected) is reported like the rest, with the first sentence of node's message.
  const options: Record<string, OptionSpec> = spec.options
  try {
    const { values } = parseArgs({ args, options, strict: true, allowPositionals: declared.length > 0 })
    return { values: values as OptionValues<O>, positionals }
  } catch (err) {
    if (!String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS_')) throw err
    throw problem(args.join(' '), (err as Error).message.split('. ')[0])
  }
}

function problem (field: string, message: string): ValidationError {
  return new ValidationError(message, [{ field, message }])
}

/** `npm run sim:screenshot -- [options] REPORT.html OUT.png` */
export function usageLine (spec: ScriptSpec<Record<string, OptionSpec>>): string {
  return ['usage: npm run', spec.script, '-- [options]', ...(spec.positionals ?? []).map(p => p.name)].join(' ')
}

/** The help text: usage line, summary, arguments, options (each with its default), internal options last. */
export function formatHelp (spec: ScriptSpec<Record<string, OptionSpec>>): string {
  const flag = (name: string, o: OptionSpec): string =>
    `${o.short == null ? '    ' : `-${o.short}, `}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`
  const def = (o: OptionSpec): string => o.default == null
    ? 'not set'
    : o.type === 'boolean' ? (o.default ? 'on' : 'off') : o.default === '' ? '""' : o.default
  const rows = (entries: Array<[string, OptionSpec]>): Array<[string, string]> =>
    entries.map(([name, o]) => [flag(name, o), `${o.description} (default: ${def(o)})`])
  const all = Object.entries(spec.options)
  const sections: Array<[string, Array<[string, string]>]> = [
    ['arguments:', (spec.positionals ?? []).map(p => [p.name, p.description])],
    ['options:', [...rows(all.filter(([, o]) => o.internal !== true)), [flag('help', HELP), HELP.description]]],
    ['internal options (the script passes them to a child copy of itself):', rows(all.filter(([, o]) => o.internal === true))]
  ]
  const width = Math.max(...sections.flatMap(([, r]) => r.map(([left]) => left.length)))
  const out = [usageLine(spec), '', spec.summary.trim()]
  for (const [title, r] of sections) {
    if (r.length === 0) continue
    out.push('', title, ...r.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`))
  }
  return out.join('\n') + '\n'
}

/**
 * What a script calls first: the parsed options, or it prints the help and
 * exits 0 (`--help`, `-h`), or prints what is wrong and the usage line and
 * exits 2 (a bad flag), before it starts anything.
 */
export function scriptArgs<O extends Record<string, OptionSpec>> (spec: ScriptSpec<O>, args = process.argv.slice(2)): ParsedArgs<O> {
  let parsed: ParsedArgs<O> | 'help'
  try {
    parsed = parseScriptArgs(spec, args)
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err
    process.stderr.write(`${spec.script}: ${err.message}\n${usageLine(spec)}  (--help lists every option)\n`)
    process.exit(2)
  }
  if (parsed === 'help') {
    process.stdout.write(formatHelp(spec))
    process.exit(0)
  }
  return parsed
}
