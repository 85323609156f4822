/**
 * Who a `capmesh` command calls controllers as: `--cert` and `--key` (a
 * client certificate), or `--token` (a bearer token, or `@FILE` to read it
 * from a file); otherwise the identity of the command's role found in the
 * TLS dir (`operator.pem` for status and state, `client.pem` for route; what
 * `capmesh local` and `capmesh certs issue` write), or none (a controller
 * with auth on then answers 401, saying what is missing).
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, TlsError } from '../errors.ts'
import type { HttpsClientInit } from '../utils/https-client.ts'

export interface CallerOptions {
  /** The TLS dir whose `ca.pem` to trust (and where default identities are looked for). */
  tlsDir?: string
  /** A CA file to trust instead of the TLS dir's. */
  ca?: string
  cert?: string
  key?: string
  token?: string
}

const read = (file: string, what: string): string => {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${file}: ${(err as Error).message}`)
  }
}

/** The client options (CA, certificate and key, or token) a command's flags ask for; `roles`: default identities to look for, in order. */
export function callerTls (opts: CallerOptions, roles: string[]): Pick<HttpsClientInit, 'ca' | 'cert' | 'key' | 'token'> {
  const dir = opts.tlsDir ?? '.capmesh/tls'
  if (opts.ca == null && !existsSync(join(dir, 'ca.pem'))) throw new TlsError(`no CA in ${dir} (run \`capmesh certs init --dir ${dir}\`, or give --ca)`)
  const ca = read(opts.ca ?? join(dir, 'ca.pem'), 'CA certificate')
  if ((opts.cert == null) !== (opts.key == null)) throw new ConfigError('--cert and --key go together')
  if (opts.cert != null && opts.token != null) throw new ConfigError('give either --cert/--key or --token, not both')
  if (opts.cert != null) return { ca, cert: read(opts.cert, 'client certificate'), key: read(opts.key!, 'client key') }
  if (opts.token != null) return { ca, token: opts.token.startsWith('@') ? read(opts.token.slice(1), 'token file').trim() : opts.token }
  for (const role of roles) {
    const cert = join(dir, `${role}.pem`)
    const key = join(dir, `${role}-key.pem`)
    if (existsSync(cert) && existsSync(key)) return { ca, cert: read(cert, 'client certificate'), key: read(key, 'client key') }
  }
  return { ca }
}

/** The flags every calling command takes (commander `.option` arguments). */
export const CALLER_FLAGS: Array<[string, string]> = [
  ['--cert <file>', 'client certificate (PEM) to call as (default: the command\'s identity in the TLS dir, if any)'],
  ['--key <file>', 'its private key (PEM)'],
  ['--token <jwt>', 'a bearer token to call as instead of a certificate (@FILE reads it from a file)']
]
