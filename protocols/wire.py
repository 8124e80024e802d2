"""CBOR payload codec (*contract*): messages <-> the bytes inside a COSE_Sign1 envelope.

Wire format v1
==============

A payload is exactly one CBOR data item (RFC 8949): a map whose keys are text strings.

Encoding is deterministic (RFC 8949 section 4.2.1, as ``cbor2.dumps(..., canonical=True)``
produces it): integers, lengths and tags in their shortest form, definite lengths only, map
keys sorted bytewise by their encoding (for text keys that is shorter first, then bytewise),
floats in the shortest of half/single/double precision that holds the value exactly. Integers
are always CBOR integers and non-integral or float-typed values always CBOR floats, so ``21``
and ``21.0`` stay distinct. No tags appear in a payload.

Every payload has ``"k"``, the kind discriminator: the last level of the topic it belongs on
(``birth``, ``data``, ``event``, ``health``, ``ack``, ``cmd`` or ``stored``). A receiver
rejects a payload whose ``k`` differs from the topic's kind, so a data payload cannot be
replayed as an ack.

Uplink payloads (all kinds but ``cmd`` and ``stored``) then carry the header:

=========  ===========  ==========================================================
key        CBOR type    meaning
=========  ===========  ==========================================================
``dev``    text         device id, ``[a-z0-9][a-z0-9-]{2,62}``, equal to the topic's
``epoch``  uint < 2^64  agent start counter
``seq``    uint < 2^64  per-device sequence, strictly increasing over all kinds
``ts``     uint < 2^64  wall-clock ms since 1970-01-01T00:00Z when built
``sync``   bool         whether the clock was trusted
=========  ===========  ==========================================================

and per kind (a *scalar* is bool, int in ``[-2^64, 2^64)``, finite float, text or null):

* ``data``: ``readings`` -- array of 4-element arrays ``[point, dt, value, q]``: point name
  (text), ``dt`` = reading time minus the header ``ts`` in ms (int, may be negative), value
  (scalar), quality code (uint: 0 good, 1 bad, 2 uncertain).
* ``event``: ``event`` (text: ``lockout``, ``fault``, ``fault_cleared``, ``state_change``,
  ``comms_lost``, ``comms_restored``, ``gap``, ``reset``, ``agent_start``) and ``detail``
  (map, text keys; values are scalars, arrays or text-keyed maps, nested at most 4 deep).
  A ``gap`` detail is ``{"ranges": [[first, last], ...], "reason": text}``: inclusive seq
  ranges, ascending, disjoint, all below the event's own ``seq``.
* ``birth``: ``agent_version``, ``map_id``, ``map_hash`` (non-empty text) and
  ``capabilities`` (array of non-empty text).
* ``health``: ``modem`` (map text -> scalar), ``agent`` (map text -> int or float).
* ``ack``: ``command_id`` (canonical lower-case UUID text), ``state`` (text: ``delivered``,
  ``executing``, ``succeeded``, ``failed``, ``rejected``), ``reason`` (text, see
  `RejectReason`; present for ``rejected``, optional for ``failed``, omitted otherwise;
  ``null`` is read as absent) and ``observed`` (map text -> scalar).

A ``cmd`` payload has no header: ``id`` (canonical lower-case UUID text), ``dev`` (target
device id), ``name`` (text: ``restart``, ``set_setpoint``; ``configure``, ``update``,
``rollback``, ``rotate_key``, ``use_key`` and ``pin_keys`` since the gateway lifecycle
work), ``args`` (map text -> scalar), ``iat`` and ``exp`` (uint ms since 1970, ``exp > iat``).

A ``stored`` payload (the cloud's end-to-end acknowledgement, signed with a cloud key like a
command; added after v1's first release, so a receiver that predates it never subscribes to
it) has no header either: ``dev`` (the device), ``upto`` (uint: the highest seq of the device
the cloud has stored), ``missing`` (array of ``[first, last]`` uint pairs, inclusive,
ascending, disjoint, within ``1..upto``, at most 64: seqs up to ``upto`` the cloud does not
have) and ``iat`` (uint ms since 1970). Every seq up to ``upto`` outside ``missing`` is
durably stored.

Every key listed is required unless said otherwise. Unknown top-level keys are ignored, so a
newer sender may add fields that older receivers skip; unknown *values* of enumerated fields
(kinds, states, reasons) are rejected. Limits: at most `MAX_PAYLOAD_BYTES` bytes, checked
before parsing, and at most `MAX_DEPTH` nested arrays/maps. Decoding is strict (see
`protocols.strict_cbor`): exactly one item, no trailing bytes, no duplicate keys, no tags, no
indefinite lengths. Every decoding failure raises a `RemoteProtocolError` subclass.

Example (``data``, diagnostic notation)::

    {"k": "data", "ts": 1700000000000, "dev": "boiler-0001", "seq": 42, "sync": true,
     "epoch": 3, "readings": [["flow_temp", -1000, 61.5, 0], ["fault_code", 0, 28, 0]]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import cbor2

from protocols import strict_cbor
from protocols.errors import (
    EncodeError,
    LocalProtocolError,
    MalformedMessage,
    OversizedMessage,
)
from protocols.messages import (
    Ack,
    Birth,
    Command,
    DetailValue,
    Event,
    Health,
    Message,
    Quality,
    Reading,
    TelemetryBatch,
    Uplink,
    Watermark,
)
from protocols.strict_cbor import CborKey
from protocols.topics import TopicKind, is_device_id

MAX_PAYLOAD_BYTES = 65536
"""Largest payload accepted (and produced)."""
MAX_DEPTH = 8
"""Deepest nesting of arrays and maps accepted in a payload."""

QUALITY_CODES: Mapping[Quality, int] = {Quality.GOOD: 0, Quality.BAD: 1, Quality.UNCERTAIN: 2}
"""Quality -> its code in a reading array."""
_QUALITY_BY_CODE = {code: quality for quality, code in QUALITY_CODES.items()}

_Wire: TypeAlias = dict[str, Any]
_WireIn: TypeAlias = Mapping[CborKey, Any]
"""A decoded payload map; values are checked by the message constructors."""


# -- encoding ---------------------------------------------------------------------------------


def _plain(value: DetailValue) -> Any:
    """A frozen detail value as the dicts and lists cbor2 encodes."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _header(message: Uplink) -> _Wire:
    return {
        "k": message.topic_kind.value,
        "dev": message.dev,
        "epoch": message.epoch,
        "seq": message.seq,
        "ts": message.ts,
        "sync": message.sync,
    }


