// js-libp2p 3.x interop peer for mycel. Run with the pinned Node 22:
//   interop/js/node_modules/node/bin/node interop/js/peer.mjs listen --transport tcp --security noise --muxer yamux
//   interop/js/node_modules/node/bin/node interop/js/peer.mjs dial --transport tcp --security noise --muxer yamux <maddr>/p2p/<id>
//   ... --transport quic-v1 --security none --muxer none ...   (QUIC: @chainsafe/libp2p-quic, see quic-reset.mjs)
// Same contract as interop/cases.py (the Python peers): one JSON line on stdout, logs on stderr,
// exit 3 with {"unsupported": ...} for a stack js-libp2p cannot run.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { mplex } from '@libp2p/mplex'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { randomBytes } from 'node:crypto'

const ECHO = '/echo/1.0.0'
const PERF = '/perf/1.0.0'
const CHUNK = 64 * 1024
const EXIT_UNSUPPORTED = 3
const STREAM_LIMIT = 1024 // per-protocol stream cap on both sides; beyond it js refuses the stream

function log (...args) {
  console.error(new Date().toISOString(), 'js-peer', ...args)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function parseArgs (argv) {
  const [mode, ...rest] = argv
  if (mode !== 'listen' && mode !== 'dial') throw new Error('usage: peer.mjs listen|dial --transport T --security S --muxer M [--ip IP] [--case-timeout S] [target]')
  const opts = { mode, ip: '127.0.0.1', caseTimeout: 30, target: undefined }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (a === '--transport') opts.transport = rest[++i]
    else if (a === '--security') opts.security = rest[++i]
    else if (a === '--muxer') opts.muxer = rest[++i]
    else if (a === '--ip') opts.ip = rest[++i]
    else if (a === '--case-timeout') opts.caseTimeout = Number(rest[++i])
    else if (!a.startsWith('--') && opts.target === undefined) opts.target = a
    else throw new Error(`unknown argument ${a}`)
  }
  if (!opts.transport || !opts.security || !opts.muxer) throw new Error('--transport, --security and --muxer are required')
  if (mode === 'dial' && opts.target === undefined) throw new Error('dial needs a target multiaddr')
  return opts
}

function unsupportedReason ({ transport, security, muxer, ip }) {
  if (transport === 'quic-v1') {
    if (security !== 'none' || muxer !== 'none') return `quic-v1 brings its own security and streams: --security none --muxer none, not ${security}/${muxer}`
    return ip !== '127.0.0.1' ? 'interop peers stay on 127.0.0.1' : null
  }
  if (transport !== 'tcp') return `transport ${transport}: this js peer has tcp and quic-v1 (@chainsafe/libp2p-quic)`
  if (!['noise', 'tls'].includes(security)) return `security ${security}: js-libp2p offers noise and tls`
  if (!['yamux', 'mplex'].includes(muxer)) return `muxer ${muxer}: js-libp2p offers yamux and mplex`
  if (ip !== '127.0.0.1') return 'interop peers stay on 127.0.0.1'
  return null
}

// The listen multiaddr prefix of our transport (also what the listener's printed addrs start with).
function addrPrefix (opts) {
  return opts.transport === 'quic-v1' ? `/ip4/${opts.ip}/udp/` : `/ip4/${opts.ip}/tcp/`
}

async function stackOptions (opts) {
  if (opts.transport === 'quic-v1') {
    // loaded only for QUIC (a native binding); quic-reset.mjs: libp2p-quic 2.1.1 reads a remote reset as EOF
    const { quic } = await import('@chainsafe/libp2p-quic')
    await import('./quic-reset.mjs')
    // QUIC brings TLS 1.3 and its own streams: no connection encrypter or muxer of libp2p's
    return { transports: [quic()], connectionEncrypters: [], streamMuxers: [] }
  }
  return {
    transports: [tcp()],
    connectionEncrypters: [opts.security === 'tls' ? tls() : noise()],
    // js mplex closes a connection that opens more than 5 streams per second (disconnectThreshold): off
    streamMuxers: [opts.muxer === 'mplex' ? mplex({ disconnectThreshold: 1e9 }) : yamux()]
  }
}

