// js-libp2p benchmark peer, the same contract as mycel_peer.py:
//   node js_peer.mjs server [--stack S]           -> {"peer_id", "addrs", "pid"}; serves /perf/1.0.0 and ping until stdin closes
//   node js_peer.mjs client perf ADDR --bytes N [--streams K] [--server-pid P ...] [--directions upload download]
//   node js_peer.mjs client dials ADDR --count N  -> fresh dial + one ping, N times
//   node js_peer.mjs client ping ADDR --count N   -> N pings on one open stream
// --stack (server and client alike): noise (default) = TCP + Noise + yamux, tls = TCP + TLS + yamux,
// quic = /quic-v1 (@chainsafe/libp2p-quic 2.1.1, its default options); the server prints only that
// transport's addresses and the client can dial only it.
// Run with the pinned Node 22 (interop/js/node_modules/node/bin/node). The packages come from
// interop/js/node_modules (MYCEL_JS_DIR overrides the directory holding node_modules): a resolve hook
// maps this script's bare imports there, as an import map would. Perf is our own code over plain js
// streams (this js-libp2p install has no perf service).

import { register } from 'node:module'
import { pathToFileURL, fileURLToPath } from 'node:url'
import { dirname, resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'

const HERE = dirname(fileURLToPath(import.meta.url))
const JS_DIR = process.env.MYCEL_JS_DIR ?? resolve(HERE, '..', '..', 'interop', 'js')
const HOOKS = `
export async function resolve (specifier, context, next) {
  const bare = !/^(\\.|\\/|[a-z]+:)/.test(specifier)
  if (bare && context.parentURL === ${JSON.stringify(import.meta.url)}) {
    return next(specifier, { ...context, parentURL: ${JSON.stringify(pathToFileURL(resolve(JS_DIR, 'peer.mjs')).href)} })
  }
  return next(specifier, context)
}`
register('data:text/javascript,' + encodeURIComponent(HOOKS))

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { tls } = await import('@libp2p/tls')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')

const PERF = '/perf/1.0.0'
const PING = '/ipfs/ping/1.0.0'
const BLOCK = 64 * 1024 // js yamux splits writes into 64 KiB messages anyway
const MAX_STREAMS = 1_000_000 // the memory test holds 10,000 idle streams on one connection
const TICKS = 100 // USER_HZ on Linux
const STACKS = ['noise', 'tls', 'quic']

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function parseArgs (argv) {
  const [mode, ...rest] = argv
  const opts = { mode, stack: 'noise', test: null, addr: null, bytes: 1e9, streams: 1, count: 200, warmup: 5, serverPid: [], directions: ['upload', 'download'] }
  const positional = []
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '--bytes') opts.bytes = Number(rest[++i])
    else if (a === '--streams') opts.streams = Number(rest[++i])
    else if (a === '--count') opts.count = Number(rest[++i])
    else if (a === '--warmup') opts.warmup = Number(rest[++i])
    else if (a === '--server-pid') opts.serverPid.push(Number(rest[++i]))
    else if (a === '--stack') opts.stack = rest[++i]
    else if (a === '--directions') {
      opts.directions = []
      while (i + 1 < rest.length && !rest[i + 1].startsWith('--')) opts.directions.push(rest[++i])
    } else if (a.startsWith('--')) throw new Error(`unknown option ${a}`)
    else positional.push(a)
  }
  if (mode === 'client') [opts.test, opts.addr] = positional
  else if (mode !== 'server') throw new Error('usage: js_peer.mjs server | client perf|dials|ping ADDR [--stack noise|tls|quic] [options]')
  if (!STACKS.includes(opts.stack)) throw new Error(`--stack ${opts.stack}: one of ${STACKS.join(', ')}`)
  return opts
}

function procCpu (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / TICKS
}

function systemBusy () {
  const f = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number)
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / TICKS
}

