// Add the platform packages our npm registry mirror lacks to package-lock.json, so that `npm ci` accepts it.
//   cd interop/js && npm install && node complete-lock.mjs [--check]
// Why: @chainsafe/libp2p-quic lists seven prebuilt binaries (napi-rs) as optionalDependencies. The mirror
// only has @chainsafe/libp2p-quic-linux-x64-gnu, so `npm install` writes a lock without the other six and
// `npm ci` then rejects it ("Missing: ... from lock file"). An entry carrying its package's os/cpu/libc
// and "optional": true is what npm itself writes for a binary of another platform: npm ci marks it
// inactive on this machine and never fetches it (npm 11; npm 9, which ignores "libc", tries the musl
// binary, gets no such version and skips it as a failed optional dependency). The os/cpu/libc come from
// the parent package's own napi.targets (read from node_modules); version = the parent's pinned spec.
// The added entries have no "integrity": the mirror has no tarball to hash. Nothing is fetched.
// --check: exit 1 if an entry is missing (nothing written).

import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
const LOCK = join(HERE, 'package-lock.json')

// napi-rs target triple -> npm platform fields (the ones @chainsafe/libp2p-quic publishes)
const TRIPLES = {
  'aarch64-apple-darwin': { suffix: 'darwin-arm64', os: 'darwin', cpu: 'arm64' },
  'x86_64-apple-darwin': { suffix: 'darwin-x64', os: 'darwin', cpu: 'x64' },
  'aarch64-unknown-linux-gnu': { suffix: 'linux-arm64-gnu', os: 'linux', cpu: 'arm64', libc: 'glibc' },
  'aarch64-unknown-linux-musl': { suffix: 'linux-arm64-musl', os: 'linux', cpu: 'arm64', libc: 'musl' },
  'x86_64-unknown-linux-gnu': { suffix: 'linux-x64-gnu', os: 'linux', cpu: 'x64', libc: 'glibc' },
  'x86_64-unknown-linux-musl': { suffix: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl' },
  'x86_64-pc-windows-msvc': { suffix: 'win32-x64-msvc', os: 'win32', cpu: 'x64' }
}

const lock = JSON.parse(readFileSync(LOCK, 'utf8'))
const packages = lock.packages
const added = []
for (const [path, entry] of Object.entries(packages)) {
  const optional = entry.optionalDependencies ?? {}
  const missing = Object.keys(optional).filter((name) => packages[`node_modules/${name}`] == null)
  if (path === '' || missing.length === 0) continue
  const manifest = JSON.parse(readFileSync(join(HERE, path, 'package.json'), 'utf8'))
  const byName = new Map()
  for (const triple of manifest.napi?.targets ?? []) {
    const t = TRIPLES[triple]
    if (t == null) throw new Error(`${path}: unknown napi target ${triple}`)
    byName.set(`${manifest.napi.packageName ?? manifest.name}-${t.suffix}`, t)
  }
  for (const name of missing) {
    const t = byName.get(name)
    if (t == null) throw new Error(`${path}: optional ${name} is no napi target of ${manifest.name}: add it by hand`)
    const spec = optional[name]
    if (!/^\d+\.\d+\.\d+$/.test(spec)) throw new Error(`${path}: optional ${name}@${spec} is not an exact version`)
    const e = { version: spec, cpu: [t.cpu] }
    if (t.libc != null) e.libc = [t.libc]
    Object.assign(e, { license: manifest.license, optional: true, os: [t.os] })
    packages[`node_modules/${name}`] = e
    added.push(`${name}@${spec} (${t.os}/${t.cpu}${t.libc != null ? '/' + t.libc : ''})`)
  }
}

if (process.argv.includes('--check')) {
  if (added.length > 0) {
    console.error(`package-lock.json lacks: ${added.join(', ')}; run node complete-lock.mjs`)
    process.exit(1)
  }
  process.exit(0)
}
if (added.length === 0) {
  console.error('package-lock.json is complete')
} else {
  // the order npm writes: root first, then paths in localeCompare order
  lock.packages = Object.fromEntries(Object.entries(packages).sort(([a], [b]) => a === '' ? -1 : b === '' ? 1 : a.localeCompare(b, 'en')))
  writeFileSync(LOCK, JSON.stringify(lock, null, 2) + '\n')
  console.error(`added to package-lock.json: ${added.join(', ')}`)
}
