"""What the edge-agent integration tests share: a configured agent, and a cloud-side listener.

`Gateway` writes a real key pair, a pinned cloud key and an ``edge.toml`` for a simulator on a
pty and a test broker, and runs the agent in the test's loop (`start`) or as a separate
``boilertwin edge run`` process (`spawn`, so it can be SIGKILLed).

`CloudListener` is the cloud's view: a persistent MQTT session as the `cloud` user that
verifies every COSE envelope with the device's registered key (`open_uplink`) and keeps what
arrived, duplicates included.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.agent import Agent, RunOptions
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import EdgeSettings, settings_from_dict
from edge_agent.keys import keygen, load_device_key
from protocols.cose import generate_private_key, open_uplink, public_key_to_pem, seal
from protocols.messages import Ack, AckState, Command, CommandName, Event, EventKind, UplinkMessage
from protocols.topics import TopicKind, parse_topic, topic
from tests.broker import Broker, device_password

CLOUD_KID = "cloud-2026"
STOP_TIMEOUT_S = 20.0


def task_stacks() -> str:
    """Where every task of the running loop is waiting (for a test that would hang)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=out)
        task.print_stack(file=out)
    return out.getvalue()


class Gateway:
    """One edge agent's files and process, for one simulated boiler and one broker."""

    def __init__(
        self,
        directory: Path,
        broker: Broker,
        pty: str,
        *,
        device_id: str = "boiler-0001",
        **overrides: Any,
    ) -> None:
        self.directory = directory
        self.device_id = device_id
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "device.key"
        if not key_file.exists():
            keygen(key_file)
        self.key = load_device_key(key_file)
        self.cloud_key: Ed25519PrivateKey = generate_private_key()
        keys_dir = directory / "cloud-keys"
        keys_dir.mkdir(exist_ok=True)
        (keys_dir / f"{CLOUD_KID}.pem").write_bytes(public_key_to_pem(self.cloud_key.public_key()))
        password_file = directory / "mqtt.password"
        password_file.write_text(device_password(device_id))
        self.config: dict[str, Any] = {
            "device": {"id": device_id, "key_file": str(key_file), "state_dir": "state"},
            "modbus": {"transport": "rtu", "port": pty, "parity": "N", "timeout_s": 0.3},
            "report": {"poll_interval_s": 0.2, "batch_interval_s": 0.6, "heartbeat_s": 3600},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "tls": False,
                "password_file": str(password_file),
                "keepalive_s": 10,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "connect_timeout_s": 5,
            },
            "commands": {"cloud_keys_dir": str(keys_dir), "readback_s": 5},
            "clock": {"trust": "system"},
            "health": {"interval_s": 2},
        }
        for section, values in overrides.items():
            self.config.setdefault(section, {}).update(values)
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None
        self.process: asyncio.subprocess.Process | None = None

    @property
    def settings(self) -> EdgeSettings:
        """The settings the agent runs with (paths relative to `directory`)."""
        return settings_from_dict(self.config, base=self.directory)

    @property
    def outbox_path(self) -> Path:
        """The agent's SQLite database."""
        return self.settings.outbox_path

    # -- in the test's loop -----------------------------------------------------------------

    async def start(self, clock: Clock | None = None, **options: Any) -> Agent:
        """Run the agent in this event loop; returns once it has started."""
        options.setdefault("first_health_s", 1.0)
        self.agent = Agent(
            self.settings, clock=clock or SystemClock("system"), options=RunOptions(**options)
        )
        self.task = asyncio.create_task(self.agent.run(), name="agent")
        started = asyncio.create_task(self.agent.started.wait())
        done, _ = await asyncio.wait(
            {self.task, started}, timeout=10, return_when="FIRST_COMPLETED"
        )
        if self.task in done:
            self.task.result()
        assert started in done, "agent did not start"
        return self.agent

    async def stop(self) -> None:
        """Graceful stop (what SIGTERM does), and wait for it."""
        if self.agent is not None and self.task is not None:
            self.agent.stop()
            done, _ = await asyncio.wait({self.task}, timeout=STOP_TIMEOUT_S)
            if not done:
                raise AssertionError(f"agent did not stop:\n{task_stacks()}")
            self.task.result()
            self.agent, self.task = None, None

    async def cancel(self) -> None:
        """Abrupt cancellation (test clean-up); fails, showing every task, if it hangs."""
        if self.task is not None:
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=STOP_TIMEOUT_S)
            if not done:
                raise AssertionError(f"agent ignored cancellation:\n{task_stacks()}")
            with contextlib.suppress(asyncio.CancelledError):
                self.task.result()
            self.agent, self.task = None, None

    # -- as its own process -------------------------------------------------------------------

    async def spawn(
        self, *, importtime: bool = False, prefix: Sequence[str] = ()
    ) -> asyncio.subprocess.Process:
        """Run ``boilertwin edge run`` on a written edge.toml; with `importtime`, Python logs
        every module the process imports (``-X importtime``) to the agent's log; `prefix`
        runs it under another command (``ip netns exec NAME``)."""
        config = self.directory / "edge.toml"
        config.write_text(toml_text(self.config))
        self.process = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            *(("-X", "importtime") if importtime else ()),
            "-c",
            "import boilertwin; boilertwin.main()",
            "edge",
            "run",
            "--config",
            str(config),
            stdout=open(self.directory / "agent.log", "ab"),  # noqa: SIM115
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.directory,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        return self.process

    async def signal(self, signum: signal.Signals) -> int:
        """Send `signum` to the spawned agent and wait for it to exit."""
        assert self.process is not None
        self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), 20)
        self.process = None
        return code

    def log_text(self) -> str:
        """The spawned agent's output."""
        path = self.directory / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the cloud's side of commands -----------------------------------------------------------

    def command(
        self,
        *,
        name: CommandName = CommandName.RESTART,
        dev: str | None = None,
        ttl_ms: int = 60_000,
        iat_ms: int | None = None,
        command_id: str | None = None,
    ) -> Command:
        """A command for this gateway (or `dev`), valid for `ttl_ms` from `iat_ms` (now)."""
        import time

        iat = iat_ms if iat_ms is not None else int(time.time() * 1000)
        return Command(
            id=command_id or str(uuid.uuid4()),
            dev=dev or self.device_id,
            name=name,
            args={},
            iat=iat,
            exp=iat + ttl_ms,
        )

    def signed(
        self, command: Command, key: Ed25519PrivateKey | None = None, kid: str = CLOUD_KID
    ) -> bytes:
        """`command` as the cloud would send it (or signed by another `key`)."""
        return seal(command, key or self.cloud_key, kid=kid)