function selfCpu () {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

// the listen address prefix of a stack (also the prefix of the addresses the server prints)
function addrPrefix (stack) {
  return stack === 'quic' ? '/ip4/127.0.0.1/udp/' : '/ip4/127.0.0.1/tcp/'
}

async function stackOptions (stack) {
  if (stack === 'quic') {
    // QUIC brings TLS 1.3 and its own streams (at most 256 concurrent per connection by default);
    // its native binding is loaded only when asked for
    const { quic } = await import('@chainsafe/libp2p-quic')
    return { transports: [quic()], connectionEncrypters: [], streamMuxers: [] }
  }
  return {
    transports: [tcp()],
    connectionEncrypters: [stack === 'tls' ? tls() : noise()],
    streamMuxers: [yamux({ maxInboundStreams: MAX_STREAMS, maxOutboundStreams: MAX_STREAMS })]
  }
}

async function makeNode (listen, stack) {
  return createLibp2p({
    addresses: { listen: listen ? [stack === 'quic' ? '/ip4/127.0.0.1/udp/0/quic-v1' : '/ip4/127.0.0.1/tcp/0'] : [] },
    ...await stackOptions(stack),
    services: { ping: ping({ maxInboundStreams: 1024, maxOutboundStreams: 1024 }) },
    connectionManager: {
      inboundConnectionThreshold: 1e9, // default 5/s per IP: the dial and memory tests connect faster
      maxIncomingPendingConnections: 1024,
      maxConnections: 1e6
    },
    connectionMonitor: { enabled: false } // no background pings
  })
}

async function sendAll (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

// --- server ----------------------------------------------------------------------------------------

async function perfHandler (stream) {
  // /perf/1.0.0: u64 BE = bytes to send back; read the upload to EOF; send; close
  const header = new Uint8Array(8)
  let have = 0
  try {
    for await (const chunk of stream) {
      if (have < 8) {
        const buf = chunk.subarray()
        const take = Math.min(8 - have, buf.byteLength)
        header.set(buf.subarray(0, take), have)
        have += take
      }
    }
    if (have < 8) throw new Error('perf stream ended before the 8-byte length')
    let remaining = Number(new DataView(header.buffer).getBigUint64(0, false))
    const block = new Uint8Array(BLOCK)
    while (remaining > 0) {
      const n = Math.min(remaining, BLOCK)
      await sendAll(stream, n === BLOCK ? block : block.subarray(0, n))
      remaining -= n
    }
    await stream.close()
  } catch (err) {
    stream.abort(err)
  }
}

async function server (opts) {
  const node = await makeNode(true, opts.stack)
  await node.handle(PERF, (stream) => { perfHandler(stream) }, { maxInboundStreams: MAX_STREAMS, maxOutboundStreams: MAX_STREAMS })
  const addrs = node.getMultiaddrs().map(String).filter(a => a.startsWith(addrPrefix(opts.stack)))
  emit({ peer_id: node.peerId.toString(), addrs, pid: process.pid })
  await new Promise((resolve) => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.resume()
    process.on('SIGTERM', resolve)
  })
  await node.stop()
}

// --- client ----------------------------------------------------------------------------------------

async function drain (stream) {
  let total = 0
  for await (const chunk of stream) total += chunk.byteLength
  return total
}

async function perfStream (stream, upload, download) {
  const header = new Uint8Array(8)
  new DataView(header.buffer).setBigUint64(0, BigInt(download), false)
  const reading = drain(stream)
  await sendAll(stream, header)
  const block = new Uint8Array(BLOCK)
  for (let left = upload; left > 0; left -= BLOCK) {
    await sendAll(stream, left >= BLOCK ? block : block.subarray(0, left))
  }
  await stream.close()
  const got = await reading
  if (got !== download) throw new Error(`perf: asked for ${download} bytes, got ${got}`)
}

async function perf (node, opts) {
  const conn = await node.dial(multiaddr(opts.addr))
  const n = opts.bytes
  const k = opts.streams
  const serverCpu = () => opts.serverPid.reduce((s, p) => s + procCpu(p), 0)
  const phases = []
  for (const direction of opts.directions) {
    const sizes = Array.from({ length: k }, (_, i) => Math.floor(n / k) + (i < n % k ? 1 : 0))
    const streams = await Promise.all(sizes.map(() => conn.newStream(PERF, { maxOutboundStreams: MAX_STREAMS })))
    const y0 = systemBusy(); const c0 = selfCpu(); const s0 = serverCpu(); const t0 = performance.now()
    await Promise.all(streams.map((s, i) => direction === 'upload' ? perfStream(s, sizes[i], 0) : perfStream(s, 0, sizes[i])))
    const t1 = performance.now(); const c1 = selfCpu(); const s1 = serverCpu(); const y1 = systemBusy()
    phases.push({ direction, bytes: n, streams: k, seconds: (t1 - t0) / 1000, client_cpu: c1 - c0, server_cpu: s1 - s0, system_cpu: y1 - y0 })
  }
  await conn.close()
  return { phases }
}

async function readExactly (iter, n) {
  const parts = []
  let have = 0
  while (have < n) {
    const { value, done } = await iter.next()
    if (done) throw new Error(`EOF after ${have} of ${n} bytes`)
    const buf = value.subarray()
    parts.push(buf)
    have += buf.byteLength
  }
  return Buffer.concat(parts, have)
}

async function dials (node, opts) {
  const ma = multiaddr(opts.addr)
  const seconds = []
  const connect = []
  for (let i = 0; i < opts.count + opts.warmup; i++) {
    const t0 = performance.now()
    const conn = await node.dial(ma)
    const t1 = performance.now()
    await node.services.ping.ping(ma)
    const t2 = performance.now()
    if (i >= opts.warmup) {
      seconds.push((t2 - t0) / 1000)
      connect.push((t1 - t0) / 1000)
    }
    await conn.close()
  }
  return { seconds, connect_seconds: connect }
}

async function pings (node, opts) {
  const conn = await node.dial(multiaddr(opts.addr))
  const stream = await conn.newStream(PING)
  const iter = stream[Symbol.asyncIterator]()
  const seconds = []
  for (let i = 0; i < opts.count + opts.warmup; i++) {
    const payload = randomBytes(32)
    const t0 = performance.now()
    await sendAll(stream, payload)
    const echo = await readExactly(iter, 32)
    const t1 = performance.now()
    if (!echo.equals(payload)) throw new Error('ping echo differs')
    if (i >= opts.warmup) seconds.push((t1 - t0) / 1000)
  }
  await stream.close()
  await conn.close()
  return { seconds }
}

async function client (opts) {
  const node = await makeNode(false, opts.stack)
  const run = { perf, dials, ping: pings }[opts.test]
  if (run == null) throw new Error(`unknown test ${opts.test}`)
  const result = await run(node, opts)
  emit(result)
  await node.stop()
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.mode === 'server') await server(opts)
  else await client(opts)
  process.exit(0)
}

main().catch((err) => {
  console.error('js_peer fatal:', err)
  process.exit(1)
})
