"""`boilertwin edge tail`: line formatting on real sealed messages, and a watch on Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from boilertwin import app as root_app
from edge_agent.errors import ConfigError
from edge_agent.tail import (
    TailSettings,
    clock_text,
    describe,
    format_message,
    load_settings,
    summarize,
    tail,
)
from protocols.cose import generate_private_key, public_key_to_pem, seal
from protocols.messages import (
    Ack,
    AckState,
    Birth,
    Event,
    EventKind,
    Health,
    Reading,
    RejectReason,
    TelemetryBatch,
    UplinkMessage,
)
from protocols.topics import TopicKind, topic
from tests.broker import CLOUD_PASSWORD, CLOUD_USER, Broker

DEV = "boiler-0001"
TS = 1_763_694_000_000
KEY = generate_private_key()


def header(seq: int) -> dict[str, object]:
    return {"dev": DEV, "epoch": 3, "seq": seq, "ts": TS, "sync": True}


def batch(seq: int = 10) -> TelemetryBatch:
    return TelemetryBatch(
        **header(seq),  # type: ignore[arg-type]
        readings=(
            Reading("status", TS - 4000, 1),
            Reading("flow_temp", TS - 4000, 58.5),
            Reading("ch_pressure", TS - 4000, 1.52),
            Reading("flow_temp", TS, 61.0),
        ),
    )


def event(seq: int = 11) -> Event:
    return Event(
        **header(seq),  # type: ignore[arg-type]
        kind=EventKind.LOCKOUT,
        detail={"fault_code": 28, "text": "no flame"},
    )


def birth() -> Birth:
    return Birth(
        **header(1),  # type: ignore[arg-type]
        agent_version="0.1.0",
        map_id="bt-ref-1",
        map_hash="ab" * 16,
        capabilities=("restart", "set_setpoint"),
    )


def health() -> Health:
    return Health(
        **header(12),  # type: ignore[arg-type]
        modem={"rssi_dbm": -71, "ber": None, "operator": "Sim"},
        agent={"outbox_depth": 2, "polls": 30, "flash_bytes_today": 40960, "uptime_s": 60.5},
    )


def ack(state: AckState = AckState.REJECTED) -> Ack:
    reason = RejectReason.EXPIRED if state is AckState.REJECTED else None
    return Ack(
        **header(13),  # type: ignore[arg-type]
        command_id=str(uuid.UUID(int=7)),
        state=state,
        reason=reason,
    )


def sealed_line(message: UplinkMessage) -> str:
    """What tail prints for `message` after a real seal/verify round trip."""
    envelope = seal(message, KEY)
    return describe(topic(DEV, message.topic_kind), envelope, KEY.public_key(), TS)


def test_data_line_counts_readings_and_shows_latest_values() -> None:
    line = sealed_line(batch())
    assert line.startswith(clock_text(TS))
    assert " data " in line and "seq 10" in line and "epoch 3" in line
    assert "4 readings:" in line
    assert "flow_temp=61 " in line  # the latest of the two flow readings
    assert "ch_pressure=1.52" in line
    assert "status=" in line and "status=1" not in line  # shown by its label


def test_event_line_shows_kind_and_detail() -> None:
    line = sealed_line(event())
    assert " event " in line
    summary = line.split("epoch 3")[1].split()
    assert summary[0] == "lockout"  # detail keys come back in canonical CBOR order
    assert set(summary[1:]) == {"fault_code=28", "text=no", "flame"}


def test_birth_health_and_ack_summaries() -> None:
    assert summarize(birth()) == ("map bt-ref-1 (agent 0.1.0) capabilities: restart, set_setpoint")
    assert summarize(health()) == (
        "outbox_depth=2 polls=30 flash_bytes_today=40960 modem.rssi_dbm=-71 modem.operator=Sim"
    )
    command = str(uuid.UUID(int=7))
    assert summarize(ack()) == f"command {command} rejected (expired)"
    assert summarize(ack(AckState.SUCCEEDED)) == f"command {command} succeeded"
    assert " birth " in sealed_line(birth())
    assert " health " in sealed_line(health())
    assert " ack " in sealed_line(ack())


def test_unsynced_clock_is_flagged() -> None:
    message = Event(dev=DEV, epoch=1, seq=2, ts=TS, sync=False, kind=EventKind.AGENT_START)
    assert format_message(message).endswith("agent_start  (clock unsynced)")


def test_forged_and_misrouted_messages_are_rejected() -> None:
    forged = seal(batch(), generate_private_key())
    line = describe(topic(DEV, TopicKind.DATA), forged, KEY.public_key(), TS)
    assert "REJECTED BadSignature" in line
    # A genuine batch published on the event topic does not pass either.
    wrong_kind = describe(topic(DEV, TopicKind.EVENT), seal(batch(), KEY), KEY.public_key(), TS)
    assert "REJECTED" in wrong_kind
    garbage = describe(topic(DEV, TopicKind.DATA), b"\x00junk", KEY.public_key(), TS)
    assert "REJECTED MalformedMessage" in garbage


def test_state_lines() -> None:
    assert describe(topic(DEV, TopicKind.STATE), b"online", KEY.public_key(), TS).endswith(
        "state   online"
    )
    assert "unexpected payload" in describe(
        topic(DEV, TopicKind.STATE), b"maybe", KEY.public_key(), TS
    )


def test_load_settings_checks_its_inputs(tmp_path: Path) -> None:
    pub = tmp_path / "device.key.pub"
    pub.write_bytes(public_key_to_pem(KEY.public_key()))
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = load_settings(
        host="h",
        port=1,
        device_id=DEV,
        public_key_file=pub,
        username=CLOUD_USER,
        password_file=secret,
    )
    assert settings.password == "s3cret"
    with pytest.raises(ConfigError, match="--device"):
        load_settings(
            host="h", port=1, device_id="Bad/id", public_key_file=pub, username="u",
            password_file=None,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="--public-key"):
        load_settings(
            host="h", port=1, device_id=DEV, public_key_file=secret, username="u",
            password_file=None,
        )  # fmt: skip


@pytest.mark.integration
async def test_tail_on_mosquitto_prints_verified_and_rejected(broker: Broker) -> None:
    lines: list[str] = []
    subscribed = asyncio.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if line.startswith("watching"):
            subscribed.set()

    settings = TailSettings(
        host=broker.host,
        port=broker.port,
        device_id=DEV,
        public_key=KEY.public_key(),
        username=CLOUD_USER,
        password=CLOUD_PASSWORD,
        count=3,
    )
    watch = asyncio.create_task(tail(settings, emit))
    await asyncio.wait_for(subscribed.wait(), 10)
    async with broker.client(DEV, identifier=DEV) as device:
        await device.publish(topic(DEV, TopicKind.DATA), seal(batch(), KEY), qos=1)
        forged = seal(event(), generate_private_key())
        await device.publish(topic(DEV, TopicKind.EVENT), forged, qos=1)
        await device.publish(topic(DEV, TopicKind.EVENT), seal(event(12), KEY), qos=1)
    assert await asyncio.wait_for(watch, 10) == 3
    assert lines[0] == (
        f"watching bt/v1/{DEV}/# on mqtt://{broker.host}:{broker.port} as cloud (verified)"
    )
    assert " data " in lines[1] and "4 readings" in lines[1]
    assert "REJECTED BadSignature" in lines[2]
    assert " event " in lines[3] and "seq 12" in lines[3]


@pytest.mark.integration
def test_tail_command_line_reports_a_broker_it_cannot_reach(tmp_path: Path) -> None:
    pub = tmp_path / "device.key.pub"
    pub.write_bytes(public_key_to_pem(KEY.public_key()))
    result = CliRunner().invoke(
        root_app,
        [
            "edge", "tail", "--host", "127.0.0.1", "--port", "1", "--username", "cloud",
            "--device", DEV, "--public-key", str(pub), "--count", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "error: mqtt://127.0.0.1:1" in result.output