async function makeNode (opts) {
  const listen = opts.transport === 'quic-v1' ? `/ip4/${opts.ip}/udp/0/quic-v1` : `/ip4/${opts.ip}/tcp/0`
  return createLibp2p({
    addresses: { listen: opts.mode === 'listen' ? [listen] : [] },
    ...await stackOptions(opts),
    services: {
      // the listener identifies whoever connects; the dialer runs identify explicitly (a case)
      identify: identify({ runOnConnectionOpen: opts.mode === 'listen', maxInboundStreams: 32, maxOutboundStreams: 32 }),
      // the default of one outbound ping stream per peer gets in the way of repeated pings
      ping: ping({ maxInboundStreams: 64, maxOutboundStreams: 64 })
    },
    connectionManager: {
      inboundConnectionThreshold: 1e9, // default 5/s per IP: benchmarks and matrices dial faster
      maxIncomingPendingConnections: 1024,
      maxConnections: 4096
    },
    connectionMonitor: { enabled: false } // no background pings on our connections
  })
}

// --- listener ------------------------------------------------------------------------------------

function watchReset (stream, connection) {
  let reported = false
  stream.addEventListener('close', (evt) => {
    if (evt.error != null && evt.local !== true && !reported) {
      reported = true
      emit({ event: 'stream_reset', protocol: stream.protocol, peer: connection.remotePeer.toString(), detail: `${evt.error.name}: ${evt.error.message}` })
    }
  })
}

// The chunks of an inbound stream until the remote's EOF. Not `for await (const chunk of stream)`:
// js-libp2p 3.3.11 dispatches 'remoteCloseWrite' and 'end' only once, so when the remote's FIN
// arrives during protocol negotiation (data + FIN sent optimistically, as go and mycel do), both fire
// before the handler runs; the data is then unshifted back into the stream and the stream's own
// iterator, which waits for 'remoteCloseWrite'/'close', never ends. Here the remote write status is
// checked directly: closed + nothing buffered = EOF.
async function * inbound (stream) {
  const queue = []
  let failure = null
  let closed = false
  let wake = null
  const notify = () => { if (wake != null) { const w = wake; wake = null; w() } }
  const onMessage = (evt) => { queue.push(evt.data); notify() }
  const onClose = (evt) => { if (evt.error != null) failure = evt.error; closed = true; notify() }
  stream.addEventListener('message', onMessage)
  stream.addEventListener('remoteCloseWrite', notify)
  stream.addEventListener('close', onClose)
  try {
    while (true) {
      if (queue.length > 0) {
        yield queue.shift()
      } else if (failure != null) {
        throw failure
      } else if (closed || (stream.remoteWriteStatus === 'closed' && stream.readBufferLength === 0)) {
        return
      } else {
        await new Promise((resolve) => { wake = resolve })
      }
    }
  } finally {
    stream.removeEventListener('message', onMessage)
    stream.removeEventListener('remoteCloseWrite', notify)
    stream.removeEventListener('close', onClose)
  }
}

