"""RelayCore: reservations (bounds, refresh, expiry on a given clock) and circuits (bounds, accounting)."""

from __future__ import annotations

import pytest

from mycel.core.errors import ConfigError
from mycel.protocols.relay.config import RelayResources
from mycel.protocols.relay.core import Circuit, RelayCore, Reservation
from mycel.protocols.relay.messages import Status


def core(**kw: object) -> RelayCore[str]:
    return RelayCore(RelayResources(**kw))  # type: ignore[arg-type]


def test_go_defaults() -> None:
    res = RelayResources()
    assert res.reservation_ttl == 3600
    assert res.max_reservations == 128
    assert res.max_circuits == 16
    assert res.buffer_size == 2048
    assert res.max_reservations_per_ip == 8
    assert res.limit_duration == 120
    assert res.limit_data == 128 * 1024


@pytest.mark.parametrize("field", ["max_reservations", "buffer_size", "max_total_circuits"])
def test_bad_settings_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        RelayResources(**{field: 0})  # type: ignore[arg-type]


def test_reserve_refresh_keeps_one_slot_and_moves_expiry() -> None:
    c = core(reservation_ttl=100)
    first = c.reserve("a", "10.0.0.1", now=0)
    assert isinstance(first, Reservation) and first.expires == 100
    again = c.reserve("a", "10.0.0.1", now=50)
    assert isinstance(again, Reservation) and again.expires == 150
    assert c.reservation_count == 1
    assert c.next_deadline() == 150  # the stale 100 entry is skipped
    assert c.expire(149) == []
    assert c.expire(150) == ["a"]
    assert c.reservation_count == 0 and c.next_deadline() is None


def test_total_and_per_ip_bounds_refuse_new_reservations() -> None:
    c = core(max_reservations=3, max_reservations_per_ip=2)
    assert isinstance(c.reserve("a", "10.0.0.1", 0), Reservation)
    assert isinstance(c.reserve("b", "10.0.0.1", 0), Reservation)
    assert c.reserve("c", "10.0.0.1", 0) is Status.RESERVATION_REFUSED  # third from that IP
    assert isinstance(c.reserve("c", "10.0.0.2", 0), Reservation)
    assert c.reserve("d", "10.0.0.3", 0) is Status.RESERVATION_REFUSED  # relay full
    assert isinstance(c.reserve("a", "10.0.0.1", 1), Reservation)  # a refresh still works when full
    assert c.refused[Status.RESERVATION_REFUSED] == 2
    assert c.cancel("a") and not c.cancel("a")
    assert isinstance(c.reserve("d", "10.0.0.3", 2), Reservation)


def test_reservation_flood_from_one_ip_stays_bounded() -> None:
    c = core(max_reservations=128, max_reservations_per_ip=8)
    granted = [p for p in range(10_000) if isinstance(c.reserve(f"p{p}", "192.0.2.1", 0), Reservation)]
    assert len(granted) == 8
    assert c.reservation_count == 8
    assert c.refused[Status.RESERVATION_REFUSED] == 10_000 - 8


def test_refresh_from_another_ip_moves_the_count() -> None:
    c = core(max_reservations_per_ip=1)
    c.reserve("a", "10.0.0.1", 0)
    c.reserve("a", "10.0.0.2", 1)
    assert isinstance(c.reserve("b", "10.0.0.1", 2), Reservation)  # 10.0.0.1 is free again


def test_circuit_needs_a_live_reservation() -> None:
    c = core(reservation_ttl=10)
    assert c.open_circuit("b", None, "a", 0) is Status.NO_RESERVATION
    c.reserve("a", None, 0)
    assert isinstance(c.open_circuit("b", None, "a", 5), Circuit)
    assert c.open_circuit("b", None, "a", 10) is Status.NO_RESERVATION  # expired (not yet swept)


def test_circuit_bounds_per_peer_ip_and_total() -> None:
    c = core(max_circuits=2, max_circuits_per_ip=3, max_total_circuits=4)
    for dst in ("a", "b", "c"):
        c.reserve(dst, None, 0)
    one = c.open_circuit("x", "10.0.0.9", "a", 0)
    two = c.open_circuit("x", "10.0.0.9", "a", 0)
    assert isinstance(one, Circuit) and isinstance(two, Circuit)
    assert c.open_circuit("y", "10.0.0.8", "a", 0) is Status.RESOURCE_LIMIT_EXCEEDED  # a: 2 already
    assert c.open_circuit("x", "10.0.0.9", "b", 0) is Status.RESOURCE_LIMIT_EXCEEDED  # x: 2 already
    three = c.open_circuit("y", "10.0.0.9", "b", 0)
    assert isinstance(three, Circuit)
    assert c.open_circuit("z", "10.0.0.9", "c", 0) is Status.RESOURCE_LIMIT_EXCEEDED  # IP: 3 already
    four = c.open_circuit("z", "10.0.0.7", "c", 0)
    assert isinstance(four, Circuit)
    assert c.open_circuit("w", "10.0.0.6", "b", 0) is Status.RESOURCE_LIMIT_EXCEEDED  # total: 4
    assert c.circuit_count == 4 and c.circuits_of("a") == 2
    for circ in (one, two, three, four):
        c.close_circuit(circ)
        c.close_circuit(circ)  # idempotent
    assert c.circuit_count == 0 and c.circuits_of("a") == 0 and c.circuits_of("x") == 0


def test_expiry_heap_stays_bounded_under_refreshes() -> None:
    c = core(reservation_ttl=100)
    for t in range(10_000):
        c.reserve("a", None, t)
    assert len(c._expiry) <= 2 * c.reservation_count + 17
    assert c.next_deadline() == 9_999 + 100
