"""The test-plans transport-interop entrypoint over quic-v1 against js-libp2p (@chainsafe/libp2p-quic 2.1.1).

Two real processes coordinate through a real redis-server, as in tests/interop/test_testplans.py (whose
helpers and redis fixture are reused): ``python -m mycel.cli.testplans`` on one side and
``interop/js/testplans.mjs`` on the other. Both sides are configured with QUIC only (js listens on
``/udp/0/quic-v1`` and has no TCP transport), so a result proves a QUIC handshake plus a ping.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import redis_addr  # noqa: F401  (the fixture)
from tests.interop.test_testplans import js_cmd, mycel_cmd, run_pair, stack_env

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def unified_env(redis: str, dialer: bool, key: str) -> dict[str, str]:
    """unified-testing's upper-case variables; a standalone transport sets no security or muxer."""
    env = stack_env(redis, dialer)
    for name in ("is_dialer", "ip", "redis_addr"):
        env.pop(name)
    env.update({"TRANSPORT": "quic-v1", "IS_DIALER": str(dialer).lower(), "LISTENER_IP": "127.0.0.1",
                "REDIS_ADDR": redis, "TEST_KEY": key})  # fmt: skip
    return env


async def test_mycel_dials_js_over_quic(redis_addr: str) -> None:  # noqa: F811
    extra = {"transport": "quic-v1"}
    await run_pair(js_cmd(), mycel_cmd(), stack_env(redis_addr, False, **extra), stack_env(redis_addr, True, **extra))


async def test_js_dials_mycel_over_quic(redis_addr: str) -> None:  # noqa: F811
    extra = {"transport": "quic-v1"}
    await run_pair(mycel_cmd(), js_cmd(), stack_env(redis_addr, False, **extra), stack_env(redis_addr, True, **extra))


@pytest.mark.parametrize("mycel_dials", [True, False], ids=["mycel_dials", "js_dials"])
async def test_quic_with_unified_env_and_ignored_security(redis_addr: str, mycel_dials: bool) -> None:  # noqa: F811
    """Upper-case env with a TEST_KEY; security and muxer set anyway (as a harness crossing all
    dimensions may) must be ignored for quic-v1 by both entrypoints."""
    listener_env = unified_env(redis_addr, False, "5eed0001")
    dialer_env = unified_env(redis_addr, True, "5eed0001")
    for env in (listener_env, dialer_env):
        env.update({"SECURE_CHANNEL": "noise", "MUXER": "yamux"})
    listener, dialer = (js_cmd(), mycel_cmd()) if mycel_dials else (mycel_cmd(), js_cmd())
    await run_pair(listener, dialer, listener_env, dialer_env)
