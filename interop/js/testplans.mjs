// js-libp2p 3.x in the libp2p/test-plans transport-interop role, to check mycel's entrypoint against.
//   interop/js/node_modules/node/bin/node interop/js/testplans.mjs     # configured by env only
// Env (test-plans lower-case or unified-testing upper-case): transport/TRANSPORT (tcp or quic-v1),
// security/SECURE_CHANNEL, muxer/MUXER (both ignored for quic-v1, which brings its own), is_dialer/IS_DIALER,
// ip/LISTENER_IP, redis_addr/REDIS_ADDR, test_timeout_seconds, TEST_KEY (key <TEST_KEY>_listener_multiaddr,
// else listenerAddr).
// Listener: RPUSH <addr>/p2p/<id>, then sleep the timeout and exit 1. Dialer: BLPOP, dial, ping, print
// {"handshakePlusOneRTTMillis": ..., "pingRTTMilllis": ...} on stdout, exit 0. Logs on stderr.
// Redis is spoken with a tiny RESP client over node:net (no npm redis dependency).

import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { mplex } from '@libp2p/mplex'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { connect } from 'node:net'
import { networkInterfaces } from 'node:os'

const MAX_REPLY = 1024 * 1024 // a longer Redis reply is an error, not buffered further

function log (...args) {
  console.error(new Date().toISOString(), 'js-testplans', ...args)
}

function env (...names) {
  for (const n of names) {
    const v = process.env[n]
    if (v != null && v.trim() !== '') return v.trim()
  }
  return undefined
}

// --- RESP ---------------------------------------------------------------------------------------

function encodeCommand (args) {
  const parts = [`*${args.length}\r\n`]
  for (const a of args) parts.push(`$${Buffer.byteLength(String(a))}\r\n${a}\r\n`)
  return Buffer.from(parts.join(''))
}

// Parse one reply at `pos`; returns [value, end] or null when more bytes are needed.
function parseReply (buf, pos) {
  const eol = buf.indexOf('\r\n', pos)
  if (eol < 0) return null
  const kind = String.fromCharCode(buf[pos])
  const line = buf.toString('utf8', pos + 1, eol)
  const next = eol + 2
  if (kind === '+') return [line, next]
  if (kind === '-') return [new Error(`redis: ${line}`), next]
  if (kind === ':') return [Number(line), next]
  if (kind === '$') {
    const n = Number(line)
    if (n === -1) return [null, next]
    if (buf.length < next + n + 2) return null
    return [buf.toString('utf8', next, next + n), next + n + 2]
  }
  if (kind === '*') {
    const n = Number(line)
    if (n === -1) return [null, next]
    const items = []
    let p = next
    for (let i = 0; i < n; i++) {
      const r = parseReply(buf, p)
      if (r == null) return null
      items.push(r[0])
      p = r[1]
    }
    return [items, p]
  }
  throw new Error(`bad RESP type ${kind}`)
}

class Redis {
  constructor (socket) {
    this.socket = socket
    this.buf = Buffer.alloc(0)
    this.waiters = []
    socket.on('data', (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk])
      if (this.buf.length > MAX_REPLY) {
        this.fail(new Error('redis reply too long'))
        return
      }
      while (this.waiters.length > 0) {
        const r = parseReply(this.buf, 0)
        if (r == null) break
        this.buf = this.buf.subarray(r[1])
        const w = this.waiters.shift()
        if (r[0] instanceof Error) w.reject(r[0])
        else w.resolve(r[0])
      }
    })
    socket.on('error', (err) => this.fail(err))
    socket.on('close', () => this.fail(new Error('redis closed the connection')))
  }

  fail (err) {
    for (const w of this.waiters.splice(0)) w.reject(err)
  }

  static async open (host, port, deadline) {
    let pause = 100
    while (true) {
      try {
        const socket = await new Promise((resolve, reject) => {
          const s = connect({ host, port }, () => resolve(s))
          s.once('error', reject)
        })
        const client = new Redis(socket)
        if (await client.command('PING') !== 'PONG') throw new Error('PING not answered with PONG')
        return client
      } catch (err) {
        if (Date.now() + pause > deadline) throw err
        log(`redis at ${host}:${port} not ready (${err.message}); retrying in ${pause} ms`)
        await new Promise((resolve) => setTimeout(resolve, pause))
        pause = Math.min(pause * 2, 1000)
      }
    }
  }

  command (...args) {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      this.socket.write(encodeCommand(args))
    })
  }

  close () {
    this.socket.destroy()
  }
}

