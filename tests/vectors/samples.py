"""The sample messages and fixed keys behind the golden vectors.

Changing anything here changes the golden bytes: rerun ``generate_messages.py`` on purpose and
review the diff of ``messages.json`` and ``cose.json``.
"""

from __future__ import annotations

from typing import Any

from protocols.cose import Algorithm, private_key_from_raw
from protocols.messages import (
    Ack,
    AckState,
    Birth,
    Command,
    CommandName,
    Event,
    EventKind,
    GapReason,
    Health,
    Message,
    Quality,
    Reading,
    RejectReason,
    TelemetryBatch,
    Watermark,
    gap_event,
)

DEVICE_ID = "boiler-0001"
CLOUD_KID = "cloud-cmd-2026"

# RFC 8032 section 7.1, TEST 1 and TEST 2 secret keys: deterministic Ed25519 signatures.
DEVICE_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
CLOUD_SECRET = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
DEVICE_KEY = private_key_from_raw(DEVICE_SECRET)
CLOUD_KEY = private_key_from_raw(CLOUD_SECRET)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
HEADER: dict[str, Any] = {"dev": DEVICE_ID, "epoch": 3, "ts": T0, "sync": True}
COMMAND_ID = "0b6f2c1e-5d3a-4c8e-9f10-2a7b3c4d5e6f"

SAMPLES: dict[str, Message] = {
    "data": TelemetryBatch(
        **HEADER,
        seq=42,
        readings=(
            Reading("flow_temp", T0 - 1000, 61.5),
            Reading("return_temp", T0 - 1000, 48.25),
            Reading("ch_pressure", T0 - 1000, 1.4, Quality.UNCERTAIN),
            Reading("status", T0, "running"),
            Reading("fault_code", T0, 0),
            Reading("outdoor_temp", T0, -7),
            Reading("flame", T0, True),
            Reading("fan_speed", T0, None, Quality.BAD),
            Reading("burner_starts", T0 + 5, 4_294_967_295),
        ),
    ),
    "data_empty": TelemetryBatch(**HEADER, seq=43, readings=()),
    "event_lockout": Event(
        **HEADER,
        seq=44,
        kind=EventKind.LOCKOUT,
        detail={"fault": "F28", "status": "lockout", "attempts": 3},
    ),
    "event_gap": gap_event(
        **HEADER, seq=45, ranges=((10, 19), (25, 25)), reason=GapReason.OUTBOX_FULL
    ),
    "birth": Birth(
        **{**HEADER, "sync": False},
        seq=40,
        agent_version="0.1.0",
        map_id="reference-v1",
        map_hash="3f" * 32,
        capabilities=("restart", "set_setpoint"),
    ),
    "health": Health(
        **HEADER,
        seq=46,
        modem={"rssi": -71, "operator": "ExampleNet", "registered": True},
        agent={"outbox_messages": 12, "outbox_bytes": 8192, "cpu_temp": 47.5},
    ),
    "ack_succeeded": Ack(
        **HEADER,
        seq=47,
        command_id=COMMAND_ID,
        state=AckState.SUCCEEDED,
        observed={"status": "running", "fault_code": 0},
    ),
    "ack_rejected": Ack(
        **HEADER,
        seq=48,
        command_id=COMMAND_ID,
        state=AckState.REJECTED,
        reason=RejectReason.NOT_IN_LOCKOUT,
        observed={"status": "standby"},
    ),
    "cmd_restart": Command(
        id=COMMAND_ID,
        dev=DEVICE_ID,
        name=CommandName.RESTART,
        iat=T0,
        exp=T0 + 300_000,
    ),
    "cmd_set_setpoint": Command(
        id="7c9e6679-7425-40de-944b-e07fc1f90ae7",
        dev=DEVICE_ID,
        name=CommandName.SET_SETPOINT,
        args={"point": "ch_setpoint", "value": 65.0},
        iat=T0,
        exp=T0 + 60_000,
    ),
    "cmd_configure": Command(
        id="3f2b8c1e-5d4a-4b6f-9e8d-1a2b3c4d5e6f",
        dev=DEVICE_ID,
        name=CommandName.CONFIGURE,
        args={"version": 3, "config": '{"report":{"poll_interval_s":30.0}}'},
        iat=T0,
        exp=T0 + 86_400_000,
    ),
    "cmd_update": Command(
        id="5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        dev=DEVICE_ID,
        name=CommandName.UPDATE,
        args={
            "version": "0.2.0",
            "url": "https://twin.example/api/v1/updates/artifacts/" + "ab" * 32,
            "sha256": "ab" * 32,
            "size": 183_412,
            "min_agent": "0.1.0",
            "rollout": 7,
        },
        iat=T0,
        exp=T0 + 86_400_000,
    ),
    "ack_rolled_back": Ack(
        **HEADER,
        seq=49,
        command_id="5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        state=AckState.FAILED,
        reason=RejectReason.ROLLED_BACK,
        observed={"agent_version": "0.1.0", "step": "trial"},
    ),
    "cmd_rotate_key": Command(
        id="6a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d",
        dev=DEVICE_ID,
        name=CommandName.ROTATE_KEY,
        iat=T0,
        exp=T0 + 86_400_000,
    ),
    "cmd_use_key": Command(
        id="7b2c3d4e-5f6a-4b7c-9d8e-9f0a1b2c3d4e",
        dev=DEVICE_ID,
        name=CommandName.USE_KEY,
        args={"key": "11" * 32},
        iat=T0,
        exp=T0 + 86_400_000,
    ),
    "cmd_pin_keys": Command(
        id="8c3d4e5f-6a7b-4c8d-8e9f-0a1b2c3d4e5f",
        dev=DEVICE_ID,
        name=CommandName.PIN_KEYS,
        args={"keys": '{"cloud-2027":"-----BEGIN PUBLIC KEY-----\\n..."}'},
        iat=T0,
        exp=T0 + 86_400_000,
    ),
    "stored_all": Watermark(dev=DEVICE_ID, upto=42, iat=T0 + 90_000),
    "stored_missing": Watermark(
        dev=DEVICE_ID, upto=1_000, missing=((17, 17), (40, 59)), iat=T0 + 120_000
    ),
}

# Envelope vectors: (sample name, algorithm).  Uplink samples are signed by the device key
# under kid = device id; commands and watermarks by the cloud key under CLOUD_KID.
ENVELOPES: tuple[tuple[str, Algorithm], ...] = (
    *((name, Algorithm.ED25519) for name in SAMPLES),
    ("data", Algorithm.EDDSA),
    ("cmd_restart", Algorithm.EDDSA),
    ("stored_missing", Algorithm.EDDSA),
)
