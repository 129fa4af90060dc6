"""TCP simultaneous open between two ``TCP(reuse_port=True)`` hosts, made to happen every time.

Two hosts that dial each other from their listen ports at the same moment can meet as *one* TCP
connection (each SYN reaches the other's connecting socket): both ends then start the security handshake
as its initiator. Here it is forced, in a namespace the test creates: an nftables rule drops A's SYNs
from its listen port to B's, so A's connect waits in SYN-SENT; then B dials A from its listen port, and
B's SYN meets A's socket. Both hosts must notice (``SimultaneousOpenError``), redial once from an
ephemeral port and end up connected — with Noise and with TLS. Without the redial both dials fail
(Noise: ``InvalidTag`` on a 32-byte "message 2"; TLS: a ClientHello where the ServerHello was due).
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from mycel.testing import natlab
from mycel.testing.netns import NetLab

pytestmark = pytest.mark.skipif(not natlab.available(), reason="needs root, ip netns and nft")

# A's SYNs (pure SYN: the SYN-ACK of a simultaneous open passes) from its listen port to B's, dropped
_RULESET = """
table inet simopen {
    chain out {
        type filter hook output priority 0; policy accept;
        ip saddr 127.0.0.1 ip daddr 127.0.0.2 tcp sport 4001 tcp dport 4002 tcp flags & (syn | ack) == syn counter drop
    }
}
"""

_SCRIPT = textwrap.dedent(
    """
    import json, sys, trio, trio.testing
    from mycel.host import HostConfig, open_host
    from mycel.muxers.yamux import Yamux
    from mycel.security.noise import Noise
    from mycel.security.tls import TLS
    from mycel.transports.tcp import TCP

    def config(ip, port):
        security = [Noise()] if sys.argv[1] == "noise" else [TLS()]
        return HostConfig(transports=[TCP(reuse_port=True)], security=security, muxers=[Yamux()],
                          listen=[f"/ip4/{ip}/tcp/{port}"])

    async def main():
        async with open_host(config("127.0.0.1", 4001)) as a, open_host(config("127.0.0.2", 4002)) as b:
            conns = {}

            async def dial(name, host, addr):
                try:
                    conns[name] = str((await host.connect(addr)).local_addr)
                except Exception as exc:
                    conns[name] = f"failed: {exc}"

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(dial, "a", a, str(b.addrs[0]))
                    await trio.testing.wait_all_tasks_blocked(0.05)  # A's SYN is out (dropped); A waits
                    nursery.start_soon(dial, "b", b, str(a.addrs[0]))
            stats = {"a": a.swarm.stats()["dial_simultaneous_open"], "b": b.swarm.stats()["dial_simultaneous_open"]}
            print(json.dumps({"conns": conns, "simultaneous_opens": stats}), flush=True)

    trio.run(main)
    """
)


@pytest.mark.parametrize("security", ["noise", "tls"])
def test_crossed_dials_from_listen_ports_redial_and_connect(security: str) -> None:
    with NetLab() as lab:
        ns = lab.namespace("simopen")
        subprocess.run(ns.command(["nft", "-f", "-"]), input=_RULESET, text=True, check=True, timeout=30)
        proc = ns.python(["-c", _SCRIPT, security], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        dropped = ns.run(["nft", "list", "chain", "inet", "simopen", "out"]).stdout
    # the rule held A's first SYN back, so B's SYN met A's connecting socket
    assert "counter packets 0 " not in dropped, (dropped, result, err)
    assert result["simultaneous_opens"] == {"a": 1, "b": 1}, (result, err)
    # both dials succeeded, each on its redial from an ephemeral port
    a_local, b_local = result["conns"]["a"], result["conns"]["b"]
    assert a_local.startswith("/ip4/127.0.0.1/tcp/") and not a_local.endswith("/4001"), result
    assert b_local.startswith("/ip4/127.0.0.") and not b_local.endswith("/4002"), result
