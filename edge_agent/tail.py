"""``boilertwin edge tail``: watch what one gateway sends, each message verified.

Subscribes to ``bt/v1/<device>/#`` and prints one line per message. Signed messages are opened
with `protocols.cose.open_uplink` against the gateway's public key, exactly as the cloud will;
one that does not verify prints ``REJECTED <reason>`` and the watch goes on. The formatting
functions are pure, so tests feed them sealed messages directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import signal
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import ConfigError, EdgeError
from edge_agent.keys import read_secret
from protocols.cose import open_uplink, public_key_from_pem
from protocols.errors import ProtocolError
from protocols.messages import (
    Ack,
    Birth,
    DetailValue,
    Event,
    Health,
    Scalar,
    TelemetryBatch,
    UplinkMessage,
)
from protocols.reference import REFERENCE_MAP
from protocols.topics import (
    PREFIX,
    STATE_OFFLINE,
    STATE_ONLINE,
    TopicKind,
    is_device_id,
    parse_topic,
)

HIGHLIGHT_POINTS = ("status", "fault_code", "flow_temp", "return_temp", "ch_pressure")
"""Points a ``data`` line shows when the batch has them, in this order."""
HEALTH_FIGURES = ("outbox_depth", "polls", "flash_bytes_today", "mqtt_connects")
"""Agent figures a ``health`` line shows."""
MODEM_FIGURES = ("rssi_dbm", "registration", "operator")
"""Modem figures a ``health`` line shows, when the gateway has a modem."""
MAX_DETAIL_CHARS = 80


class TailError(EdgeError):
    """The watch could not connect to the broker or lost it."""


@dataclass(frozen=True, slots=True)
class TailSettings:
    """Where to watch, as whom, and whose signatures to trust."""

    host: str
    port: int
    device_id: str
    public_key: Ed25519PublicKey
    username: str
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    count: int | None = None
    """Stop after this many messages (``None``: until cancelled)."""
    timeout_s: float = 10.0


# -- formatting (pure) --------------------------------------------------------------------------


def clock_text(ms: int) -> str:
    """Local wall-clock time of `ms` (ms since the Unix epoch) as ``HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")


def _value_text(point: str, value: Scalar) -> str:
    if point in REFERENCE_MAP and isinstance(value, int) and not isinstance(value, bool):
        label = REFERENCE_MAP.point(point).label(value)
        if label is not None and " " not in label:  # one word keeps `point=value` parseable
            return label
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summarize_data(batch: TelemetryBatch) -> str:
    """``12 readings: status=heating flow_temp=61.5 ch_pressure=1.52``."""
    latest: dict[str, Scalar] = {}
    for reading in batch.readings:
        latest[reading.point] = reading.value
    shown = [f"{p}={_value_text(p, latest[p])}" for p in HIGHLIGHT_POINTS if p in latest]
    if not shown:  # none of the usual points changed: show whatever did
        shown = [f"{p}={_value_text(p, v)}" for p, v in list(latest.items())[:4]]
    noun = "reading" if len(batch.readings) == 1 else "readings"
    head = f"{len(batch.readings)} {noun}"
    return f"{head}: {' '.join(shown)}" if shown else head


def _detail_text(detail: Mapping[str, DetailValue]) -> str:
    text = " ".join(f"{k}={v}" for k, v in detail.items())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def summarize_event(event: Event) -> str:
    """``lockout code=28 ...``: the event kind and its detail."""
    detail = _detail_text(event.detail)
    return f"{event.kind} {detail}".rstrip()


def summarize_birth(birth: Birth) -> str:
    """``map bt-ref-1 (agent 0.1.0) capabilities: restart``."""
    caps = ", ".join(birth.capabilities) or "none"
    return f"map {birth.map_id} (agent {birth.agent_version}) capabilities: {caps}"


def summarize_health(health: Health) -> str:
    """``outbox_depth=0 polls=30 flash_bytes_today=40960 ...`` plus modem figures, if any."""
    parts = [f"{name}={health.agent[name]:g}" for name in HEALTH_FIGURES if name in health.agent]
    parts += [
        f"modem.{name}={health.modem[name]}" for name in MODEM_FIGURES if name in health.modem
    ]
    return " ".join(parts) or "(no figures)"


def summarize_ack(ack: Ack) -> str:
    """``command <id> succeeded`` or ``command <id> rejected (expired)``."""
    reason = f" ({ack.reason})" if ack.reason is not None else ""
    return f"command {ack.command_id} {ack.state}{reason}"


def summarize(message: UplinkMessage) -> str:
    """A short, human summary of the body of any uplink message."""
    match message:
        case TelemetryBatch():
            return summarize_data(message)
        case Event():
            return summarize_event(message)
        case Birth():
            return summarize_birth(message)
        case Health():
            return summarize_health(message)
        case Ack():
            return summarize_ack(message)
    return type(message).__name__  # pragma: no cover - every uplink kind is matched above


