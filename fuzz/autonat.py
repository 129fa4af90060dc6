"""Harness for AutoNAT v1 and v2 messages: what a server reads (DIAL, dial-request Messages) and what a
client reads (DIAL_RESPONSE, DialDataRequest, DialResponse, DialBack), then the server's decisions on
what decoded (which addresses it may dial, and the amplification cost)."""

from __future__ import annotations

import ipaddress
import random

from mycel.core.addrs import AddressPolicy
from mycel.core.identity import Identity
from mycel.protocols.autonat.core import DIAL_DATA_MAX, DIAL_DATA_MIN, V1_MAX_DIAL_ADDRS, v1_dial_candidates, v2_plan
from mycel.protocols.autonat.messages import (
    MAX_ADDRS,
    MAX_DATA_CHUNK,
    AutoNATMessageError,
    V2DataRequest,
    V2Request,
    V2Response,
    decode_v1_request,
    decode_v1_response,
    decode_v2_dial_back,
    decode_v2_message,
)
from mycel.protocols.autonat.pb import autonat_v1_pb2, autonat_v2_pb2

from fuzz.core import Harness, Source, blob, chance, hostile_int, mutate, pick
from fuzz.records import gen_multiaddr_bytes

_PEER = Identity.from_seed(b"\x71" * 32).peer_id
_V1 = autonat_v1_pb2.Message
_POLICY = AddressPolicy(public_ranges=("127.0.0.0/8", "198.18.0.0/15"))
_OBSERVED = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("198.18.0.2"), None)


def _addrs(src: Source) -> list[bytes]:
    n = src.int(0, 4) if chance(src, 90) else src.int(MAX_ADDRS - 2, MAX_ADDRS + 40)
    return [gen_multiaddr_bytes(src) for _ in range(n)]


def gen_v1(src: Source, request: bool) -> bytes:
    """A v1 Message: mostly a DIAL (``request``) or a DIAL_RESPONSE, with hostile fields."""
    msg = _V1()
    if chance(src, 95):
        want = _V1.DIAL if request else _V1.DIAL_RESPONSE
        msg.type = want if chance(src, 95) else pick(src, (_V1.DIAL, _V1.DIAL_RESPONSE))
    if request or chance(src, 10):
        peer = msg.dial.peer
        if chance(src, 95):
            peer.id = _PEER.to_bytes() if chance(src, 90) else blob(src, 40)
        peer.addrs.extend(_addrs(src))
    if not request or chance(src, 10):
        resp = msg.dialResponse
        if chance(src, 95):
            resp.status = pick(src, (0, 100, 101, 200, 300))  # type: ignore[assignment]
        if chance(src, 40):
            resp.statusText = "x" * hostile_int(src, 20, 5000)
        if chance(src, 50):
            resp.addr = gen_multiaddr_bytes(src)
    body = msg.SerializeToString()
    return mutate(src, body) if chance(src, 30) else body


def gen_v2(src: Source) -> bytes:
    """A v2 Message (any of its four kinds) or a DialBack, with hostile fields."""
    kind = src.int(0, 4)
    if kind == 0:
        req = autonat_v2_pb2.DialRequest(addrs=_addrs(src), nonce=src.int(0, (1 << 64) - 1))
        body = autonat_v2_pb2.Message(dialRequest=req).SerializeToString()
    elif kind == 1:
        data_req = autonat_v2_pb2.DialDataRequest(addrIdx=hostile_int(src, 3, (1 << 32) - 1), numBytes=hostile_int(src, 100_000, 1 << 40))
        body = autonat_v2_pb2.Message(dialDataRequest=data_req).SerializeToString()
    elif kind == 2:
        resp = autonat_v2_pb2.DialResponse(
            status=pick(src, (0, 100, 101, 200, 7)),  # type: ignore[arg-type]
            addrIdx=hostile_int(src, 3, (1 << 32) - 1),
            dialStatus=pick(src, (0, 100, 101, 200, 9)),  # type: ignore[arg-type]
        )
        body = autonat_v2_pb2.Message(dialResponse=resp).SerializeToString()
    elif kind == 3:
        data = bytes(hostile_int(src, MAX_DATA_CHUNK, MAX_DATA_CHUNK + 8))
        body = autonat_v2_pb2.Message(dialDataResponse=autonat_v2_pb2.DialDataResponse(data=data)).SerializeToString()
    else:
        body = autonat_v2_pb2.DialBack(nonce=src.int(0, (1 << 64) - 1)).SerializeToString()
    return mutate(src, body) if chance(src, 30) else body


class AutoNATHarness(Harness):
    """v1 and v2 decoders, then a server's choices on what decoded. Invariants: at most MAX_ADDRS addresses
    come out of a request; v1 dials only addresses on the observed IP (never more than its bound); a v2
    plan names an index inside the request, and asks for dial data exactly when the IP differs, within
    the spec's 30-100 kB; a DialDataResponse never carries more than 4096 bytes."""

    name = "autonat"
    expected = (AutoNATMessageError,)
    min_past_ratio = 0.5

    def one(self, src: Source) -> None:
        observed = pick(src, _OBSERVED)
        if chance(src, 45):
            request = chance(src, 50)
            body = gen_v1(src, request)
            if request:
                req = decode_v1_request(body)
                self.past = True
                assert len(req.addrs) <= MAX_ADDRS
                dial = v1_dial_candidates(list(req.addrs), observed, _POLICY)
                assert len(dial) <= V1_MAX_DIAL_ADDRS
                assert all(ipaddress.ip_address(str(a).split("/")[2]) == observed for a in dial)
            else:
                decode_v1_response(body)
                self.past = True
            self.deep = True
            return
        body = gen_v2(src)
        if chance(src, 15):
            decode_v2_dial_back(body)
            self.past = True
            return
        msg = decode_v2_message(body)
        self.past = True
        if isinstance(msg, V2Request):
            assert len(msg.addrs) <= MAX_ADDRS
            plan = v2_plan(msg.addrs, observed, _POLICY, lambda a: True, random.Random(src.int(0, 1 << 30)))
            if plan.index is not None:
                addr = msg.addrs[plan.index]
                assert addr is not None
                same_ip = observed is not None and str(addr).split("/")[2] == str(observed)
                assert (plan.dial_data == 0) == same_ip
                assert plan.dial_data == 0 or DIAL_DATA_MIN <= plan.dial_data <= DIAL_DATA_MAX
            self.deep = True
        elif isinstance(msg, bytes):
            assert len(msg) <= MAX_DATA_CHUNK
        else:
            assert isinstance(msg, (V2DataRequest, V2Response))


HARNESSES = [AutoNATHarness]