def _to_wire(message: Message) -> _Wire:
    if isinstance(message, Watermark):
        return {
            "k": TopicKind.STORED.value,
            "dev": message.dev,
            "upto": message.upto,
            "missing": [list(pair) for pair in message.missing],
            "iat": message.iat,
        }
    if isinstance(message, Command):
        return {
            "k": TopicKind.CMD.value,
            "id": message.id,
            "dev": message.dev,
            "name": message.name.value,
            "args": dict(message.args),
            "iat": message.iat,
            "exp": message.exp,
        }
    body: _Wire
    if isinstance(message, TelemetryBatch):
        body = {
            "readings": [
                [r.point, r.ts - message.ts, r.value, QUALITY_CODES[r.quality]]
                for r in message.readings
            ]
        }
    elif isinstance(message, Event):
        body = {"event": message.kind.value, "detail": _plain(message.detail)}
    elif isinstance(message, Birth):
        body = {
            "agent_version": message.agent_version,
            "map_id": message.map_id,
            "map_hash": message.map_hash,
            "capabilities": list(message.capabilities),
        }
    elif isinstance(message, Health):
        body = {"modem": dict(message.modem), "agent": dict(message.agent)}
    elif isinstance(message, Ack):
        body = {
            "command_id": message.command_id,
            "state": message.state.value,
            "observed": dict(message.observed),
        }
        if message.reason is not None:
            body["reason"] = message.reason.value
    else:
        raise EncodeError(f"not a message: {type(message).__name__}")
    return _header(message) | body


def encode_payload(message: Message) -> bytes:
    """Deterministic CBOR bytes of `message`; `EncodeError` if larger than the limit."""
    data = cbor2.dumps(_to_wire(message), canonical=True)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncodeError(
            f"{message.topic_kind} payload is {len(data)} bytes, over {MAX_PAYLOAD_BYTES}",
            device_id=message.dev,
        )
    return data


# -- decoding ---------------------------------------------------------------------------------


def _get(wire: _WireIn, key: str) -> Any:
    if key not in wire:
        raise MalformedMessage(f"missing field {key!r}")
    return wire[key]


def _header_fields(wire: _WireIn) -> dict[str, Any]:
    return {key: _get(wire, key) for key in ("dev", "epoch", "seq", "ts", "sync")}


