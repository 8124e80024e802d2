"""``boilertwin sim fleet``: thousands of simulated gateways in one process, on a real broker.

Each gateway has its own Ed25519 key and broker login (made by `make_keys`, registered with
``cloud devices import``) and speaks the real contract: retained ``state`` with a last will,
``birth``, report-by-exception ``data`` sized like the agent's, alarm ``event``\\ s, periodic
``health``, signed ``ack``\\ s to the cloud's ``restart`` commands (a small boiler state
machine: only a boiler in lockout can be reset), and the cloud's ``stored`` watermarks: every
message stays in the gateway's outbox until a watermark covers it, and what the watermark
says is missing is sent again. Faults across the fleet: lockouts at a rate per boiler-day,
gateways that go offline for hours (their messages pile up in the outbox and follow on
reconnect) and, on request, everyone reconnecting at once. Time runs `time_scale` times
faster than the wall clock; the summary says what was sent, confirmed and still pending.

This is the tool to size a cluster with: run it against the broker and ingest workers under
test, and read the cloud's lag and batch metrics (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hw_sim.degradation import Mode
from hw_sim.fleet_lifecycle import LIFECYCLE, Lifecycle, LifecycleFigures, Outage
from hw_sim.fleet_wear import Wear, draw
from protocols.cose import (
    generate_private_key,
    open_command,
    open_watermark,
    private_key_from_raw,
    private_key_to_raw,
    public_key_from_pem,
    public_key_to_raw,
    seal,
)
from protocols.errors import ProtocolError
from protocols.messages import (
    Ack,
    AckState,
    Birth,
    Command,
    CommandName,
    Event,
    EventKind,
    Health,
    Quality,
    Reading,
    RejectReason,
    Scalar,
    TelemetryBatch,
    UplinkMessage,
)
from protocols.reference import BoilerStatus, FaultCode
from protocols.topics import STATE_OFFLINE, STATE_ONLINE, TopicKind, topic

AGENT_VERSION = "0.1.0"
"""What the simulated gateways run at first (updates move them on, `hw_sim.fleet_lifecycle`)."""
REPORT_S = 60.0
"""Simulated seconds between telemetry batches (the agent's default report interval)."""
HEALTH_S = 900.0


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """What `run_fleet` simulates."""

    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    time_scale: float = 60.0
    """Simulated seconds per wall-clock second."""
    duration_s: float = 3600.0
    """Simulated seconds to run."""
    lockouts_per_day: float = 0.5
    """Chance per boiler per simulated day of an F28 lockout (stays until reset)."""
    offline_share: float = 0.0
    """Share of gateways that lose their link once, for `offline_s` simulated seconds."""
    offline_s: float = 3 * 3600.0
    storm_at_s: float | None = None
    """Simulated time at which every gateway drops its connection and reconnects at once."""
    seed: int = 1
    resend_after_s: float = 120.0
    """Wall-clock seconds after which a message the watermarks do not cover yet is sent again
    (the agent's ``outbox.resend_after_s``)."""
    drain_s: float = 0.0
    """Wall-clock seconds to stay connected after the run (no new readings) while the cloud's
    watermarks confirm what the outboxes still hold; the run ends early once all are empty."""
    degrade_share: float = 0.0
    """Share of boilers that wear out during the run (`hw_sim.fleet_wear`)."""
    degrade_mode: Mode | None = None
    """The one degradation they get; None: each draws one of `fleet_wear.FLEET_MODES`."""
    fail_version: str | None = None
    """An agent release that never gets healthy on `fail_share` of the gateways: they roll
    back by themselves `trial_s` wall-clock seconds after switching to it."""
    fail_share: float = 0.0
    trial_s: float = 2.0
    cut_download_share: float = 0.0
    """Share of gateways whose first download of each release breaks off (a dead cell): they
    fail it ``download_failed`` and the rollout's next try gets through."""


@dataclass(frozen=True, slots=True)
class Identity:
    device_id: str
    key: Ed25519PrivateKey
    password: str


def make_keys(count: int, out: Path, prefix: str = "sim") -> tuple[Path, Path]:
    """`count` new gateway keys: ``keys.csv`` (id, private key hex: keep it secret) and
    ``devices.csv`` (id, public key: for ``cloud devices import``)."""
    out.mkdir(parents=True, exist_ok=True)
    keys, devices = out / "keys.csv", out / "devices.csv"
    keys.touch(mode=0o600)
    rows = []
    for i in range(count):
        key = generate_private_key()
        rows.append((f"{prefix}-{i:06d}", key))
    keys.write_text(
        "id,private_key\n" + "".join(f"{d},{private_key_to_raw(k).hex()}\n" for d, k in rows)
    )
    devices.write_text(
        "id,public_key,model\n"
        + "".join(f"{d},{public_key_to_raw(k.public_key()).hex()},Sim 100\n" for d, k in rows)
    )
    return keys, devices


def load_identities(keys: Path, passwords: Path) -> list[Identity]:
    """Gateways from `make_keys`' key file and ``cloud devices import``'s password file."""
    with passwords.open() as f:
        secret = {row["id"]: row["password"] for row in csv.DictReader(f)}
    with keys.open() as f:
        return [
            Identity(
                row["id"],
                private_key_from_raw(bytes.fromhex(row["private_key"])),
                secret[row["id"]],
            )
            for row in csv.DictReader(f)
            if row["id"] in secret
        ]


def load_cloud_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """The cloud's command keys to pin: every ``<kid>.pem`` in `folder`."""
    keys = {path.stem: public_key_from_pem(path.read_bytes()) for path in folder.glob("*.pem")}
    if not keys:
        raise ValueError(f"no <kid>.pem cloud keys in {folder}")
    return keys


@dataclass
class Summary:
    """What the fleet did, counted across every gateway."""

    sent: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    confirmed: int = 0
    pending: int = 0
    watermarks: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    lockouts: int = 0
    degraded: Counter[str] = field(default_factory=Counter)
    """Boilers given each degradation."""
    worn_out: Counter[str] = field(default_factory=Counter)
    """Faults the degradations ended in, by fault (F22, F28, ...)."""
    offline: int = 0
    connects: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    last_seq: dict[str, int] = field(default_factory=dict)
    """Each gateway's last seq: the cloud should hold every one from 1 up to it."""
    unconfirmed: dict[str, list[int]] = field(default_factory=dict)
    """At the end: the seqs each gateway still holds because no watermark covered them."""
    lifecycle: LifecycleFigures = field(default_factory=LifecycleFigures)
    versions: Counter[str] = field(default_factory=Counter)
    """At the end: gateways per agent version they run."""

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.sent.items()))
        return [
            f"sent: {sum(self.sent.values()):,} ({kinds}); resent on watermarks: {self.resent:,}",
            f"confirmed by the cloud's watermarks: {self.confirmed:,}; still in outboxes: "
            f"{self.pending:,} (watermarks received: {self.watermarks:,})",
            f"lockouts: {self.lockouts:,}; commands: {dict(self.commands) or 'none'}",
            f"degrading: {dict(self.degraded) or 'none'}; "
            f"worn out: {dict(self.worn_out) or 'none'}",
            f"connections: {self.connects:,}; gateways taken offline: {self.offline:,}",
            f"refused downlinks: {dict(self.refused) or 'none'}",
            *self.lifecycle.lines(),
            f"agent versions at the end: {dict(self.versions) or 'none'}",
            *(
                f"unconfirmed: {device} seqs {_ranges(seqs)}"
                for device, seqs in sorted(self.unconfirmed.items())[:10]
            ),
        ]


