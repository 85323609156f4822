/**
 * deploy/systemd/capmesh-controller.service through systemd's own checker,
 * `systemd-analyze verify` (Debian: the systemd package). Part of
 * `npm run test:containers` with the other deploy/ checks that need tools
 * beyond Node; test/unit/deploy.test.ts checks the unit's directives and
 * command line in `npm test`.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const ROOT = resolve(import.meta.dirname, '../..')

describe('deploy/systemd/capmesh-controller.service', () => {
  const unit = readFileSync(join(ROOT, 'deploy/systemd/capmesh-controller.service'), 'utf8')

  it('systemd-analyze verify finds nothing to say about it', () => {
    // It wants ExecStart's program to exist, so a copy runs this Node instead of /usr/bin/node.
    const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find(p => existsSync(p))
    expect(analyze, 'systemd-analyze is installed').toBeDefined()
    const dir = mkdtempSync(join(tmpdir(), 'capmesh-unit-'))
    try {
      const copy = join(dir, 'capmesh-controller.service')
      writeFileSync(copy, unit.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `))
      const out = execFileSync(analyze!, ['verify', copy], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      expect(out.trim()).toBe('')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
