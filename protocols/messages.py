"""Messages exchanged between edge agent and cloud: frozen, validated values.

Invariants:

* Every message is a frozen, slotted dataclass that validates itself on construction and
  raises `EncodeError` (a `LocalProtocolError`) when a field does not fit. Once built, a
  message is immutable all the way down: sequences are tuples and mappings are read-only
  `MappingProxyType` views of private copies (so messages with mapping fields are not
  hashable).
* The uplink header is **flat**: every uplink message subclasses `Uplink` and starts with the
  *contract* fields ``dev``, ``epoch``, ``seq``, ``ts``, ``sync``. Fields are keyword-only, so
  a batch is ``TelemetryBatch(dev=..., epoch=..., seq=..., ts=..., sync=..., readings=...)``;
  re-stamp one with ``dataclasses.replace(message, seq=...)``.
* Integers are Python ``int`` (never ``bool``); ``epoch``, ``seq`` and timestamps are
  unsigned 64-bit; other integer values fit CBOR's range ``[-2**64, 2**64)``. Floats are
  finite. Timestamps are wall-clock milliseconds since the Unix epoch.
* Enums are `StrEnum`; constructors also accept their string values.

The CBOR encoding is in `protocols.wire`; signing in `protocols.cose`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

from protocols.errors import (
    BadSignature,
    ClockUntrusted,
    EncodeError,
    MalformedMessage,
    RemoteProtocolError,
    ReplayedMessage,
    StaleMessage,
    UnknownKey,
    WrongDevice,
)
from protocols.topics import TopicKind, is_device_id

Scalar: TypeAlias = bool | int | float | str | None
"""A reading value, command argument or observed value."""
DetailValue: TypeAlias = "Scalar | tuple[DetailValue, ...] | Mapping[str, DetailValue]"
"""An event detail value: a scalar, or (nested) tuples and string-keyed mappings."""

UINT64_LIMIT = 2**64
"""``seq``, ``epoch`` and timestamps are below this."""
INT_MIN, INT_MAX = -(2**64), 2**64 - 1
"""Range of integers CBOR encodes without tags."""
MAX_DETAIL_DEPTH = 4
"""How deeply tuples and mappings may nest inside an event detail value."""

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""Canonical lower-case UUID text, matched in full."""

_E = TypeVar("_E", bound=StrEnum)


class Quality(StrEnum):
    """How far a reading can be trusted."""

    GOOD = "good"
    BAD = "bad"
    UNCERTAIN = "uncertain"


class EventKind(StrEnum):
    """What an `Event` reports."""

    LOCKOUT = "lockout"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"
    STATE_CHANGE = "state_change"
    COMMS_LOST = "comms_lost"
    COMMS_RESTORED = "comms_restored"
    GAP = "gap"
    RESET = "reset"
    AGENT_START = "agent_start"