async function sendAll (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

async function echoHandler (stream, connection) {
  watchReset(stream, connection)
  let total = 0
  try {
    for await (const chunk of inbound(stream)) {
      total += chunk.byteLength
      await sendAll(stream, chunk)
    }
    await stream.close()
    log(`echo from ${connection.remotePeer}: ${total} bytes, then EOF`)
  } catch (err) {
    log(`echo from ${connection.remotePeer}: ${total} bytes, then ${err.name}: ${err.message}`)
    stream.abort(err)
  }
}

async function perfHandler (stream, connection) {
  // /perf/1.0.0: u64 big-endian = bytes to send back; drain the upload to EOF; then send; then close
  const header = new Uint8Array(8)
  let have = 0
  let uploaded = 0
  try {
    for await (const chunk of inbound(stream)) {
      const buf = chunk.subarray()
      uploaded += buf.byteLength
      if (have < 8) {
        const take = Math.min(8 - have, buf.byteLength)
        header.set(buf.subarray(0, take), have)
        have += take
      }
    }
    if (have < 8) throw new Error(`perf: stream ended after ${have} header bytes`)
    let remaining = new DataView(header.buffer).getBigUint64(0, false)
    const block = new Uint8Array(CHUNK)
    while (remaining > 0n) {
      const n = remaining < BigInt(CHUNK) ? Number(remaining) : CHUNK
      await sendAll(stream, n === CHUNK ? block : block.subarray(0, n))
      remaining -= BigInt(n)
    }
    await stream.close()
    log(`perf from ${connection.remotePeer}: received ${uploaded - 8} bytes, sent the requested amount`)
  } catch (err) {
    log(`perf from ${connection.remotePeer}: ${err.name}: ${err.message}`)
    stream.abort(err)
  }
}

async function listen (opts) {
  const node = await makeNode(opts)
  await node.handle(ECHO, echoHandler, { maxInboundStreams: STREAM_LIMIT, maxOutboundStreams: STREAM_LIMIT })
  await node.handle(PERF, perfHandler, { maxInboundStreams: STREAM_LIMIT, maxOutboundStreams: STREAM_LIMIT })
  const peerId = node.peerId.toString()
  const addrs = node.getMultiaddrs().map(String).filter(a => a.startsWith(addrPrefix(opts)))
  emit({ peer_id: peerId, addrs })
  log(`listening as ${peerId} on ${addrs.join(' ')}`)
  await new Promise((resolve) => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.on('error', resolve)
    process.stdin.resume()
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  })
  log('shutting down')
  await node.stop()
}

// --- dialer --------------------------------------------------------------------------------------

class CaseFailed extends Error {}

async function readUntilEof (stream, limit) {
  const parts = []
  let total = 0
  for await (const chunk of stream) {
    const buf = chunk.subarray()
    total += buf.byteLength
    if (total > limit) throw new CaseFailed(`received ${total} bytes, more than the ${limit} sent`)
    parts.push(buf)
  }
  return Buffer.concat(parts, total)
}

async function pumpOut (stream, payload) {
  for (let off = 0; off < payload.byteLength; off += CHUNK) {
    await sendAll(stream, payload.subarray(off, off + CHUNK))
  }
}

function compare (payload, got) {
  if (!payload.equals(got)) {
    let i = 0
    while (i < Math.min(payload.length, got.length) && payload[i] === got[i]) i++
    throw new CaseFailed(`echo differs: sent ${payload.length} bytes, got ${got.length}, first difference at ${i}`)
  }
}

async function echoRoundtrip (conn, payload) {
  const stream = await conn.newStream(ECHO, { maxOutboundStreams: STREAM_LIMIT })
  try {
    const reading = readUntilEof(stream, payload.byteLength)
    await pumpOut(stream, payload)
    await stream.close()
    return await reading
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

async function guarded (name, fn, timeoutSec) {
  let timer
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, detail: `timed out after ${timeoutSec}s` }), timeoutSec * 1000)
  })
  try {
    const report = await Promise.race([fn(), timeout])
    return { ok: true, detail: '', ...report }
  } catch (err) {
    log(`case ${name} failed:`, err)
    return { ok: false, detail: err instanceof CaseFailed ? err.message : `${err.name}: ${err.message}` }
  } finally {
    clearTimeout(timer)
  }
}

