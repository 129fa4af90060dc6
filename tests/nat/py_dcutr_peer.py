"""A py-libp2p (interop/.peers/py-venv) peer for the NAT lab (mypy: ``--python-executable
interop/.peers/py-venv/bin/python``): it dials a mycel listener through the
relay and lets py's DCUtRProtocol answer mycel's hole punch (py is the spec's A, the dialer/client).

    py-venv/bin/python tests/nat/py_dcutr_peer.py <relay addr with /p2p> <relay>/p2p-circuit/p2p/<target>

TCP + Noise + yamux, listening on 0.0.0.0. Connects to the relay first (identify gives py's observed-
address manager the address the relay sees, from which py predicts its public address), then dials the
target through the relay and waits up to 20 s for a direct connection; prints one JSON line
``{"direct": bool, "relayed": bool, "addrs": [...]}`` and exits.
"""

from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID, Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux
from libp2p.tools.anyio_service import background_trio_service


async def main(relay_addr: str, target: str) -> None:
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    listen = multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/0")
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[listen],
    )
    out: dict[str, object] = {"direct": False}
    async with host.run(listen_addrs=[listen]):
        relay = CircuitV2Protocol(host, allow_hop=False)
        dcutr = DCUtRProtocol(host)
        async with background_trio_service(relay), background_trio_service(dcutr):
            await relay.event_started.wait()
            await dcutr.event_started.wait()
            await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(relay_addr)))
            transport = CircuitV2Transport(host, relay, RelayConfig())
            with trio.move_on_after(20):
                conn = await transport.dial(multiaddr.Multiaddr(target))
                peer = conn.muxed_conn.peer_id
                while not await dcutr._verify_direct_connection(peer):  # py has no event for it
                    await trio.sleep(0.05)
                out["direct"] = True
            conns = host.get_network().get_connections(peer) if "peer" in locals() else []
            out["addrs"] = [str(getattr(c.muxed_conn, "get_remote_address", lambda: None)()) for c in conns]
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