def _reading(item: object, batch_ts: int) -> Reading:
    if not isinstance(item, list) or len(item) != 4:
        raise MalformedMessage(f"a reading must be a [point, dt, value, q] array, got {item!r}")
    point, dt, value, code = item
    if type(dt) is not int:
        raise MalformedMessage(f"reading dt must be an integer, got {dt!r}")
    if type(code) is not int or code not in _QUALITY_BY_CODE:
        raise MalformedMessage(f"unknown quality code {code!r}")
    return Reading(point, batch_ts + dt, value, _QUALITY_BY_CODE[code])


def _telemetry(wire: _WireIn) -> TelemetryBatch:
    header = _header_fields(wire)
    readings = _get(wire, "readings")
    if not isinstance(readings, list):
        raise MalformedMessage("readings must be an array")
    if type(header["ts"]) is not int:
        raise MalformedMessage(f"ts must be an integer, got {header['ts']!r}")
    return TelemetryBatch(**header, readings=tuple(_reading(r, header["ts"]) for r in readings))


def _event(wire: _WireIn) -> Event:
    return Event(**_header_fields(wire), kind=_get(wire, "event"), detail=_get(wire, "detail"))


def _birth(wire: _WireIn) -> Birth:
    fields = {key: _get(wire, key) for key in ("agent_version", "map_id", "map_hash")}
    return Birth(**_header_fields(wire), **fields, capabilities=_get(wire, "capabilities"))


def _health(wire: _WireIn) -> Health:
    return Health(**_header_fields(wire), modem=_get(wire, "modem"), agent=_get(wire, "agent"))


def _ack(wire: _WireIn) -> Ack:
    fields = {key: _get(wire, key) for key in ("command_id", "state", "observed")}
    return Ack(**_header_fields(wire), **fields, reason=wire.get("reason"))


def _command(wire: _WireIn) -> Command:
    fields = {key: _get(wire, key) for key in ("id", "dev", "name", "args", "iat", "exp")}
    return Command(**fields)


def _watermark(wire: _WireIn) -> Watermark:
    fields = {key: _get(wire, key) for key in ("dev", "upto", "missing", "iat")}
    return Watermark(**fields)


_DECODERS: Mapping[str, Callable[[_WireIn], Message]] = {
    TopicKind.BIRTH: _birth,
    TopicKind.DATA: _telemetry,
    TopicKind.EVENT: _event,
    TopicKind.HEALTH: _health,
    TopicKind.ACK: _ack,
    TopicKind.CMD: _command,
    TopicKind.STORED: _watermark,
}


def decode_payload(
    data: bytes | bytearray | memoryview, expected_kind: TopicKind | None = None
) -> Message:
    """Parse and validate a payload; if `expected_kind` is given, `k` must equal it.

    Raises a `RemoteProtocolError` subclass (`OversizedMessage`, `MalformedMessage`) for any
    bytes that are not a valid v1 payload, and `LocalProtocolError` if `expected_kind` is a
    kind without a CBOR payload (``state``).
    """
    if expected_kind is not None and expected_kind not in _DECODERS:
        raise LocalProtocolError(f"{expected_kind!r} has no CBOR payload")
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise MalformedMessage(f"payload must be bytes, got {type(data).__name__}")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise OversizedMessage(f"payload is {len(data)} bytes, over {MAX_PAYLOAD_BYTES}")
    wire = strict_cbor.loads(data, max_depth=MAX_DEPTH)
    if not isinstance(wire, dict):
        raise MalformedMessage(f"payload must be a CBOR map, got {type(wire).__name__}")
    dev, seq = wire.get("dev"), wire.get("seq")
    context: dict[str, Any] = {
        "device_id": dev if is_device_id(dev) else None,
        "seq": seq if type(seq) is int else None,
    }
    kind = wire.get("k")
    if not isinstance(kind, str) or kind not in _DECODERS:
        raise MalformedMessage(f"unknown payload kind k={kind!r}", **context)
    if expected_kind is not None and kind != expected_kind:
        raise MalformedMessage(f"payload kind {kind!r} where {expected_kind!r} expected", **context)
    try:
        return _DECODERS[kind](wire)
    except MalformedMessage as exc:
        exc.device_id, exc.seq = exc.device_id or context["device_id"], context["seq"]
        raise
    except LocalProtocolError as exc:
        raise MalformedMessage(f"invalid {kind} payload: {exc.message}", **context) from exc
