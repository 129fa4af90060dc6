// js-libp2p circuit relay v2 peers for mycel's relay interop tests (tests/interop/test_relay_*.py) and
// benchmarks/relay.py. Run with the pinned Node 22, TCP + Noise + yamux on 127.0.0.1 only:
//   node relay.mjs relay [--unlimited]          a relay (@libp2p/circuit-relay-v2 server); --unlimited: no
//                                               per-circuit limit (for throughput figures)
//   node relay.mjs listen <relay addr>/p2p/<R>  reserve on R, serve /echo/1.0.0 on relayed connections
//   node relay.mjs dial <circuit addr>/p2p/<T> <bytes>   echo <bytes> through the relay, print the result
// Contract: one JSON line on stdout when ready ({peer_id, addrs}) or done (dial: {ok, bytes, limited}),
// logs on stderr; relay and listen run until stdin closes or SIGTERM.

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { multiaddr } from '@multiformats/multiaddr'
import { randomBytes } from 'node:crypto'

const ECHO = '/echo/1.0.0'
const CHUNK = 64 * 1024
const READY_TIMEOUT = 20000

function log (...args) {
  console.error(new Date().toISOString(), 'js-relay', ...args)
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function untilStdinCloses () {
  return new Promise((resolve) => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.on('error', resolve)
    process.stdin.resume()
    process.on('SIGTERM', resolve)
    process.on('SIGINT', resolve)
  })
}

async function sendAll (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

function bytesOf (chunk) {
  return chunk.subarray ? chunk.subarray() : chunk
}

async function echoHandler (stream, connection) {
  let total = 0
  try {
    for await (const chunk of stream) {
      const buf = bytesOf(chunk)
      total += buf.byteLength
      await sendAll(stream, buf)
    }
    await stream.close()
    log(`echo from ${connection.remotePeer} (limited: ${connection.limits != null}): ${total} bytes`)
  } catch (err) {
    log(`echo from ${connection.remotePeer}: ${total} bytes, then ${err.name}: ${err.message}`)
    stream.abort(err)
  }
}

const base = {
  transports: [tcp(), circuitRelayTransport()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  // the tests dial repeatedly from 127.0.0.1: js's default inbound rate limit (5/s per IP) gets in the way
  connectionManager: { inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 1000 }
}

async function runRelay (unlimited) {
  const reservations = unlimited ? { applyDefaultLimit: false, maxReservations: 1024 } : { maxReservations: 1024 }
  const node = await createLibp2p({
    ...base,
    transports: [tcp()],
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    services: { identify: identify(), ping: ping(), relay: circuitRelayServer({ reservations }) }
  })
  const addrs = node.getMultiaddrs().map(String).filter(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  emit({ peer_id: node.peerId.toString(), addrs })
  log(`relay ${node.peerId} on ${addrs.join(' ')} (unlimited: ${unlimited})`)
  await untilStdinCloses()
  await node.stop()
}

async function runListen (relay) {
  const node = await createLibp2p({
    ...base,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0', `${relay}/p2p-circuit`] },
    services: { identify: identify(), ping: ping() }
  })
  await node.handle(ECHO, echoHandler, { runOnLimitedConnection: true })
  const circuits = () => node.getMultiaddrs().map(String).filter(a => a.includes('/p2p-circuit'))
  const deadline = Date.now() + READY_TIMEOUT
  while (circuits().length === 0) {
    if (Date.now() > deadline) throw new Error(`no reservation on ${relay} within ${READY_TIMEOUT} ms`)
    await new Promise((resolve) => node.addEventListener('self:peer:update', resolve, { once: true }))
  }
  emit({ peer_id: node.peerId.toString(), addrs: circuits() })
  log(`listening through ${relay}: ${circuits().join(' ')}`)
  await untilStdinCloses()
  await node.stop()
}

async function runDial (target, size) {
  const node = await createLibp2p({ ...base, services: { identify: identify(), ping: ping() } })
  try {
    const conn = await node.dial(multiaddr(target))
    const stream = await conn.newStream(ECHO, { runOnLimitedConnection: true })
    const payload = randomBytes(size)
    const parts = []
    let got = 0
    const reading = (async () => {
      for await (const chunk of stream) {
        const buf = bytesOf(chunk)
        got += buf.byteLength
        parts.push(Buffer.from(buf))
      }
    })()
    for (let off = 0; off < size; off += CHUNK) await sendAll(stream, payload.subarray(off, off + CHUNK))
    await stream.close()
    await reading
    const ok = Buffer.concat(parts, got).equals(payload)
    emit({ ok, bytes: got, limited: conn.limits != null, remote: conn.remoteAddr.toString() })
  } catch (err) {
    emit({ ok: false, error: `${err.name}: ${err.message}` })
  } finally {
    await node.stop()
  }
}

const [mode, ...rest] = process.argv.slice(2)
try {
  if (mode === 'relay') await runRelay(rest.includes('--unlimited'))
  else if (mode === 'listen' && rest.length === 1) await runListen(rest[0])
  else if (mode === 'dial' && rest.length === 2) await runDial(rest[0], Number(rest[1]))
  else throw new Error('usage: relay.mjs relay [--unlimited] | listen <relay maddr> | dial <circuit maddr> <bytes>')
} catch (err) {
  log(`${err.name}: ${err.message}`)
  process.exitCode = 1
}
process.exit()
