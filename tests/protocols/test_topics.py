"""MQTT topic contract: bt/v1/{device_id}/{kind}."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, MalformedMessage
from protocols.topics import (
    STATE_OFFLINE,
    STATE_ONLINE,
    Direction,
    TopicKind,
    is_device_id,
    parse_topic,
    shared_subscription,
    subscription,
    topic,
    validate_device_id,
)
from tests.protocols.strategies import device_ids

UPLINK = ("birth", "data", "event", "health", "ack", "state")


def test_kinds_are_exactly_the_contract() -> None:
    assert {k.value for k in TopicKind} == {*UPLINK, "cmd", "stored"}


@pytest.mark.parametrize("kind", list(TopicKind))
def test_kind_properties(kind: TopicKind) -> None:
    assert kind.qos == 1
    assert kind.retained is (kind is TopicKind.STATE)
    down = kind in (TopicKind.CMD, TopicKind.STORED)
    assert kind.direction is (Direction.DOWN if down else Direction.UP)
    assert kind.signed is (kind is not TopicKind.STATE)


def test_state_payloads() -> None:
    assert (STATE_ONLINE, STATE_OFFLINE) == (b"online", b"offline")


@pytest.mark.parametrize("kind", list(TopicKind))
def test_topic_round_trip(kind: TopicKind) -> None:
    name = topic("boiler-0001", kind)
    assert name == f"bt/v1/boiler-0001/{kind.value}"
    assert parse_topic(name) == ("boiler-0001", kind)


@given(device_ids, st.sampled_from(TopicKind))
def test_topic_round_trip_any_device(device_id: str, kind: TopicKind) -> None:
    assert parse_topic(topic(device_id, kind)) == (device_id, kind)


@pytest.mark.parametrize("device_id", ["abc", "0ab", "a-b", "a" * 63, "9" * 3, "a--"])
def test_valid_device_ids(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id
    assert is_device_id(device_id)


@pytest.mark.parametrize(
    "device_id",
    ["", "ab", "a" * 64, "-ab", "Abc", "ab_c", "ab c", "ab/c", "+", "#", "abc\n", "ab\u00e9", 123],
)
def test_invalid_device_ids(device_id: object) -> None:
    assert not is_device_id(device_id)
    with pytest.raises(MalformedMessage, match="invalid device id"):
        validate_device_id(device_id)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "bt/v1/boiler-0001",
        "bt/v1/boiler-0001/data/extra",
        "bt/v1/boiler-0001/data/",
        "/bt/v1/boiler-0001/data",
        "bt/v2/boiler-0001/data",
        "BT/v1/boiler-0001/data",
        "xx/v1/boiler-0001/data",
        "bt/v1/+/data",
        "bt/v1/#",
        "bt/v1/boiler-0001/+",
        "bt/v1/boiler-0001/#",
        "bt/v1/Boiler-0001/data",
        "bt/v1/ab/data",
        "bt/v1/boiler-0001/DATA",
        "bt/v1/boiler-0001/telemetry",
        "bt/v1/boiler-0001/data\n",
        "$share/ingest/bt/v1/boiler-0001/data",
    ],
)
def test_parse_topic_rejects(name: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_topic(name)


def test_parse_topic_rejects_non_string() -> None:
    with pytest.raises(MalformedMessage):
        parse_topic(b"bt/v1/boiler-0001/data")


def test_parse_topic_error_carries_topic() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_topic("bt/v1/boiler-0001/nope")
    assert info.value.topic == "bt/v1/boiler-0001/nope"
    assert info.value.device_id == "boiler-0001"


@given(st.text(alphabet="bt/v1abc-+#d0", max_size=30))
def test_parse_topic_only_raises_malformed(name: str) -> None:
    try:
        device_id, kind = parse_topic(name)
    except MalformedMessage:
        return
    assert topic(device_id, kind) == name


def test_topic_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError):
        topic("BAD", TopicKind.DATA)
    with pytest.raises(LocalProtocolError):
        topic("boiler-0001", "telemetry")  # type: ignore[arg-type]


def test_topic_accepts_kind_value_strings() -> None:
    assert topic("boiler-0001", "ack") == "bt/v1/boiler-0001/ack"  # type: ignore[arg-type]


def test_subscriptions() -> None:
    assert subscription(TopicKind.DATA) == "bt/v1/+/data"
    assert subscription(TopicKind.CMD, "boiler-0001") == "bt/v1/boiler-0001/cmd"
    with pytest.raises(LocalProtocolError):
        subscription(TopicKind.CMD, "#")


def test_shared_subscription() -> None:
    assert shared_subscription(TopicKind.DATA) == "$share/ingest/bt/v1/+/data"
    assert shared_subscription(TopicKind.EVENT, "workers") == "$share/workers/bt/v1/+/event"


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#", "$x"])
def test_shared_subscription_rejects_bad_group(group: str) -> None:
    with pytest.raises(LocalProtocolError):
        shared_subscription(TopicKind.DATA, group)
