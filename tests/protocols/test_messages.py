"""Message types (protocols.messages), CBOR payloads (protocols.wire) and strict CBOR."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import strict_cbor
from protocols.errors import (
    BadSignature,
    ClockUntrusted,
    EncodeError,
    LocalProtocolError,
    MalformedMessage,
    OversizedMessage,
    RemoteProtocolError,
    ReplayedMessage,
    StaleMessage,
    UnknownKey,
    WrongDevice,
)
from protocols.messages import (
    MAX_MISSING_RANGES,
    Ack,
    AckState,
    Birth,
    Command,
    CommandName,
    Event,
    EventKind,
    Gap,
    Health,
    Message,
    Quality,
    Reading,
    RejectReason,
    TelemetryBatch,
    Watermark,
    gap_event,
    parse_gap,
)
from protocols.topics import TopicKind
from protocols.wire import MAX_DEPTH, MAX_PAYLOAD_BYTES, decode_payload, encode_payload
from tests.protocols import strategies
from tests.vectors.samples import COMMAND_ID, HEADER, SAMPLES, T0

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "messages.json").read_text())[
    "vectors"
]


def _wire(name: str) -> dict[str, Any]:
    """The CBOR map of a sample payload, for tampering."""
    value = cbor2.loads(encode_payload(SAMPLES[name]))
    assert isinstance(value, dict)
    return value


def _dumps(value: object) -> bytes:
    return cbor2.dumps(value, canonical=True)


# -- golden vectors ---------------------------------------------------------------------------


def test_vectors_cover_every_sample_and_kind() -> None:
    assert set(VECTORS) == set(SAMPLES)
    kinds = {vector["kind"] for vector in VECTORS.values()}
    assert kinds == {k.value for k in TopicKind} - {"state"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_encoding(name: str) -> None:
    vector = VECTORS[name]
    payload = bytes.fromhex(vector["payload_hex"])
    assert encode_payload(SAMPLES[name]) == payload
    assert decode_payload(payload) == SAMPLES[name]
    assert decode_payload(payload, expected_kind=TopicKind(vector["kind"])) == SAMPLES[name]
    assert strict_cbor.loads(payload) == vector["decoded"]


def test_readings_are_compact_arrays() -> None:
    readings = _wire("data")["readings"]
    assert readings[0] == ["flow_temp", -1000, 61.5, 0]
    assert readings[2][3] == 2  # uncertain
    assert readings[7] == ["fan_speed", 0, None, 1]  # bad


def test_ack_reason_omitted_when_absent() -> None:
    assert "reason" not in _wire("ack_succeeded")
    assert _wire("ack_rejected")["reason"] == "not_in_lockout"


# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(strategies.messages)
def test_round_trip(message: Message) -> None:
    payload = encode_payload(message)
    assert decode_payload(payload, expected_kind=message.topic_kind) == message
    assert encode_payload(decode_payload(payload)) == payload
    assert strict_cbor.loads(payload) == cbor2.loads(payload)


@pytest.mark.parametrize(
    "strategy",
    [
        strategies.batches,
        strategies.events,
        strategies.births,
        strategies.healths,
        strategies.acks(),
        strategies.commands(),
    ],
    ids=["data", "event", "birth", "health", "ack", "cmd"],
)
def test_round_trip_each_type(strategy: st.SearchStrategy[Message]) -> None:
    @settings(max_examples=40, deadline=None)
    @given(strategy)
    def check(message: Message) -> None:
        assert decode_payload(encode_payload(message)) == message

    check()


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"dev": "Boiler"},
        {"dev": "ab"},
        {"seq": -1},
        {"seq": 2**64},
        {"seq": True},
        {"seq": 1.0},
        {"epoch": -1},
        {"ts": "0"},
        {"sync": 1},
        {"readings": [1]},
        {"readings": None},
    ],
)
def test_invalid_batch_fields(changes: dict[str, Any]) -> None:
    fields = {**HEADER, "seq": 1, "readings": (), **changes}
    with pytest.raises(EncodeError):
        TelemetryBatch(**fields)


@pytest.mark.parametrize(
    "args",
    [
        ("", 0, 1),
        ("p", -1, 1),
        ("p", 0, math.nan),
        ("p", 0, math.inf),
        ("p", 0, 2**64),
        ("p", 0, -(2**64) - 1),
        ("p", 0, b"raw"),
        ("p", 0, [1]),
        ("p", 0, 1, "great"),
    ],
)
def test_invalid_readings(args: tuple[Any, ...]) -> None:
    with pytest.raises(EncodeError):
        Reading(*args)


def test_enum_fields_accept_their_values() -> None:
    reading = Reading("p", 0, 1, "bad")  # type: ignore[arg-type]
    assert reading.quality is Quality.BAD
    ack = Ack(**HEADER, seq=1, command_id=COMMAND_ID, state="failed", reason="comms_error")  # type: ignore[arg-type]
    assert (ack.state, ack.reason) == (AckState.FAILED, RejectReason.COMMS_ERROR)


def test_messages_are_frozen_and_mappings_read_only() -> None:
    detail: dict[str, Any] = {"fault": "F28", "nested": {"a": [1, 2]}}
    event = Event(**HEADER, seq=1, kind=EventKind.FAULT, detail=detail)
    detail["fault"] = "F29"
    assert event.detail["fault"] == "F28"
    nested: Any = event.detail["nested"]
    assert nested["a"] == (1, 2)
    with pytest.raises(TypeError):
        event.detail["fault"] = "F29"  # type: ignore[index]
    with pytest.raises(TypeError):
        nested["a"] = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.seq = 2  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_detail_limits() -> None:
    with pytest.raises(EncodeError):
        Event(**HEADER, seq=1, kind=EventKind.FAULT, detail={"x": [[[[[1]]]]]})  # type: ignore[dict-item]
    with pytest.raises(EncodeError):
        Event(**HEADER, seq=1, kind=EventKind.FAULT, detail={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(EncodeError):
        Event(**HEADER, seq=1, kind="boom", detail={})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (AckState.REJECTED, None),
        (AckState.SUCCEEDED, RejectReason.MALFORMED),
        (AckState.DELIVERED, RejectReason.EXPIRED),
        (AckState.SUCCEEDED, "nope"),
    ],
)
def test_ack_reason_must_fit_state(state: AckState, reason: Any) -> None:
    with pytest.raises(EncodeError):
        Ack(**HEADER, seq=1, command_id=COMMAND_ID, state=state, reason=reason)


@pytest.mark.parametrize("bad_id", ["", COMMAND_ID.upper(), COMMAND_ID.replace("-", ""), "x" * 36])
def test_uuids_must_be_canonical(bad_id: str) -> None:
    with pytest.raises(EncodeError):
        Ack(**HEADER, seq=1, command_id=bad_id, state=AckState.DELIVERED)
    with pytest.raises(EncodeError):
        Command(id=bad_id, dev="boiler-0001", name=CommandName.RESTART, iat=1, exp=2)


@pytest.mark.parametrize(("iat", "exp"), [(5, 5), (5, 4), (-1, 5), (0, 2**64)])
def test_command_times(iat: int, exp: int) -> None:
    with pytest.raises(EncodeError):
        Command(id=COMMAND_ID, dev="boiler-0001", name=CommandName.RESTART, iat=iat, exp=exp)


def test_health_agent_values_are_numbers() -> None:
    with pytest.raises(EncodeError):
        Health(**HEADER, seq=1, agent={"uptime": "long"})  # type: ignore[dict-item]
    with pytest.raises(EncodeError):
        Health(**HEADER, seq=1, agent={"ok": True})


def test_birth_needs_text() -> None:
    with pytest.raises(EncodeError):
        Birth(**HEADER, seq=1, agent_version="", map_id="m", map_hash="h")
    with pytest.raises(EncodeError):
        Birth(**HEADER, seq=1, agent_version="1", map_id="m", map_hash="h", capabilities=("",))


def test_reject_reason_for_error() -> None:
    assert RejectReason.for_error(BadSignature("x")) is RejectReason.BAD_SIGNATURE
    assert RejectReason.for_error(UnknownKey("x")) is RejectReason.UNKNOWN_KEY
    assert RejectReason.for_error(WrongDevice("x")) is RejectReason.WRONG_DEVICE
    assert RejectReason.for_error(ClockUntrusted("x")) is RejectReason.CLOCK_UNTRUSTED
    assert RejectReason.for_error(StaleMessage("x")) is RejectReason.EXPIRED
    assert RejectReason.for_error(ReplayedMessage("x")) is RejectReason.DUPLICATE
    assert RejectReason.for_error(OversizedMessage("x")) is RejectReason.MALFORMED


# -- gap events -------------------------------------------------------------------------------


def test_gap_round_trip() -> None:
    event = SAMPLES["event_gap"]
    assert isinstance(event, Event)
    decoded = decode_payload(encode_payload(event))
    assert isinstance(decoded, Event)
    gap = parse_gap(decoded)
    assert gap == Gap(((10, 19), (25, 25)), "outbox_full")
    assert gap.count == 11


@pytest.mark.parametrize(
    ("ranges", "reason"),
    [
        ((), "outbox_full"),
        (((5, 4),), "outbox_full"),
        (((1, 5), (5, 6)), "outbox_full"),
        (((6, 8), (1, 2)), "outbox_full"),
        (((1, 100),), "outbox_full"),  # not before the event's own seq
        (((-1, 2),), "outbox_full"),
        (((1, 2, 3),), "outbox_full"),
        (((1, 2),), ""),
    ],
)
def test_gap_event_rejects_bad_ranges(ranges: Any, reason: str) -> None:
    with pytest.raises(EncodeError):
        gap_event(**HEADER, seq=100, ranges=ranges, reason=reason)


@pytest.mark.parametrize(
    "detail",
    [
        {},
        {"ranges": [[1, 2]]},
        {"ranges": "1-2", "reason": "x"},
        {"ranges": [[True, 2]], "reason": "x"},
    ],
)
def test_parse_gap_rejects_bad_detail(detail: dict[str, Any]) -> None:
    event = Event(**HEADER, seq=100, kind=EventKind.GAP, detail=detail)
    with pytest.raises(MalformedMessage) as info:
        parse_gap(event)
    assert (info.value.device_id, info.value.seq) == ("boiler-0001", 100)


def test_parse_gap_rejects_other_events() -> None:
    event = SAMPLES["event_lockout"]
    assert isinstance(event, Event)
    with pytest.raises(MalformedMessage):
        parse_gap(event)


# -- strict decoding --------------------------------------------------------------------------


def test_unknown_top_level_keys_are_ignored() -> None:
    wire = _wire("data") | {"future": {"x": [1, 2]}, "zz": 1}
    assert decode_payload(_dumps(wire)) == SAMPLES["data"]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_field_is_required(name: str) -> None:
    wire = _wire(name)
    for key in wire:
        if key != "reason":
            with pytest.raises(MalformedMessage):
                decode_payload(_dumps({k: v for k, v in wire.items() if k != key}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seq", True),
        ("seq", -1),
        ("seq", 1.0),
        ("epoch", False),
        ("ts", "1"),
        ("sync", 1),
        ("sync", None),
        ("dev", "BOILER"),
        ("dev", b"boiler-0001"),
        ("k", "state"),
        ("k", "telemetry"),
        ("k", 1),
        ("readings", {}),
        ("readings", [["p", 0, 1]]),
        ("readings", [["p", 0, 1, 3]]),
        ("readings", [["p", 0, 1, True]]),
        ("readings", [["p", 0.0, 1, 0]]),
        ("readings", [["p", -(T0 + 1), 1, 0]]),
        ("readings", [["p", 0, float("nan"), 0]]),
        ("readings", [["p", 0, [1], 0]]),
        ("readings", [["", 0, 1, 0]]),
    ],
)
def test_mistyped_fields_are_malformed(key: str, value: Any) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(_dumps(_wire("data") | {key: value}))


def test_errors_carry_context() -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_payload(_dumps(_wire("data") | {"readings": [["p", 0, 1, 9]]}))
    assert (info.value.device_id, info.value.seq) == ("boiler-0001", 42)


def test_kind_must_match_expected() -> None:
    payload = encode_payload(SAMPLES["data"])
    with pytest.raises(MalformedMessage, match="kind"):
        decode_payload(payload, expected_kind=TopicKind.ACK)
    with pytest.raises(LocalProtocolError):
        decode_payload(payload, expected_kind=TopicKind.STATE)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x80",
        b"\xa0",
        b"\xd2\xa0",
        encode_payload(SAMPLES["data"]) + b"\x00",
        b"\xbf\x61k\x64data\xff",  # indefinite-length map
        b"\xa2\x61k\x64data\x61k\x63ack",  # duplicate key
        b"\xa1\x18\x01\x00",  # integer key not in shortest form
        b"\xa1\xf9\x3c\x00\x00",  # float key
        b"\xa1\x61k\xf7",  # undefined
        b"\xa1\x61k\xf0",  # unassigned simple value
        b"\xa1\x62\xff\xfe\x00",  # invalid UTF-8
        b"\xa1\x61k\xc2\x41\x01",  # bignum tag
        b"\xa1\x61k\xd8\x1c\x80",  # shared-reference tag
        b"\x9b" + b"\xff" * 8,  # huge declared array
        b"\x5b" + b"\x7f" + b"\xff" * 7,  # huge declared byte string
        b"\x1c",  # reserved additional information
    ],
)
def test_bad_cbor_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payload(data)


def test_depth_limit() -> None:
    nested: Any = 0
    for _ in range(MAX_DEPTH):
        nested = [nested]
    with pytest.raises(MalformedMessage, match="nested"):
        decode_payload(_dumps(_wire("data") | {"future": nested}))
    with pytest.raises(MalformedMessage, match="nested"):
        decode_payload(b"\x81" * 60_000 + b"\x00")  # no recursion blow-up


def test_size_limit_checked_before_parsing() -> None:
    with pytest.raises(OversizedMessage):
        decode_payload(b"\xff" * (MAX_PAYLOAD_BYTES + 1))
    big = TelemetryBatch(**HEADER, seq=1, readings=(Reading("p", T0, "x" * MAX_PAYLOAD_BYTES),))
    with pytest.raises(EncodeError):
        encode_payload(big)


def test_non_bytes_input() -> None:
    payload = encode_payload(SAMPLES["health"])
    assert decode_payload(bytearray(payload)) == SAMPLES["health"]
    assert decode_payload(memoryview(payload)) == SAMPLES["health"]
    with pytest.raises(MalformedMessage):
        decode_payload("text")  # type: ignore[arg-type]


# -- fuzzing ----------------------------------------------------------------------------------


def _decodes_or_rejects(data: bytes) -> None:
    """The only acceptable outcomes: a valid message, or a RemoteProtocolError."""
    try:
        message = decode_payload(data)
    except RemoteProtocolError:
        return
    assert decode_payload(encode_payload(message)) == message


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation(name: str) -> None:
    payload = encode_payload(SAMPLES[name])
    for end in range(len(payload)):
        with pytest.raises(MalformedMessage):
            decode_payload(payload[:end])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_single_byte_flips(name: str, data: st.DataObject) -> None:
    payload = bytearray(encode_payload(SAMPLES[name]))
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    _decodes_or_rejects(bytes(payload))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage(data: bytes) -> None:
    _decodes_or_rejects(data)


_fields = st.sampled_from(
    ["k", "dev", "epoch", "seq", "ts", "sync", "readings", "event", "detail", "modem", "agent",
     "command_id", "state", "reason", "observed", "id", "name", "args", "iat", "exp",
     "agent_version", "map_id", "map_hash", "capabilities"]
)  # fmt: skip
_cbor_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.sampled_from([k.value for k in TopicKind] + ["boiler-0001"])
)
_cbor_values = st.recursive(
    _cbor_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.dictionaries(_fields, _cbor_values, max_size=4))
def test_structured_garbage(name: str, changes: dict[str, Any]) -> None:
    _decodes_or_rejects(_dumps(_wire(name) | changes))


_strict_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.integers(-100, 100), inner, max_size=3)
    ),
    max_leaves=16,
)


@settings(max_examples=200, deadline=None)
@given(_strict_values)
def test_strict_cbor_agrees_with_cbor2(value: Any) -> None:
    data = _dumps(value)
    assert strict_cbor.loads(data) == cbor2.loads(data) == value


# -- watermarks -----------------------------------------------------------------------------


def test_watermark_covers_what_is_stored_only() -> None:
    mark = Watermark(dev="boiler-0001", upto=100, missing=((5, 5), (40, 59)), iat=1)
    assert [s for s in range(1, 103) if not mark.covers(s)] == [5, *range(40, 60), 101, 102]
    assert decode_payload(encode_payload(mark)) == mark


@pytest.mark.parametrize(
    "missing",
    [
        ((0, 3),),  # seqs start at 1
        ((5, 4),),  # first after last
        ((3, 5), (5, 9)),  # overlapping
        ((7, 9), (3, 5)),  # not ascending
        ((90, 101),),  # past upto
        ((1, 2, 3),),  # not a pair
        (("1", 2),),  # not ints
        tuple((i, i) for i in range(1, MAX_MISSING_RANGES + 2)),  # too many
    ],
)
def test_watermark_missing_ranges_are_checked(missing: Any) -> None:
    with pytest.raises(EncodeError):
        Watermark(dev="boiler-0001", upto=100, missing=missing, iat=1)
    wire = {"k": "stored", "dev": "boiler-0001", "upto": 100, "missing": missing, "iat": 1}
    with pytest.raises(MalformedMessage):
        decode_payload(cbor2.dumps(wire, canonical=True), TopicKind.STORED)
