"""gossipsub-interop params.json parsing, built-in scenarios and the JSON log contract (#15)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mycel.sim.interop_log import InteropLog, analyze, analyze_lines, parse_time, rfc3339
from mycel.sim.script import (
    Connect,
    IfNodeIDEquals,
    InitGossipSub,
    Publish,
    ScenarioError,
    SetTopicValidationDelay,
    SubscribeToTopic,
    WaitUntil,
    gossipsub_changes,
    message_id_of,
    message_payload,
    parse_params,
    subnet_blob_msg,
)

# the shape experiment.py writes (instruction names and fields are theirs)
PARAMS = {
    "script": [
        {"type": "ifNodeIDEquals", "nodeID": 0, "instruction": {"type": "initGossipSub", "gossipSubParams": {"D": 8, "Dlo": 6, "HeartbeatInitialDelay": 100100000, "HeartbeatInterval": 700000000, "Connectors": 8}}},
        {"type": "ifNodeIDEquals", "nodeID": 1, "instruction": {"type": "initGossipSub", "gossipSubParams": {"D": None}}},
        {"type": "setTopicValidationDelay", "topicID": "a-subnet", "delaySeconds": 0.005},
        {"type": "ifNodeIDEquals", "nodeID": 1, "instruction": {"type": "connect", "connectTo": [0, 2]}},
        {"type": "subscribeToTopic", "topicID": "a-subnet"},
        {"type": "waitUntil", "elapsedSeconds": 120},
        {"type": "ifNodeIDEquals", "nodeID": 2, "instruction": {"type": "publish", "messageID": 7, "messageSizeBytes": 98304, "topicID": "a-subnet"}},
        {"type": "waitUntil", "elapsedSeconds": 132},
    ]
}


def test_params_json_parses_into_typed_instructions() -> None:
    script = parse_params(PARAMS)
    assert len(script.instructions) == 8
    assert script.node_count_hint() == 3
    node1 = script.for_node(1)
    assert node1[0] == InitGossipSub({"D": None})
    assert node1[1] == SetTopicValidationDelay("a-subnet", 0.005)
    assert node1[2] == Connect((0, 2))
    assert node1[3:] == [SubscribeToTopic("a-subnet"), WaitUntil(120.0), WaitUntil(132.0)]
    node2 = script.for_node(2)
    assert Publish(7, 98304, "a-subnet") in node2 and not any(isinstance(i, Connect) for i in node2)
    assert parse_params(script.to_json()) == script  # round trip through the JSON form


def test_gossipsub_params_map_go_names_and_nanoseconds() -> None:
    changes = gossipsub_changes(PARAMS["script"][0]["instruction"]["gossipSubParams"])  # type: ignore[index]
    assert changes == {"d": 8, "d_lo": 6, "heartbeat_initial_delay": pytest.approx(0.1001), "heartbeat_interval": pytest.approx(0.7)}
    assert gossipsub_changes({"D": None, "GossipFactor": 0}) == {"gossip_factor": 0.0}
    with pytest.raises(ScenarioError, match="unknown parameter"):
        gossipsub_changes({"Dfoo": 1})
    with pytest.raises(ScenarioError, match="non-negative"):
        gossipsub_changes({"D": "8"})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"scripts": []}, "script"),
        ({"script": [{"type": "teleport"}]}, "unknown instruction"),
        ({"script": [{"type": "publish", "messageID": -1, "messageSizeBytes": 10, "topicID": "t"}]}, "messageID"),
        ({"script": [{"type": "publish", "messageID": 1, "messageSizeBytes": 10**9, "topicID": "t"}]}, "messageSizeBytes"),
        ({"script": [{"type": "connect", "connectTo": ["node1"]}]}, "connectTo"),
        ({"script": [{"type": "waitUntil", "elapsedSeconds": True}]}, "elapsedSeconds"),
        ({"script": [{"type": "subscribeToTopic", "topicID": "t", "partial": True}]}, "partial"),
        ({"script": [{"type": "addPartialMessage", "topicID": "t", "groupID": 1, "parts": 3}]}, "partial"),
        ({"script": [{"type": "ifNodeIDEquals", "nodeID": 1, "instruction": 5}]}, "object"),
        ({"script": ["publish"]}, "object"),
    ],
)
def test_malformed_params_raise_scenario_error(bad: object, match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        parse_params(bad)


def test_deep_nesting_is_refused() -> None:
    ins: dict[str, object] = {"type": "waitUntil", "elapsedSeconds": 1}
    for _ in range(20):
        ins = {"type": "ifNodeIDEquals", "nodeID": 0, "instruction": ins}
    with pytest.raises(ScenarioError, match="nested"):
        parse_params({"script": [ins]})


def test_subnet_blob_msg_has_gossipsub_interops_shape() -> None:
    script = subnet_blob_msg(40, seed=3)
    assert subnet_blob_msg(40, seed=3) == script  # seeded
    inits = [i for i in script.instructions if isinstance(i, IfNodeIDEquals) and isinstance(i.instruction, InitGossipSub)]
    assert len(inits) == 40
    neighbours: dict[int, set[int]] = {i: set() for i in range(40)}
    for ins in script.instructions:
        if isinstance(ins, IfNodeIDEquals) and isinstance(ins.instruction, Connect):
            for j in ins.instruction.connect_to:
                neighbours[ins.node_id].add(j)
                neighbours[j].add(ins.node_id)
    assert all(len(n) >= 20 for n in neighbours.values())
    publishes = [i.instruction for i in script.instructions if isinstance(i, IfNodeIDEquals) and isinstance(i.instruction, Publish)]
    assert [p.message_id for p in publishes] == list(range(16))
    assert {p.size for p in publishes} == {98304}
    waits = [i.elapsed_seconds for i in script.instructions if isinstance(i, WaitUntil)]
    assert waits[:3] == [120, 132, 144]
    assert SetTopicValidationDelay("a-subnet", 0.005) in script.instructions


def test_message_id_is_the_first_8_bytes_big_endian() -> None:
    data = message_payload(0x0102030405060708, 98304)
    assert len(data) == 98304 and data[:8] == bytes(range(1, 9)) and not any(data[8:])
    assert message_id_of(data) == 0x0102030405060708
    assert message_id_of(message_payload(5, 3)) == 0  # shorter than 8 bytes: the id is cut (their rule)


def test_log_lines_follow_the_contract(tmp_path: Path) -> None:
    assert rfc3339(0) == "2000-01-01T00:00:00.000000Z"
    assert datetime.fromisoformat(rfc3339(121.5)) == datetime(2000, 1, 1, 0, 2, 1, 500000, tzinfo=timezone.utc)
    log = InteropLog()
    for node in range(3):
        log.node(node).peer_id(0.0, f"peer{node}")
    log.node(1).published(120.0, 7, "a-subnet", 100)
    log.node(0).received(120.2, 7, "peer1", "a-subnet")
    log.node(2).received(120.5, 7, "peer0", "a-subnet")
    log.node(2).received(120.6, 7, "peer1", "a-subnet")  # a duplicate
    log.node(1).received(120.7, 7, "peer2", "a-subnet")  # the publisher gets its own message back
    hosts = log.write(tmp_path)
    lines = (hosts / "node2" / "node2.stdout").read_text().splitlines()
    first = json.loads(lines[0])
    assert first == {"time": "2000-01-01T00:00:00.000000Z", "msg": "PeerID", "id": "peer2", "node_id": 2}
    got = json.loads(lines[1])
    assert got["msg"] == "Received Message" and got["id"] == "7" and got["from"] == "peer0" and got["topic"] == "a-subnet"
    assert parse_time(got["time"]) == pytest.approx(120.5)
    (m,) = analyze(hosts)
    # their definitions: 3 first receipts (incl. the publisher's echo) / (3 - 1) nodes, capped at 1
    assert m.reach == 1.0 and m.receivers == 3
    assert m.duplicates == 1 and m.avg_duplicates == pytest.approx(1 / 3)
    assert m.time_to_disseminate == pytest.approx(0.5) and m.p50 == pytest.approx(0.3)
    assert m.latencies == [pytest.approx(0.2), pytest.approx(0.5)]  # from the publish, publisher excluded
    assert (tmp_path / "events.log").read_text().count("\n") == 8


def test_analysis_counts_a_message_nobody_received() -> None:
    log = InteropLog()
    log.node(0).peer_id(0.0, "a")
    log.node(1).peer_id(0.0, "b")
    log.node(0).published(5.0, 9, "t", 10)
    (m,) = analyze_lines(log.per_node())
    assert m.reach == 0.0 and m.receivers == 0 and m.publisher == 0


def test_interop_node_contract_pieces() -> None:
    import io

    from mycel.sim.interop_node import StreamLog, node_id_from_hostname
    from mycel.sim.runner import interop_identity

    assert node_id_from_hostname("node17") == 17
    with pytest.raises(ValueError, match="node<N>"):
        node_id_from_hostname("worker3")
    # the contract's published peer ids for nodes 0 and 1
    assert str(interop_identity(0).peer_id) == "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    assert str(interop_identity(1).peer_id) == "12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X"
    out = io.StringIO()
    StreamLog(out).node(3).peer_id(0.0, "p")
    line = json.loads(out.getvalue())
    assert line["msg"] == "PeerID" and line["node_id"] == 3 and datetime.fromisoformat(line["time"]).tzinfo is not None