// --- libp2p -------------------------------------------------------------------------------------

function advertisedIp (listenIp) {
  if (listenIp !== '0.0.0.0') return listenIp
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.family === 'IPv4' && !a.internal) return a.address
    }
  }
  log('no non-loopback interface address: publishing 127.0.0.1')
  return '127.0.0.1'
}

async function main () {
  const transport = env('TRANSPORT', 'transport')
  const security = env('SECURE_CHANNEL', 'security')
  const muxer = env('MUXER', 'muxer')
  const isDialer = env('IS_DIALER', 'is_dialer') === 'true'
  const ip = env('LISTENER_IP', 'ip') ?? '0.0.0.0'
  const [redisHost, redisPort] = (env('REDIS_ADDR', 'redis_addr') ?? 'redis:6379').split(':')
  const timeoutSecs = Number(env('test_timeout_seconds', 'TEST_TIMEOUT_SECS', 'test_timeout_secs') ?? 180)
  const testKey = env('TEST_KEY')
  const key = testKey != null ? `${testKey}_listener_multiaddr` : 'listenerAddr'
  const isQuic = transport === 'quic-v1'
  if (transport !== 'tcp' && !isQuic) throw new Error(`transport ${transport}: this js fixture has tcp and quic-v1`)
  if (!isQuic && !['noise', 'tls'].includes(security)) throw new Error(`security ${security} not supported`)
  if (!isQuic && !['yamux', 'mplex'].includes(muxer)) throw new Error(`muxer ${muxer} not supported`)

  const deadline = Date.now() + timeoutSecs * 1000
  const redis = await Redis.open(redisHost, Number(redisPort), deadline)
  const stack = isQuic
    ? { transports: [(await import('@chainsafe/libp2p-quic')).quic()], connectionEncrypters: [], streamMuxers: [] } // TLS 1.3 + streams built in
    : {
        transports: [tcp()],
        connectionEncrypters: [security === 'tls' ? tls() : noise()],
        streamMuxers: [muxer === 'mplex' ? mplex({ disconnectThreshold: 1e9 }) : yamux()]
      }
  const node = await createLibp2p({
    addresses: { listen: isDialer ? [] : [isQuic ? `/ip4/${ip}/udp/0/quic-v1` : `/ip4/${ip}/tcp/0`] },
    ...stack,
    services: { identify: identify(), ping: ping() },
    connectionMonitor: { enabled: false }
  })
  if (!isDialer) {
    const proto = isQuic ? 'udp' : 'tcp'
    const bound = node.getMultiaddrs().map(String).find(a => a.includes(`/${proto}/`))
    if (bound == null) throw new Error(`no ${proto} listen address in ${node.getMultiaddrs().join(' ')}`)
    const port = bound.split(`/${proto}/`)[1].split('/')[0]
    const addr = `/ip4/${advertisedIp(ip)}/${proto}/${port}${isQuic ? '/quic-v1' : ''}/p2p/${node.peerId}`
    await redis.command('RPUSH', key, addr)
    log(`listening; published ${addr} under ${key}`)
    await new Promise((resolve) => setTimeout(resolve, timeoutSecs * 1000))
    log(`still running after the ${timeoutSecs}s test timeout`)
    process.exit(1)
  }
  const reply = await redis.command('BLPOP', key, String(timeoutSecs))
  if (reply == null) throw new Error(`no listener address under ${key} within ${timeoutSecs}s`)
  const target = multiaddr(reply[1])
  log(`dialing ${target}`)
  const start = performance.now()
  const conn = await node.dial(target)
  const rtt = await node.services.ping.ping(conn.remotePeer)
  const handshakePlusOneRTT = performance.now() - start
  process.stdout.write(JSON.stringify({ handshakePlusOneRTTMillis: handshakePlusOneRTT, pingRTTMilllis: rtt }) + '\n')
  redis.close()
  await node.stop()
  process.exit(0)
}

main().catch((err) => {
  log('failed:', err)
  process.exit(1)
})