def _ranges(seqs: list[int]) -> str:
    """`1-3, 7` for [1, 2, 3, 7]."""
    out: list[str] = []
    for seq in seqs:
        if out and seq == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{seq}"
        else:
            out.append(str(seq))
    return ", ".join(out)


class Gateway:
    """One simulated gateway and its boiler."""

    def __init__(
        self,
        identity: Identity,
        cloud_keys: dict[str, Ed25519PublicKey],
        settings: FleetSettings,
        summary: Summary,
        rng: random.Random,
    ) -> None:
        self.id = identity.device_id
        self.identity = identity
        self.cloud_keys = cloud_keys
        self.settings = settings
        self.summary = summary
        self.rng = rng
        self.epoch = int(time.time())
        self.seq = 0
        self.outbox: dict[int, tuple[str, bytes]] = {}
        self.sent_at: dict[int, float] = {}
        self.status = BoilerStatus.STANDBY
        self.client: aiomqtt.Client | None = None
        self.reconnect = asyncio.Event()
        self.offline_until = 0.0
        self.outage: Outage | None = None
        self.fault = FaultCode.NONE
        self.wear: Wear | None = None
        if rng.random() < settings.degrade_share:
            self.wear = Wear(draw(rng, settings.duration_s, settings.degrade_mode), rng)
            summary.degraded[self.wear.degradation.mode.value] += 1
        self.lifecycle = Lifecycle.draw(
            AGENT_VERSION,
            rng,
            settings.fail_version,
            settings.fail_share,
            settings.trial_s,
            settings.cut_download_share,
        )
        self.tasks: set[asyncio.Task[None]] = set()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def enqueue(self, message_kind: type[UplinkMessage], **fields: Any) -> None:
        self.seq += 1
        header: dict[str, Any] = {
            "dev": self.id,
            "epoch": self.epoch,
            "seq": self.seq,
            "ts": self.now_ms(),
            "sync": True,
        }
        message = message_kind(**header, **fields)
        self.outbox[self.seq] = (
            topic(self.id, message.topic_kind),
            seal(message, self.identity.key),
        )
        self.summary.sent[message.topic_kind.value] += 1

    async def publish(self, seqs: list[int]) -> None:
        client = self.client
        if client is None:
            return
        for seq in seqs:
            entry = self.outbox.get(seq)
            if entry is not None:
                self.sent_at[seq] = time.monotonic()
                await client.publish(entry[0], entry[1], qos=1)

    # -- the boiler --------------------------------------------------------------------------

    def report(self, t: float) -> None:
        """One telemetry batch: the points that changed (flow/return always do)."""
        ts = self.now_ms()
        running = self.status in (BoilerStatus.RUNNING, BoilerStatus.CH_DEMAND)
        flow = 65.0 + self.rng.uniform(-2, 2) if running else 35.0 + self.rng.uniform(-1, 1)
        values: dict[str, float] = {
            "flow_temp": round(flow, 1),
            "return_temp": round(flow - 15 + self.rng.uniform(-1, 1), 1),
            "ch_pressure": round(1.4 + self.rng.uniform(-0.02, 0.02), 2),
        }
        if self.wear is not None and self.fault is FaultCode.NONE:
            values |= self.wear.readings(t, running, flow)
        readings = [Reading(point, ts, value, Quality.GOOD) for point, value in values.items()]
        if self.status not in (BoilerStatus.LOCKOUT, BoilerStatus.BLOCKING_ERROR):
            previous = self.status
            self.status = BoilerStatus.RUNNING if self.rng.random() < 0.5 else BoilerStatus.STANDBY
            if self.status != previous:
                readings.append(Reading("status", ts, int(self.status), Quality.GOOD))
        self.enqueue(TelemetryBatch, readings=tuple(readings))
        if self.fault is not FaultCode.NONE:
            return
        if self.wear is not None and self.wear.due(t):
            self.summary.worn_out[self.wear.fault.name] += 1
            self.break_down(self.wear.fault, ts)
        elif self.rng.random() < self.settings.lockouts_per_day * REPORT_S / 86400:
            self.summary.lockouts += 1
            self.break_down(FaultCode.F28, ts)

    def break_down(self, fault: FaultCode, ts: int) -> None:
        """The boiler shows `fault`: a lockout until reset, or a blocking error."""
        self.fault = fault
        self.status = BoilerStatus.LOCKOUT if fault.is_lockout else BoilerStatus.BLOCKING_ERROR
        detail = {"status": int(self.status), "fault_code": int(fault), "fault": fault.name}
        self.enqueue(Event, kind=EventKind.FAULT, detail={**detail, "previous": 0})
        if fault.is_lockout:
            self.enqueue(Event, kind=EventKind.LOCKOUT, detail=detail)
        self.enqueue(
            TelemetryBatch,
            readings=(
                Reading("status", ts, int(self.status), Quality.GOOD),
                Reading("fault_code", ts, int(fault), Quality.GOOD),
            ),
        )

    def command(self, payload: bytes) -> None:
        try:
            command = open_command(payload, self.id, self.cloud_keys.get, self.now_ms(), True)
        except ProtocolError as exc:
            self.summary.refused[type(exc).__name__] += 1
            return
        self.enqueue(Ack, command_id=command.id, state=AckState.DELIVERED)
        if command.name in LIFECYCLE:
            task = asyncio.get_running_loop().create_task(self.lifecycle_command(command))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        if command.name is not CommandName.RESTART:
            self.summary.commands["unsupported"] += 1
            self.enqueue(
                Ack,
                command_id=command.id,
                state=AckState.REJECTED,
                reason=RejectReason.UNSUPPORTED_COMMAND,
            )
            return
        if self.status != BoilerStatus.LOCKOUT:
            self.summary.commands["not_in_lockout"] += 1
            self.enqueue(
                Ack,
                command_id=command.id,
                state=AckState.REJECTED,
                reason=RejectReason.NOT_IN_LOCKOUT,
            )
            return
        self.enqueue(Ack, command_id=command.id, state=AckState.EXECUTING)
        self.status, previous, self.fault = BoilerStatus.STANDBY, self.fault, FaultCode.NONE
        self.enqueue(
            Event,
            kind=EventKind.FAULT_CLEARED,
            detail={"status": 0, "fault_code": 0, "previous": int(previous)},
        )
        self.enqueue(
            Event,
            kind=EventKind.STATE_CHANGE,
            detail={"status": 0, "fault_code": 0, "previous": 7, "change": "lockout_cleared"},
        )
        self.enqueue(
            Ack,
            command_id=command.id,
            state=AckState.SUCCEEDED,
            observed={"status": 0, "fault_code": 0},
        )
        self.summary.commands["succeeded"] += 1

    async def lifecycle_command(self, command: Command) -> None:
        """A configure, update or rollback, answered as the agent would (`Lifecycle`)."""

        def ack(
            command_id: str,
            state: AckState,
            reason: RejectReason | None = None,
            observed: dict[str, Scalar] | None = None,
        ) -> None:
            self.enqueue(
                Ack, command_id=command_id, state=state, reason=reason, observed=observed or {}
            )

        def rebirth() -> None:
            self.enqueue(Birth, **self.birth_fields())

        before = self.seq
        await self.lifecycle.handle(command, ack, rebirth, self.summary.lifecycle)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.publish(list(range(before + 1, self.seq + 1)))

    def birth_fields(self) -> dict[str, Any]:
        return {
            "agent_version": self.lifecycle.version,
            "map_id": "reference-v1",
            "map_hash": "sim",
            "capabilities": ("restart", *(c.value for c in sorted(LIFECYCLE))),
        }

    def watermark(self, payload: bytes) -> list[int]:
        """Drop what the watermark covers; returns the missing seqs still held (to resend)."""
        try:
            mark = open_watermark(payload, self.id, self.cloud_keys.get)
        except ProtocolError as exc:
            self.summary.refused[type(exc).__name__] += 1
            return []
        self.summary.watermarks += 1
        missing = {s for first, last in mark.missing for s in range(first, last + 1)}
        covered = [s for s in self.outbox if s <= mark.upto and s not in missing]
        for seq in covered:
            del self.outbox[seq]
            self.sent_at.pop(seq, None)
        self.summary.confirmed += len(covered)
        # as the agent: what the cloud still lacks well after it was sent goes again (a broker
        # can drop what it acknowledged: a queue overflow, shared subscriptions lost on restart)
        late = time.monotonic() - self.settings.resend_after_s
        unconfirmed = {s for s in self.outbox if s > mark.upto and self.sent_at.get(s, late) < late}
        return sorted((missing & self.outbox.keys()) | unconfirmed)

    # -- the link ----------------------------------------------------------------------------

    async def run(self, started: float, stop: asyncio.Event, quiet: asyncio.Event) -> None:
        """Connect, publish, handle downlinks; reconnect after drops, until `stop`. The boiler
        runs until `quiet`; after that the gateway only drains its outbox."""
        ticker = asyncio.create_task(self.tick(started, quiet))
        resender = asyncio.create_task(self.resend_late(quiet, stop))
        try:
            while not stop.is_set():
                wait = self.offline_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.outage is not None:
                    await self.outage.held(self.id, stop)
                try:
                    await self.session(stop)
                except aiomqtt.MqttError:
                    await asyncio.sleep(self.rng.uniform(0.5, 2.0))
                await asyncio.sleep(0)
        finally:
            ticker.cancel()
            resender.cancel()

    async def session(self, stop: asyncio.Event) -> None:
        will = aiomqtt.Will(topic(self.id, TopicKind.STATE), STATE_OFFLINE, qos=1, retain=True)
        async with aiomqtt.Client(
            self.settings.broker_host,
            self.settings.broker_port,
            username=self.id,
            password=self.identity.password,
            identifier=self.id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=60,
            timeout=30,
        ) as client:
            self.summary.connects += 1
            await client.subscribe(
                [(topic(self.id, TopicKind.CMD), 1), (topic(self.id, TopicKind.STORED), 1)]
            )
            await client.publish(topic(self.id, TopicKind.STATE), STATE_ONLINE, qos=1, retain=True)
            self.enqueue(Birth, **self.birth_fields())
            self.client = client
            self.reconnect.clear()
            await self.publish(sorted(self.outbox))  # the backlog, oldest first
            listener = asyncio.create_task(self.listen(client))
            try:
                done = asyncio.create_task(stop.wait())
                drop = asyncio.create_task(self.reconnect.wait())
                await asyncio.wait({done, drop, listener}, return_when=asyncio.FIRST_COMPLETED)
                for task in (done, drop):
                    task.cancel()
            finally:
                self.client = None
                listener.cancel()
                if self.reconnect.is_set() and not stop.is_set():  # the link drops: the will
                    await client.publish(
                        topic(self.id, TopicKind.STATE), STATE_OFFLINE, qos=1, retain=True
                    )

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = (
                bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
            )
            if str(message.topic).endswith("/cmd"):
                before = self.seq
                self.command(payload)
                await self.publish(list(range(before + 1, self.seq + 1)))
            else:
                again = self.watermark(payload)
                self.summary.resent += len(again)
                await self.publish(again)

    async def resend_late(self, quiet: asyncio.Event, stop: asyncio.Event) -> None:
        """Once the fleet is quiet (draining): a message still unconfirmed `resend_after_s`
        after it was sent goes again. While readings flow, as on the agent, resends follow
        the watermarks that the new readings bring (so a cloud outage is not amplified)."""
        await quiet.wait()
        every = max(0.1, self.settings.resend_after_s / 2)
        while not stop.is_set():
            await asyncio.sleep(every)
            late = time.monotonic() - self.settings.resend_after_s
            again = sorted(s for s in self.outbox if self.sent_at.get(s, late) < late)
            if again and self.client is not None:
                self.summary.resent += len(again)
                with contextlib.suppress(aiomqtt.MqttError):
                    await self.publish(again)

    async def tick(self, started: float, stop: asyncio.Event) -> None:
        """Simulated time: a report every `REPORT_S`, health every `HEALTH_S`, faults."""
        scale = self.settings.time_scale
        await asyncio.sleep(self.rng.uniform(0, REPORT_S / scale))  # spread the fleet
        t, health_at = 0.0, self.rng.uniform(0, HEALTH_S)
        went_offline = self.rng.random() >= self.settings.offline_share
        storm = self.settings.storm_at_s
        while not stop.is_set():
            t = (time.monotonic() - started) * scale
            before = self.seq
            self.report(t)
            if t >= health_at:
                self.enqueue(
                    Health,
                    modem={"csq": self.rng.randint(8, 25)},
                    agent={
                        "outbox_depth": len(self.outbox),
                        "config_version": self.lifecycle.config_version,
                    },
                )
                health_at = t + HEALTH_S
            if not went_offline and t > self.rng.uniform(0, self.settings.duration_s / 2):
                went_offline = True
                self.summary.offline += 1
                self.offline_until = time.monotonic() + self.settings.offline_s / scale
                self.reconnect.set()
            if storm is not None and t >= storm:
                storm = None
                self.reconnect.set()
            if self.client is not None:
                # the link may break: the outbox keeps them, all sent again on reconnect
                with contextlib.suppress(aiomqtt.MqttError):
                    await self.publish(list(range(before + 1, self.seq + 1)))
            await asyncio.sleep(REPORT_S / scale)