async function dial (opts) {
  const node = await makeNode(opts)
  const target = multiaddr(opts.target)
  let conn = null
  const needConn = () => {
    if (conn == null) throw new CaseFailed('not connected')
    return conn
  }

  const steps = {
    connect: async () => {
      const start = performance.now()
      conn = await node.dial(target)
      return { detail: `dialed; ${conn.encryption} + ${conn.multiplexer}`, ms: round(performance.now() - start) }
    },
    identify: async () => {
      const res = await node.services.identify.identify(needConn())
      const peer = await node.peerStore.get(res.peerId)
      return {
        ok: res.protocols.length > 0,
        detail: 'identify service result; signed_peer_record as checked by js (openAndCertify)',
        agent_version: res.agentVersion ?? '',
        protocol_version: res.protocolVersion ?? '',
        protocols: res.protocols,
        listen_addrs: res.listenAddrs.map(String),
        observed_addr: res.observedAddr != null ? String(res.observedAddr) : '',
        signed_peer_record: res.signedPeerRecord != null ? 'verified' : 'absent',
        signed_peer_record_addrs: res.signedPeerRecord != null ? res.signedPeerRecord.addresses.map(String) : [],
        peerstore_has_envelope: peer.peerRecordEnvelope != null
      }
    },
    ping: async () => {
      const rtt = await node.services.ping.ping(needConn().remotePeer)
      return { detail: 'js ping service (integer ms)', rtt_ms: rtt }
    },
    echo_1mib: async () => {
      const payload = randomBytes(1 << 20)
      const start = performance.now()
      const got = await echoRoundtrip(needConn(), payload)
      const ms = performance.now() - start
      compare(payload, got)
      return { detail: '1 MiB echoed intact (write, half-close, read to EOF)', bytes: payload.length, ms: round(ms), mb_s: round(payload.length / ms / 1000, 2) }
    },
    echo_64_streams: async () => {
      const n = 64
      const size = 64 * 1024
      const start = performance.now()
      const results = await Promise.allSettled(Array.from({ length: n }, async () => {
        const payload = randomBytes(size)
        compare(payload, await echoRoundtrip(needConn(), payload))
      }))
      const ms = performance.now() - start
      const bad = results.map((r, i) => [r, i]).filter(([r]) => r.status === 'rejected')
      const good = n - bad.length
      let detail = `${good}/${n} streams of ${size} bytes echoed intact`
      if (bad.length > 0) detail += `; first error: stream ${bad[0][1]}: ${bad[0][0].reason.message}`
      return { ok: good === n, detail, streams: n, ok_streams: good, ms: round(ms) }
    },
    half_close: async () => {
      const payload = randomBytes(10000)
      const stream = await needConn().newStream(ECHO, { maxOutboundStreams: STREAM_LIMIT })
      const reading = readUntilEof(stream, payload.byteLength)
      await pumpOut(stream, payload)
      await stream.close()
      const got = await reading
      if (got.length < payload.length) throw new CaseFailed(`EOF after ${got.length} of ${payload.length} bytes: the echo was cut short by the half-close`)
      compare(payload, got)
      return { detail: 'all bytes echoed after our half-close, then EOF', sent: payload.length, received: got.length }
    },
    reset: async () => {
      const c = needConn()
      const stream = await c.newStream(ECHO, { maxOutboundStreams: STREAM_LIMIT })
      const first = new Promise((resolve, reject) => {
        stream.addEventListener('message', resolve, { once: true })
        stream.addEventListener('close', () => reject(new CaseFailed('echo stream ended before anything was echoed')), { once: true })
      })
      stream.send(Buffer.alloc(64, 'r'))
      await first
      stream.abort(new Error('interop reset'))
      const payload = randomBytes(4096)
      compare(payload, await echoRoundtrip(c, payload))
      return { detail: `stream.abort() sent a ${opts.transport === 'quic-v1' ? 'QUIC RESET_STREAM' : opts.muxer + ' reset'}; a new echo stream on the same connection then worked` }
    }
  }

  const results = {}
  for (const [name, fn] of Object.entries(steps)) {
    results[name] = await guarded(name, fn, opts.caseTimeout)
  }
  emit(results)
  await node.stop()
}

function round (x, digits = 3) {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

async function main () {
  let opts
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (err) {
    console.error(err.message)
    process.exit(2)
  }
  const reason = unsupportedReason(opts)
  if (reason != null) {
    emit({ unsupported: reason })
    process.exit(EXIT_UNSUPPORTED)
  }
  if (opts.mode === 'listen') await listen(opts)
  else await dial(opts)
  process.exit(0)
}

main().catch((err) => {
  log('fatal:', err)
  process.exit(1)
})