def format_message(message: UplinkMessage) -> str:
    """One line for a verified message: its time, kind, seq, epoch and summary."""
    kind = message.topic_kind
    head = f"{clock_text(message.ts)}  {kind:<6}  seq {message.seq:<5} epoch {message.epoch:<3}"
    clock = "" if message.sync else "  (clock unsynced)"
    return f"{head} {summarize(message)}{clock}"


def format_state(payload: bytes, received_ms: int) -> str:
    """One line for the retained ``state`` (online / offline; unsigned by contract)."""
    if payload in (STATE_ONLINE, STATE_OFFLINE):
        text = payload.decode()
    else:
        text = f"unexpected payload {payload[:32]!r}"
    return f"{clock_text(received_ms)}  {'state':<6}  {text}"


def format_rejected(topic: str, reason: str, received_ms: int) -> str:
    """The line for a message that failed verification."""
    return f"{clock_text(received_ms)}  REJECTED {reason} (topic {topic})"


def describe(topic: str, payload: bytes, public_key: Ed25519PublicKey, received_ms: int) -> str:
    """Verify one received publication and render it as a line (never raises on bad input)."""
    try:
        device_id, kind = parse_topic(topic)
        if kind is TopicKind.STATE:
            return format_state(payload, received_ms)
        message = open_uplink(payload, topic, {device_id: public_key})
    except ProtocolError as exc:
        return format_rejected(topic, f"{type(exc).__name__}: {exc}", received_ms)
    return format_message(message)


# -- the watch ----------------------------------------------------------------------------------


def subscription_filter(device_id: str) -> str:
    """Everything one device sends: ``bt/v1/<device>/#``."""
    return f"{PREFIX}/{device_id}/#"


def _client(settings: TailSettings) -> aiomqtt.Client:
    tls_context = None
    if settings.tls:
        cafile = str(settings.ca_file) if settings.ca_file else None
        tls_context = ssl.create_default_context(cafile=cafile)
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        # The broker refuses empty client ids; a random one never takes over another session.
        identifier=f"tail-{settings.username}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=settings.timeout_s,
        tls_context=tls_context,
    )


def _now_ms() -> int:
    return int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)


async def tail(
    settings: TailSettings,
    emit: Callable[[str], None],
    now_ms: Callable[[], int] = _now_ms,
) -> int:
    """Print (through `emit`) a line per message until `count` messages or cancellation.

    Returns how many messages were seen. Broker trouble is raised as `TailError`.
    """
    where = f"{'mqtts' if settings.tls else 'mqtt'}://{settings.host}:{settings.port}"
    topic_filter = subscription_filter(settings.device_id)
    seen = 0
    try:
        async with _client(settings) as client:
            await client.subscribe(topic_filter, qos=1)
            emit(f"watching {topic_filter} on {where} as {settings.username} (verified)")
            if settings.count == 0:
                return 0
            async for received in client.messages:
                payload = received.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                emit(describe(received.topic.value, data, settings.public_key, now_ms()))
                seen += 1
                if settings.count is not None and seen >= settings.count:
                    break
    except aiomqtt.MqttError as exc:
        raise TailError(f"{where}: {exc}", device_id=settings.device_id) from exc
    except (ssl.SSLError, OSError) as exc:
        raise TailError(f"{where}: {exc}", device_id=settings.device_id) from exc
    return seen


def load_settings(
    *,
    host: str,
    port: int,
    device_id: str,
    public_key_file: Path,
    username: str,
    password_file: Path | None,
    tls: bool = False,
    ca_file: Path | None = None,
    count: int | None = None,
) -> TailSettings:
    """Build `TailSettings` from command-line values, reading the key and password files."""
    if not is_device_id(device_id):
        raise ConfigError("--device", f"not a valid device id: {device_id!r}")
    if ca_file is not None and not tls:
        raise ConfigError("--ca-file", "needs --tls")
    try:
        public_key = public_key_from_pem(public_key_file.read_bytes())
    except OSError as exc:
        raise ConfigError("--public-key", f"cannot read {public_key_file}: {exc.strerror}") from exc
    except (ProtocolError, ValueError) as exc:
        raise ConfigError("--public-key", f"{public_key_file}: {exc}") from exc
    return TailSettings(
        host=host,
        port=port,
        device_id=device_id,
        public_key=public_key,
        username=username,
        password=read_secret(password_file, "--password-file"),
        tls=tls,
        ca_file=ca_file,
        count=count,
    )


def run_tail(settings: TailSettings, emit: Callable[[str], None]) -> None:
    """Run `tail` until it has seen `count` messages, or SIGINT or SIGTERM (a quiet end)."""

    async def supervise() -> None:
        task = asyncio.ensure_future(tail(settings, emit))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(supervise())
