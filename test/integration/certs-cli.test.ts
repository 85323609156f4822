/**
 * `capmesh certs issue`: what a user runs to give a worker, client,
 * operator or metrics scraper its certificate.
 */
import { X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capmesh } from '../helpers/cli.ts'

let root: string
let dir: string

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'capmesh-certs-cli-'))
  dir = join(root, 'tls')
  expect((await capmesh(['certs', 'init', '--dir', dir])).code).toBe(0)
})
afterAll(() => rmSync(root, { recursive: true, force: true }))

describe('capmesh certs issue', () => {
  it('writes the certificate and key and prints them with the identity', async () => {
    const run = await capmesh(['certs', 'issue', '--dir', dir, '--role', 'worker', '--name', 'w1', '--trust-domain', 'prod.example', '--days', '30'])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('identity spiffe://prod.example/worker/w1')
    expect(run.stdout).toContain(`wrote certificate ${join(dir, 'w1.pem')} (client authentication only, valid until `)
    expect(run.stdout).toContain(`wrote key ${join(dir, 'w1-key.pem')}`)
    const cert = new X509Certificate(readFileSync(join(dir, 'w1.pem')))
    expect(cert.subjectAltName).toBe('URI:spiffe://prod.example/worker/w1')
    expect(Math.round((Date.parse(cert.validTo) - Date.now()) / 86_400_000)).toBe(30)
  })

  it.each([
    ['an unknown role', ['--role', 'admin', '--name', 'x'], /--role: expected one of worker, client, operator, metrics/],
    ['a bad name', ['--role', 'client', '--name', 'a b'], /name "a b" must start with a letter or digit/],
    ['a bad --days', ['--role', 'client', '--name', 'x', '--days', 'ten'], /--days: expected an integer 1-3650/],
    ['a bad trust domain', ['--role', 'client', '--name', 'x', '--trust-domain', 'UPPER'], /trust domain "UPPER"/],
    ['a missing --name', ['--role', 'client'], /required option '--name <name>'/]
  ])('exits 2 on %s', async (_, args, message) => {
    const run = await capmesh(['certs', 'issue', '--dir', dir, ...args])
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(message)
    expect(existsSync(join(dir, 'x.pem'))).toBe(false)
  })

  it('exits 1 when the dir has no CA key', async () => {
    const run = await capmesh(['certs', 'issue', '--dir', join(root, 'nothing'), '--role', 'client', '--name', 'c'])
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/no CA in .*capmesh certs init/)
  })
})