async def run_fleet(
    identities: list[Identity],
    cloud_keys: dict[str, Ed25519PublicKey],
    settings: FleetSettings,
    until: asyncio.Event | None = None,
    outage: Outage | None = None,
) -> Summary:
    """Run the fleet for `settings.duration_s` simulated seconds (or until `until` is set),
    then say what it did. `outage` takes chosen gateways off the air on demand."""
    summary = Summary()
    rng = random.Random(settings.seed)
    stop = asyncio.Event()
    gateways = [
        Gateway(i, cloud_keys, settings, summary, random.Random(rng.random())) for i in identities
    ]
    if outage is not None:
        outage.links = {g.id: g.reconnect for g in gateways}
        for g in gateways:
            g.outage = outage
    quiet = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(g.run(started, stop, quiet)) for g in gateways]
    if until is None:
        await asyncio.sleep(settings.duration_s / settings.time_scale)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), settings.duration_s / settings.time_scale)
    quiet.set()
    deadline = time.monotonic() + settings.drain_s
    while time.monotonic() < deadline and any(g.outbox for g in gateways):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    summary.pending = sum(len(g.outbox) for g in gateways)
    summary.unconfirmed = {g.id: sorted(g.outbox) for g in gateways if g.outbox}
    summary.last_seq = {g.id: g.seq for g in gateways}
    summary.versions = Counter(g.lifecycle.version for g in gateways)
    return summary