def toml_text(config: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """One verified message as it arrived at the cloud."""

    kind: TopicKind
    message: UplinkMessage
    envelope: bytes


class CloudListener:
    """The cloud's subscriber for one device: verifies and keeps everything that arrives."""

    def __init__(self, broker: Broker, gateway: Gateway) -> None:
        self.broker = broker
        self.gateway = gateway
        self.received: list[Received] = []
        self.states: list[bytes] = []
        self.rejected: list[str] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._client_id = f"cloud-test-{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> CloudListener:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._closing = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _listen(self, ready: asyncio.Event) -> None:
        keys = {self.gateway.device_id: self.gateway.key.public_key()}
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        while True:
            try:
                async with self.broker.client(
                    "cloud", identifier=self._client_id, clean_start=False, properties=properties
                ) as client:
                    await client.subscribe(f"bt/v1/{self.gateway.device_id}/#", qos=1)
                    ready.set()
                    async for message in client.messages:
                        self._take(str(message.topic), bytes(message.payload), keys)  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                if self._closing:
                    raise asyncio.CancelledError from None  # closing, not reconnecting
                await asyncio.sleep(0.1)

    def _take(self, topic_name: str, payload: bytes, keys: dict[str, Any]) -> None:
        _, kind = parse_topic(topic_name)
        if kind is TopicKind.STATE:
            self.states.append(payload)
        else:
            try:
                message = open_uplink(payload, topic_name, keys)
            except Exception as exc:
                self.rejected.append(f"{topic_name}: {exc!r}")
            else:
                self.received.append(Received(kind, message, payload))
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[CloudListener], bool], timeout: float = 15
    ) -> None:
        """Until `predicate(self)` holds; fails the test after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    # -- views --------------------------------------------------------------------------------

    def seqs(self) -> list[int]:
        """Seqs in arrival order (duplicates included)."""
        return [r.message.seq for r in self.received]

    def unique(self) -> dict[int, Received]:
        """De-duplicated by seq, as the cloud stores them; duplicates must be identical."""
        by_seq: dict[int, Received] = {}
        for r in self.received:
            if r.message.seq in by_seq:
                assert by_seq[r.message.seq].envelope == r.envelope, f"seq {r.message.seq} reused"
            else:
                by_seq[r.message.seq] = r
        return by_seq

    def events(self, kind: EventKind | None = None) -> list[Event]:
        """Events, optionally of one kind, in arrival order."""
        return [
            r.message
            for r in self.received
            if isinstance(r.message, Event) and (kind is None or r.message.kind is kind)
        ]

    def acks(self, command_id: str) -> list[Ack]:
        """Acks for one command, in arrival order."""
        return [
            r.message
            for r in self.received
            if isinstance(r.message, Ack) and r.message.command_id == command_id
        ]

    def ack_states(self, command_id: str) -> list[AckState]:
        """The states acked for one command, in arrival order."""
        return [a.state for a in self.acks(command_id)]


async def publish_command(broker: Broker, device_id: str, envelope: bytes) -> None:
    """Publish on a device's ``cmd`` topic as the cloud."""
    async with broker.client("cloud", identifier=f"cloud-cmd-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(topic(device_id, TopicKind.CMD), envelope, qos=1)


@contextlib.asynccontextmanager
async def listening(broker: Broker, gateway: Gateway) -> AsyncIterator[CloudListener]:
    """A `CloudListener` for the gateway's device."""
    async with CloudListener(broker, gateway) as listener:
        yield listener