class AckState(StrEnum):
    """Progress of a command as reported by the device."""

    DELIVERED = "delivered"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    """Machine-readable reason a command was rejected (or failed)."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_DEVICE = "wrong_device"
    MALFORMED = "malformed"
    CLOCK_UNTRUSTED = "clock_untrusted"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    NOT_IN_LOCKOUT = "not_in_lockout"
    RATE_LIMITED = "rate_limited"
    COMMS_ERROR = "comms_error"
    RESET_FAILED = "reset_failed"
    UNSUPPORTED_COMMAND = "unsupported_command"
    INVALID_ARGS = "invalid_args"
    DOWNGRADE = "downgrade"
    """An update to a version not newer than the one running (or an agent too old for it)."""
    BAD_ARTIFACT = "bad_artifact"
    """The downloaded artifact's size or SHA-256 is not the manifest's."""
    DOWNLOAD_FAILED = "download_failed"
    ROLLED_BACK = "rolled_back"
    """The new release did not become healthy in time (or crashed): the previous one runs."""

    @classmethod
    def for_error(cls, error: RemoteProtocolError) -> RejectReason:
        """The reason to ack with when opening a command raised `error`."""
        for error_type, reason in _REASON_FOR_ERROR:
            if isinstance(error, error_type):
                return reason
        return cls.MALFORMED


_REASON_FOR_ERROR: tuple[tuple[type[RemoteProtocolError], RejectReason], ...] = (
    (BadSignature, RejectReason.BAD_SIGNATURE),
    (UnknownKey, RejectReason.UNKNOWN_KEY),
    (WrongDevice, RejectReason.WRONG_DEVICE),
    (ClockUntrusted, RejectReason.CLOCK_UNTRUSTED),
    (StaleMessage, RejectReason.EXPIRED),
    (ReplayedMessage, RejectReason.DUPLICATE),
)


class CommandName(StrEnum):
    """Commands the cloud can send."""

    RESTART = "restart"
    """Lockout reset."""
    SET_SETPOINT = "set_setpoint"
    CONFIGURE = "configure"
    """A new cloud-signed configuration: ``version`` (int) and ``config`` (JSON text of
    `protocols.remote_config` settings). Added after v1's first release: an agent that
    predates it rejects it as ``malformed`` (an unknown name), which the cloud reads as
    "this agent cannot be configured remotely"."""
    UPDATE = "update"
    """Install another agent release (the command is its signed manifest): ``version``,
    ``url`` (of the artifact, on the cloud), ``sha256`` (hex), ``size`` (bytes),
    ``min_agent`` (the oldest agent that may install it) and ``rollout`` (its id)."""
    ROLLBACK = "rollback"
    """Return to the release before the current one (``rollout``: the halted rollout)."""
    ROTATE_KEY = "rotate_key"
    """Make a new device key and prove it (`protocols.key_rotation`); keep signing with the
    current one until ``use_key``."""
    PIN_KEYS = "pin_keys"
    """Replace the set of pinned cloud command keys (``keys``: JSON text of ``{kid: PEM}``),
    signed with a key of the current set: how a new cloud key reaches every gateway, with
    the old one kept in the set for the overlap."""
    USE_KEY = "use_key"
    """Sign with the new key from now on (``key``: its raw public key, hex); the cloud sends
    it once every ingest worker knows the new key."""


UPDATE_INTERRUPTED = "interrupted during"
"""How an update ack's observed ``step`` starts (``interrupted during download``) when a
power cut stopped the update before its switch: the old release runs on, and the release
itself was not judged, so a rollout tries again."""


class GapReason(StrEnum):
    """Known reasons for a ``gap`` event (the field itself is free text)."""

    OUTBOX_FULL = "outbox_full"
    """The outbox hit its byte cap and evicted the oldest telemetry."""
    OUTBOX_CORRUPT = "outbox_corrupt"
    """Stored messages could not be read back."""


# -- field checks (raise EncodeError) -------------------------------------------------------


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _uint64(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < UINT64_LIMIT:
        raise EncodeError(f"{name} must be an int in [0, 2**64), got {value!r}")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise EncodeError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _device_id(value: object, name: str) -> str:
    if not is_device_id(value):
        raise EncodeError(f"{name} is not a valid device id: {value!r}")
    return value


def _enum(enum: type[_E], value: object, name: str) -> _E:
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    raise EncodeError(f"{name} must be one of {[m.value for m in enum]}, got {value!r}")


def _scalar(value: object, name: str) -> Scalar:
    if value is None or isinstance(value, bool | str):
        return value
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise EncodeError(f"{name}: integer {value} out of CBOR range")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise EncodeError(f"{name}: float must be finite, got {value!r}")
        return value
    raise EncodeError(f"{name} must be bool, int, float, str or None, got {type(value).__name__}")


def _number(value: object, name: str) -> int | float:
    if type(value) is int or type(value) is float:
        _scalar(value, name)
        return value
    raise EncodeError(f"{name} must be an int or float, got {value!r}")


def _detail(value: object, name: str, depth: int = 0) -> DetailValue:
    if isinstance(value, tuple | list | Mapping):
        if depth >= MAX_DETAIL_DEPTH:
            raise EncodeError(f"{name} nests deeper than {MAX_DETAIL_DEPTH}")
        if isinstance(value, Mapping):
            return _mapping(value, name, lambda v, n: _detail(v, n, depth + 1))
        return tuple(_detail(item, f"{name}[{i}]", depth + 1) for i, item in enumerate(value))
    return _scalar(value, name)


def _mapping(
    value: object, name: str, check: Callable[[object, str], Any]
) -> MappingProxyType[str, Any]:
    if not isinstance(value, Mapping):
        raise EncodeError(f"{name} must be a mapping, got {type(value).__name__}")
    items = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise EncodeError(f"{name} keys must be strings, got {key!r}")
        items[key] = check(item, f"{name}[{key!r}]")
    return MappingProxyType(items)


def _sequence(value: object, name: str) -> tuple[object, ...]:
    if not isinstance(value, tuple | list):
        raise EncodeError(f"{name} must be a tuple, got {type(value).__name__}")
    return tuple(value)


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point, sampled at `ts` (ms since the Unix epoch)."""

    point: str
    ts: int
    value: Scalar
    quality: Quality = Quality.GOOD

    def __post_init__(self) -> None:
        _text(self.point, "point")
        _uint64(self.ts, "reading ts")
        _scalar(self.value, f"value of {self.point}")
        _set(self, "quality", _enum(Quality, self.quality, "quality"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Uplink:
    """Header shared by every device-to-cloud message (flat *contract* fields)."""

    topic_kind: ClassVar[TopicKind]

    dev: str
    """Device id; must equal the topic's."""
    epoch: int
    """Agent start counter (persisted, incremented on every start)."""
    seq: int
    """Per-device sequence number, strictly increasing across all uplink kinds and restarts."""
    ts: int
    """Wall-clock ms since the Unix epoch when the message was built."""
    sync: bool
    """Whether the clock was trusted when the message was built."""

    def __post_init__(self) -> None:
        _device_id(self.dev, "dev")
        _uint64(self.epoch, "epoch")
        _uint64(self.seq, "seq")
        _uint64(self.ts, "ts")
        if not isinstance(self.sync, bool):
            raise EncodeError(f"sync must be a bool, got {self.sync!r}")
        self._validate()

    def _validate(self) -> None:
        """Check and freeze the body fields (overridden per message)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryBatch(Uplink):
    """A batch of readings (topic ``data``)."""

    topic_kind: ClassVar[TopicKind] = TopicKind.DATA
    readings: tuple[Reading, ...]

    def _validate(self) -> None:
        readings = _sequence(self.readings, "readings")
        for reading in readings:
            if not isinstance(reading, Reading):
                raise EncodeError(f"readings must be Reading objects, got {reading!r}")
        _set(self, "readings", readings)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Uplink):
    """An alarm, state change or bookkeeping event (topic ``event``)."""

    topic_kind: ClassVar[TopicKind] = TopicKind.EVENT
    kind: EventKind
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def _validate(self) -> None:
        _set(self, "kind", _enum(EventKind, self.kind, "event kind"))
        _set(self, "detail", _mapping(self.detail, "detail", _detail))


@dataclass(frozen=True, slots=True, kw_only=True)
class Birth(Uplink):
    """Sent once per agent start (topic ``birth``)."""

    topic_kind: ClassVar[TopicKind] = TopicKind.BIRTH
    agent_version: str
    map_id: str
    """Register-map id the agent polls with."""
    map_hash: str
    """Digest of that register map (`RegisterMap.digest`)."""
    capabilities: tuple[str, ...] = ()
    """Command names and features the agent supports."""

    def _validate(self) -> None:
        _text(self.agent_version, "agent_version")
        _text(self.map_id, "map_id")
        _text(self.map_hash, "map_hash")
        caps = _sequence(self.capabilities, "capabilities")
        _set(self, "capabilities", tuple(_text(c, "capability") for c in caps))


@dataclass(frozen=True, slots=True, kw_only=True)
class Health(Uplink):
    """Gateway and modem health (topic ``health``)."""

    topic_kind: ClassVar[TopicKind] = TopicKind.HEALTH
    modem: Mapping[str, Scalar] = field(default_factory=dict)
    """E.g. signal quality, operator, registration."""
    agent: Mapping[str, int | float] = field(default_factory=dict)
    """E.g. outbox depth and bytes, uptime, CPU temperature."""

    def _validate(self) -> None:
        _set(self, "modem", _mapping(self.modem, "modem", _scalar))
        _set(self, "agent", _mapping(self.agent, "agent", _number))


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(Uplink):
    """Progress or outcome of a command (topic ``ack``).

    `reason` is required when `state` is ``rejected``, optional when ``failed`` and absent
    otherwise.
    """

    topic_kind: ClassVar[TopicKind] = TopicKind.ACK
    command_id: str
    state: AckState
    reason: RejectReason | None = None
    observed: Mapping[str, Scalar] = field(default_factory=dict)
    """Boiler state read back after acting (e.g. status, fault code)."""

    def _validate(self) -> None:
        _uuid(self.command_id, "command_id")
        state = _enum(AckState, self.state, "state")
        _set(self, "state", state)
        if self.reason is not None:
            _set(self, "reason", _enum(RejectReason, self.reason, "reason"))
        if state is AckState.REJECTED and self.reason is None:
            raise EncodeError("a rejected ack needs a reason")
        if state not in (AckState.REJECTED, AckState.FAILED) and self.reason is not None:
            raise EncodeError(f"a {state} ack carries no reason")
        _set(self, "observed", _mapping(self.observed, "observed", _scalar))


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A command from the cloud to one device (topic ``cmd``)."""

    topic_kind: ClassVar[TopicKind] = TopicKind.CMD

    id: str
    """Canonical lower-case UUID; the device never runs the same id twice."""
    dev: str
    """The one device that may execute it."""
    name: CommandName
    args: Mapping[str, Scalar] = field(default_factory=dict)
    iat: int
    """Issued at, ms since the Unix epoch."""
    exp: int
    """Expires at, ms since the Unix epoch; later than `iat`."""

    def __post_init__(self) -> None:
        _uuid(self.id, "id")
        _device_id(self.dev, "dev")
        _set(self, "name", _enum(CommandName, self.name, "name"))
        _set(self, "args", _mapping(self.args, "args", _scalar))
        _uint64(self.iat, "iat")
        _uint64(self.exp, "exp")
        if self.exp <= self.iat:
            raise EncodeError(f"exp ({self.exp}) must be after iat ({self.iat})")


def _uuid(value: object, name: str) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise EncodeError(f"{name} must be a canonical lower-case UUID, got {value!r}")
    return value


MAX_MISSING_RANGES = 64
"""Ranges a `Watermark` may list as missing; more are left for the next one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Watermark:
    """The cloud's end-to-end acknowledgement to one device (topic ``stored``), signed like a
    command: every seq of the device up to `upto` is durably stored in the cloud except those
    in `missing` (inclusive ranges, ascending, disjoint, at most `MAX_MISSING_RANGES`).

    A device may delete a published message once a watermark covers it, and sends again what
    is missing (if it still has it). Replaying an old watermark is harmless: it confirms only
    what was stored then.
    """

    topic_kind: ClassVar[TopicKind] = TopicKind.STORED

    dev: str
    upto: int
    """Highest seq of the device the cloud has stored (0: none yet)."""
    missing: tuple[tuple[int, int], ...] = ()
    iat: int
    """Issued at, ms since the Unix epoch."""

    def __post_init__(self) -> None:
        _device_id(self.dev, "dev")
        _uint64(self.upto, "upto")
        _uint64(self.iat, "iat")
        ranges = tuple(
            tuple(pair) if isinstance(pair, tuple | list) else pair
            for pair in _sequence(self.missing, "missing")
        )
        if len(ranges) > MAX_MISSING_RANGES:
            raise EncodeError(f"missing lists {len(ranges)} ranges, over {MAX_MISSING_RANGES}")
        previous = 0
        for pair in ranges:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise EncodeError(f"missing range {pair!r} is not a [first, last] pair")
            first, last = pair
            if type(first) is not int or type(last) is not int:
                raise EncodeError(f"missing range {pair!r} must hold two ints")
            if not previous < first <= last <= self.upto:
                raise EncodeError(
                    f"missing range {pair!r} is not ascending, disjoint, from 1 and up to "
                    f"upto ({self.upto})"
                )
            previous = last
        _set(self, "missing", ranges)

    def covers(self, seq: int) -> bool:
        """Whether the cloud says it has stored `seq`."""
        return seq <= self.upto and not any(first <= seq <= last for first, last in self.missing)


UplinkMessage: TypeAlias = TelemetryBatch | Event | Birth | Health | Ack
"""Any device-to-cloud message."""
Message: TypeAlias = UplinkMessage | Command | Watermark
"""Any message with a CBOR payload."""

# -- gap events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Seq ranges (inclusive, ascending, disjoint) the device dropped, and why."""

    ranges: tuple[tuple[int, int], ...]
    reason: str

    @property
    def count(self) -> int:
        """How many messages were dropped."""
        return sum(last - first + 1 for first, last in self.ranges)


def _gap_problem(ranges: object, reason: object, seq: int) -> str | None:
    """What is wrong with a gap detail, if anything."""
    if not isinstance(reason, str) or not reason:
        return f"reason must be a non-empty string, got {reason!r}"
    if not isinstance(ranges, tuple | list) or not ranges:
        return "ranges must be a non-empty sequence of [first, last] pairs"
    previous = -1
    for pair in ranges:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            return f"range {pair!r} is not a [first, last] pair"
        first, last = pair
        if type(first) is not int or type(last) is not int:
            return f"range {pair!r} must hold two ints"
        if not previous < first <= last < seq:
            return f"range {pair!r} is not ascending, disjoint and before seq {seq}"
        previous = last
    return None


def gap_event(
    *,
    dev: str,
    epoch: int,
    seq: int,
    ts: int,
    sync: bool,
    ranges: tuple[tuple[int, int], ...],
    reason: str,
) -> Event:
    """A ``gap`` event reporting that the seqs in `ranges` (inclusive) were dropped."""
    problem = _gap_problem(ranges, reason, _uint64(seq, "seq"))
    if problem is not None:
        raise EncodeError(f"gap event: {problem}", device_id=dev, seq=seq)
    detail: dict[str, DetailValue] = {
        "ranges": tuple((first, last) for first, last in ranges),
        "reason": reason,
    }
    return Event(dev=dev, epoch=epoch, seq=seq, ts=ts, sync=sync, kind=EventKind.GAP, detail=detail)


def parse_gap(event: Event) -> Gap:
    """The dropped ranges and reason of a ``gap`` event; `MalformedMessage` if it is not one."""
    if event.kind is not EventKind.GAP:
        raise MalformedMessage(f"not a gap event: {event.kind}", device_id=event.dev, seq=event.seq)
    ranges, reason = event.detail.get("ranges"), event.detail.get("reason")
    problem = _gap_problem(ranges, reason, event.seq)
    if problem is not None:
        raise MalformedMessage(f"bad gap detail: {problem}", device_id=event.dev, seq=event.seq)
    pairs = cast("tuple[tuple[int, int], ...]", ranges)
    return Gap(tuple((first, last) for first, last in pairs), cast(str, reason))
