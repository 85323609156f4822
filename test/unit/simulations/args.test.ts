/**
 * The options helper every script under simulations/ parses its flags with:
 * defaults filled in, help derived from the declaration, each kind of bad
 * flag refused with a ValidationError naming it.
 */
import { describe, expect, it } from 'vitest'
import { formatHelp, parseScriptArgs, usageLine, type OptionSpec, type ScriptSpec } from '../../../simulations/args.ts'
import { ValidationError } from '../../../src/errors.ts'

const SPEC = {
  script: 'bench:example',
  summary: 'An example script.',
  options: {
    seeds: { type: 'string', value: 'N', default: '50', description: 'how many seeds' },
    'heal-sizes': { type: 'string', value: 'N,N', default: '', description: 'sizes that heal' },
    only: { type: 'string', value: 'NAME', description: 'one target only' },
    verbose: { type: 'boolean', default: false, description: 'say more' },
    fast: { type: 'boolean', short: 'f', description: 'skip the slow part' },
    pid: { type: 'string', value: 'PID', internal: true, description: 'the process to watch' }
  }
} satisfies ScriptSpec<Record<string, OptionSpec>>

const WITH_FILES = {
  script: 'sim:example',
  summary: 'Takes two files.',
  options: { scale: { type: 'string', default: '1', description: 'zoom' } },
  positionals: [{ name: 'IN.html', description: 'what to read' }, { name: 'OUT.png', description: 'what to write' }]
} satisfies ScriptSpec<Record<string, OptionSpec>>

/** The ValidationError that parsing `args` throws, for its problem's field. */
function refusal (spec: ScriptSpec<Record<string, OptionSpec>>, args: string[]): ValidationError {
  try {
    parseScriptArgs(spec, args)
  } catch (err) {
    if (err instanceof ValidationError) return err
    throw err
  }
  throw new Error(`${JSON.stringify(args)} was accepted`)
}

describe('parseScriptArgs', () => {
  it('fills in the declared defaults and leaves options without one unset', () => {
    const r = parseScriptArgs(SPEC, [])
    expect(r).toEqual({ values: { seeds: '50', 'heal-sizes': '', verbose: false }, positionals: [] })
  })

  it('reads values given as separate or inline arguments, booleans and short aliases', () => {
    const r = parseScriptArgs(SPEC, ['--seeds', '3', '--heal-sizes=8,32', '--only', 'bare', '--verbose', '-f', '--pid', '42'])
    expect(r).toEqual({ values: { seeds: '3', 'heal-sizes': '8,32', only: 'bare', verbose: true, fast: true, pid: '42' }, positionals: [] })
  })

  it('answers help for --help and -h, even beside a bad flag', () => {
    expect(parseScriptArgs(SPEC, ['--help'])).toBe('help')
    expect(parseScriptArgs(SPEC, ['-h'])).toBe('help')
    expect(parseScriptArgs(SPEC, ['--no-such', '--help'])).toBe('help')
  })

  it('refuses an unknown long or short option, naming it', () => {
    for (const flag of ['--no-such', '-x']) {
      const err = refusal(SPEC, ['--seeds', '3', flag])
      expect(err.name).toBe('ValidationError')
      expect(err.code).toBe('CAPMESH_ERR_VALIDATION')
      expect(err.problems.map(p => p.field)).toEqual([flag])
    }
  })

  it('refuses names that only Object.prototype has', () => {
    expect(refusal(SPEC, ['--toString']).problems[0].field).toBe('--toString')
    expect(refusal(SPEC, ['--__proto__', 'x']).problems[0].field).toBe('--__proto__')
  })

  it('refuses a string option without its value, at the end or followed by another flag', () => {
    expect(refusal(SPEC, ['--seeds']).problems[0].field).toBe('--seeds')
    expect(refusal(SPEC, ['--seeds', '--verbose']).problems[0].field).toBe('--seeds')
  })

  it('refuses a value given to a boolean option', () => {
    expect(refusal(SPEC, ['--verbose=yes']).problems[0].field).toBe('--verbose')
  })

  it('refuses positional arguments a script does not declare', () => {
    expect(refusal(SPEC, ['extra']).problems[0].field).toBe('extra')
  })

  it('requires every declared positional, in order, and no more', () => {
    expect(parseScriptArgs(WITH_FILES, ['a.html', '--scale', '2', 'b.png'])).toEqual({ values: { scale: '2' }, positionals: ['a.html', 'b.png'] })
    expect(refusal(WITH_FILES, ['a.html']).problems[0].field).toBe('OUT.png')
    expect(refusal(WITH_FILES, []).problems[0].field).toBe('IN.html')
    expect(refusal(WITH_FILES, ['a', 'b', 'c']).problems[0].field).toBe('c')
  })

  it('will not let a script declare --help or -h itself', () => {
    const taken = { ...SPEC, options: { help: { type: 'boolean', description: 'mine' } } } satisfies ScriptSpec<Record<string, OptionSpec>>
    expect(() => parseScriptArgs(taken, [])).toThrow(TypeError)
    const short = { ...SPEC, options: { hosts: { type: 'string', short: 'h', description: 'mine' } } } satisfies ScriptSpec<Record<string, OptionSpec>>
    expect(() => parseScriptArgs(short, [])).toThrow(TypeError)
  })
})

describe('formatHelp', () => {
  const help = formatHelp(SPEC)
  const line = (flag: string): string => help.split('\n').find(l => l.trimStart().startsWith(flag) || l.includes(` ${flag} `)) ?? ''

  it('starts with the usage line and the summary', () => {
    expect(help.split('\n').slice(0, 3)).toEqual(['usage: npm run bench:example -- [options]', '', 'An example script.'])
  })

  it('lists every option with its value placeholder, description and default', () => {
    expect(line('--seeds')).toMatch(/--seeds N\s+how many seeds \(default: 50\)$/)
    expect(line('--heal-sizes')).toMatch(/--heal-sizes N,N\s+sizes that heal \(default: ""\)$/)
    expect(line('--only')).toMatch(/--only NAME\s+one target only \(default: not set\)$/)
    expect(line('--verbose')).toMatch(/--verbose\s+say more \(default: off\)$/)
    expect(line('-f, --fast')).toMatch(/-f, --fast\s+skip the slow part \(default: not set\)$/)
    expect(line('-h, --help')).toMatch(/-h, --help\s+show this help and exit$/)
  })

  it('lists internal options after the others, under their own heading', () => {
    const lines = help.split('\n')
    const heading = lines.findIndex(l => l.startsWith('internal options'))
    expect(heading).toBeGreaterThan(lines.findIndex(l => l.includes('--help')))
    expect(lines.findIndex(l => l.includes('--pid PID'))).toBeGreaterThan(heading)
  })

  it('lists the positionals and puts them in the usage line', () => {
    const h = formatHelp(WITH_FILES)
    expect(usageLine(WITH_FILES)).toBe('usage: npm run sim:example -- [options] IN.html OUT.png')
    expect(h.startsWith(`${usageLine(WITH_FILES)}\n`)).toBe(true)
    expect(h).toMatch(/\n {2}IN\.html\s+what to read\n/)
    expect(h).toMatch(/\n {2}OUT\.png\s+what to write\n/)
  })

  it('aligns the descriptions in one column', () => {
    const rows = help.split('\n').filter(l => l.startsWith('  '))
    expect(rows).toHaveLength(7)
    expect(new Set(rows.map(l => /^\s+\S+(?: \S+)*\s{2,}/.exec(l)![0].length)).size).toBe(1)
  })
})
