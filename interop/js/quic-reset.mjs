// Workaround for @chainsafe/libp2p-quic 2.1.1: a remote RESET_STREAM reads as a clean EOF.
//   import './quic-reset.mjs'   (before any QUIC stream exists; peer.mjs does)
//
// The bug: QuicStream.readFromStream() loops on the native (quinn) stream's read(). Every native error
// has code 'Unknown' (the Rust side wraps all of them as napi Status::Unknown), and the loop treats
// code 'Unknown' as "stream closed, nothing to report": it returns and calls onRemoteCloseWrite(). So
// quinn's "stream reset by peer: error N" ends the stream exactly like the remote's FIN; a handler sees
// EOF, never a reset, and an echo would even answer the truncated data.
//
// The fix: the native read's reset error is rethrown with code 'StreamReset', so readFromStream() takes
// its other branch and calls this.abort(err); abort() of a QuicStream turns that one error into
// onRemoteReset(), which is what js-libp2p's own muxers call on a remote reset (a 'close' event with a
// StreamResetError and local = false). Other native errors keep their old path. It patches the very
// modules the package loads (resolved from it), and only while the buggy check is in the code.

const index = import.meta.resolve('@chainsafe/libp2p-quic')
const { Stream: NativeStream } = await import(new URL('./napi.js', index).href)
const { QuicStream } = await import(new URL('./stream.js', index).href)

const RESET = /^stream reset by peer/

class RemoteStreamReset extends Error {
  constructor (cause) {
    super(cause.message, { cause })
    this.name = 'RemoteStreamReset'
    this.code = 'StreamReset'
  }
}

export const applied = QuicStream.prototype.readFromStream.toString().includes("'Unknown'")

if (applied) {
  const read = NativeStream.prototype.read
  NativeStream.prototype.read = function (maxLen) {
    return read.call(this, maxLen).catch((err) => {
      throw (err?.code === 'Unknown' && RESET.test(String(err.message))) ? new RemoteStreamReset(err) : err
    })
  }
  const abort = QuicStream.prototype.abort
  QuicStream.prototype.abort = function (err) {
    if (err instanceof RemoteStreamReset) {
      this.log('remote reset - %s', err.message)
      this.onRemoteReset()
      return
    }
    abort.call(this, err)
  }
}
