"""One agent process: everything built from one `EdgeSettings`, run in one `TaskGroup`.

Loops (named tasks): ``poll`` (controller -> telemetry -> outbox), ``uplink`` (outbox ->
broker, broker -> command queue), ``commands`` (one command at a time), ``health`` and
``watchdog``. `Agent.stop` (SIGTERM) ends them in order: polling stops, the readings still
in memory are committed, the uplink gets `drain_s` to empty the outbox and then says
``offline``, and the database is closed cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent import __version__
from edge_agent.clock import Clock, ScaledClock, SystemClock, wall_ms
from edge_agent.commands import CommandExecutor, CommandLedger
from edge_agent.config import EdgeSettings, register_map
from edge_agent.delivery import Confirmations
from edge_agent.errors import OutboxError
from edge_agent.key_rotation import KeyPinner, KeyRotator
from edge_agent.keys import load_cloud_keys, load_device_key, read_secret
from edge_agent.modbus_link import ModbusLink, SerialTarget, TcpTarget
from edge_agent.modem import ModemProbe
from edge_agent.outbox import Outbox
from edge_agent.poller import Poll, Poller
from edge_agent.remote_config import Configurator
from edge_agent.reporter import Sample, default_deadband
from edge_agent.store import Store
from edge_agent.telemetry import Telemetry, TelemetrySettings
from edge_agent.updater import EXIT_RESTART, Updater, settle
from edge_agent.uplink import Uplink
from edge_agent.watchdog import Progress, feed_watchdog, notify, watchdog_interval_s
from protocols.cose import seal
from protocols.messages import (
    Birth,
    Command,
    CommandName,
    Event,
    EventKind,
    Health,
    Quality,
    Scalar,
    UplinkMessage,
)

log = logging.getLogger(__name__)

COMMAND_QUEUE = 16
STOP_WAIT_S = 5.0
MODEM_READ_S = 60.0
RELOAD_HEALTH_S = 1.0
"""After a new configuration, the first health report (with ``config_version``) comes this
soon, so the twin shows the version in force without waiting a whole interval."""
"""How long a loop may take to finish once cancelled at shutdown."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the process around the agent wants it run (not configuration)."""

    drain_s: float = 5.0
    """At shutdown, how long the uplink may keep emptying the outbox."""
    first_health_s: float = 30.0
    """Delay before the first health report (then every ``health.interval_s``)."""


class Agent:
    """The edge agent for one boiler."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        clock: Clock | None = None,
        options: RunOptions = RunOptions(),
    ) -> None:
        self.settings = settings
        self.device_id = settings.device.id
        self.clock: Clock = clock or SystemClock(settings.clock.trust)
        self.options = options
        self.register_map = register_map(settings.modbus)
        self._key = load_device_key(settings.device.key_file)
        self._cloud_keys = load_cloud_keys(settings.commands.cloud_keys_dir)
        self._password = read_secret(settings.mqtt.password_file, "mqtt.password_file")
        self._stop = asyncio.Event()
        self.reload_requested = False
        self.exit_code = 0
        self.started = asyncio.Event()
        self._started_mono = self.clock.monotonic()
        # built by run():
        self.store: Store
        self.outbox: Outbox
        self.link: ModbusLink
        self.poller: Poller
        self.telemetry: Telemetry
        self.executor: CommandExecutor
        self.uplink: Uplink
        self.progress: Progress
        self.modem: ModemProbe | None = None
        self.store_errors = 0

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from a signal handler)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Stop gracefully so that `run_agent` starts again on the settings now kept (a new
        remote configuration): readings in memory are committed first, nothing is lost."""
        self.reload_requested = True
        self._stop.set()

    def _use_key(self, key: Ed25519PrivateKey) -> None:
        """Seal every message from now on with `key` (after ``use_key``)."""
        self._key = key

    def request_restart(self) -> None:
        """Stop gracefully and exit with `EXIT_RESTART` (systemd starts the release the
        ``current`` link now points at)."""
        self.exit_code = EXIT_RESTART
        self._stop.set()

    def _healthy(self) -> bool:
        """Polled the boiler and published to the broker (an update's trial)."""
        return self.poller.figures.last_ok_ms > 0 and self.uplink.figures.published > 0

    async def _settle_update(self) -> None:
        said = await settle(
            self.settings,
            lambda *ack: self.executor.report(*ack),
            self._healthy,
            self.request_restart,
            lambda: wall_ms(self.clock),
        )
        log.info("%s: %s", self.device_id, said)

    def _command_done(self, command: Command) -> None:
        if command.name is CommandName.CONFIGURE:
            self.request_reload()

    def _build(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        now_ms: Callable[[], int] = lambda: wall_ms(self.clock)  # noqa: E731
        self.store = Store(
            s.outbox_path,
            wall_ms=now_ms,
            checkpoint_bytes=s.outbox.checkpoint_bytes,
            device_id=self.device_id,
        )
        stack.callback(self.store.close)
        self.outbox = Outbox.open(
            self.store,
            device_id=self.device_id,
            seal=lambda message: seal(message, self._key),
            max_bytes=s.outbox.max_bytes,
            wall_ms=now_ms,
            clock_trusted=self.clock.trusted,
        )
        m = s.modbus
        target = (
            SerialTarget(m.port, m.baudrate, m.parity, m.stopbits)
            if m.transport == "rtu"
            else TcpTarget(m.host, m.tcp_port)
        )
        self.link = ModbusLink(
            target, unit=m.unit, timeout_s=m.timeout_s, retries=m.retries, device_id=self.device_id
        )
        stack.push_async_callback(self.link.aclose)
        self.poller = Poller(
            self.link, self.register_map, clock=self.clock, device_id=self.device_id
        )
        deadbands = {p.name: default_deadband(p) for p in self.register_map.readable()}
        deadbands.update(s.report.deadband)
        self.telemetry = Telemetry(
            TelemetrySettings(
                batch_interval_ms=int(s.report.batch_interval_s * 1000),
                heartbeat_ms=int(s.report.heartbeat_s * 1000),
                deadbands=deadbands,
                comms_lost_after=s.report.comms_lost_after,
            ),
            device_id=self.device_id,
        )
        rotator = KeyRotator(s.device.key_file, self._use_key)
        self.executor = CommandExecutor(
            device_id=self.device_id,
            cloud_keys=self._cloud_keys,
            bus=self.link,
            register_map=self.register_map,
            outbox=self.outbox,
            ledger=CommandLedger(self.store),
            clock=self.clock,
            settings=s.commands,
            on_observed=self._observed,
            handlers={
                CommandName.CONFIGURE: Configurator(s),
                **(
                    {CommandName.UPDATE: Updater(s, self.request_restart)}
                    if s.update.releases_dir
                    else {}
                ),
                CommandName.ROTATE_KEY: rotator.rotate,
                CommandName.USE_KEY: rotator.use,
                CommandName.PIN_KEYS: KeyPinner(s.commands.cloud_keys_dir, self._cloud_keys),
            },
            on_succeeded=self._command_done,
        )
        self.commands: asyncio.Queue[bytes] = asyncio.Queue(COMMAND_QUEUE)
        self.confirmations = Confirmations(
            device_id=self.device_id,
            cloud_keys=self._cloud_keys,
            outbox=self.outbox,
            resend_after_s=s.outbox.resend_after_s,
        )
        self.progress = Progress(self.clock, ("poll", "uplink"))
        self.uplink = Uplink(
            s.mqtt,
            device_id=self.device_id,
            username=s.mqtt_username,
            password=self._password,
            outbox=self.outbox,
            make_birth=self._birth,
            commands=self.commands,
            clock=self.clock,
            progress=lambda: self.progress.mark("uplink"),
            on_stored=self.confirmations.handle,
        )
        if s.health.modem_port:
            self.modem = ModemProbe(s.health.modem_port, s.health.modem_baudrate)
            stack.push_async_callback(self.modem.aclose)

    async def run(self) -> None:
        """Run until `stop` (or cancellation)."""
        async with contextlib.AsyncExitStack() as stack:
            self._build(stack)
            self._store(
                self._header_event(
                    EventKind.AGENT_START,
                    {
                        "version": __version__,
                        "waiting": self.outbox.figures.depth,
                        "map_id": self.register_map.id,
                    },
                )
            )
            log.info(
                "%s: agent %s started (epoch %d), polling %d request(s) every %g s",
                self.device_id,
                __version__,
                self.outbox.epoch,
                len(self.poller.plan),
                self.settings.report.poll_interval_s,
            )
            async with asyncio.TaskGroup() as tasks:
                poll = tasks.create_task(self._poll_loop(), name="poll")
                uplink = tasks.create_task(self.uplink.run(), name="uplink")
                commands = tasks.create_task(self._command_loop(), name="commands")
                health = tasks.create_task(self._health_loop(), name="health")
                settling = tasks.create_task(self._settle_update(), name="update")
                watchdog_s = watchdog_interval_s()
                watchdog = (
                    tasks.create_task(
                        feed_watchdog(self.progress, self.clock, watchdog_s), name="watchdog"
                    )
                    if watchdog_s
                    else None
                )
                notify("READY=1")
                self.started.set()
                await self._stop.wait()
                notify("STOPPING=1")
                log.info("%s: stopping", self.device_id)
                await self._cancel(poll, health, commands, settling)
                for message in self.telemetry.flush(wall_ms(self.clock), sync=self.clock.trusted()):
                    self._store(message)
                # a reload reconnects at once: no need to wait for the outbox to empty
                await self._drain(0.0 if self.reload_requested else self.options.drain_s)
                await self._cancel(uplink, *([watchdog] if watchdog else []))
            self.outbox.flush()
            log.info(
                "%s: stopped; %d message(s) wait in the outbox",
                self.device_id,
                self.outbox.figures.depth,
            )

    async def _cancel(self, *tasks: asyncio.Task[None]) -> None:
        """Cancel `tasks` and wait until they end, cancelling again if one ignores it.

        Libraries built on ``asyncio.wait_for`` can lose a cancellation on Python 3.11; one
        lost cancel must not turn SIGTERM into a hang.
        """
        deadline = self.clock.monotonic() + STOP_WAIT_S
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if pending and self.clock.monotonic() >= deadline:
                names = ", ".join(sorted(t.get_name() for t in pending))
                log.error("%s: still stopping after %g s: %s", self.device_id, STOP_WAIT_S, names)
                deadline += STOP_WAIT_S

    async def _drain(self, timeout_s: float) -> None:
        deadline = self.clock.monotonic() + timeout_s
        while self.outbox.figures.depth and self.uplink.figures.connected:
            if self.clock.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)

    # -- loops ----------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        interval = self.settings.report.poll_interval_s
        next_at = self.clock.monotonic()
        while True:
            poll = await self.poller.poll()
            sync = self.clock.trusted()
            for message in self.telemetry.on_poll(poll, sync=sync):
                self._store(message)
            if self.telemetry.due(poll.ts_ms):
                for message in self.telemetry.flush(poll.ts_ms, sync=sync):
                    self._store(message)
            self.progress.mark("poll")
            next_at += interval
            now = self.clock.monotonic()
            if next_at < now:  # the poll overran: skip, do not bunch up
                next_at = now
            await self.clock.sleep(next_at - now)

    def _observed(self, observed: Mapping[str, Scalar], ts_ms: int) -> None:
        """What the command executor read from the controller, fed to telemetry like a poll
        of those points (it was one): the transitions it shows become readings and events."""
        samples = {name: Sample(value, Quality.GOOD) for name, value in observed.items()}
        poll = Poll(ts_ms=ts_ms, samples=samples, answered=1)
        for message in self.telemetry.on_poll(poll, sync=self.clock.trusted()):
            self._store(message)

    async def _command_loop(self) -> None:
        while True:
            envelope = await self.commands.get()
            try:
                await self.executor.handle(envelope)
            except OutboxError as exc:
                self.store_errors += 1
                log.error("%s: cannot store command ack: %s", self.device_id, exc)

    async def _health_loop(self) -> None:
        await self.clock.sleep(self.options.first_health_s)
        while True:
            modem: dict[str, Scalar] = {}
            if self.modem is not None:
                try:  # read() never raises for the modem; this bounds a bug in it, too
                    async with asyncio.timeout(MODEM_READ_S):
                        modem = dict(await self.modem.read())
                except TimeoutError:
                    modem = {"responding": False, "error": "modem read hung"}
            self._store(
                Health(
                    dev=self.device_id,
                    epoch=0,
                    seq=0,
                    ts=wall_ms(self.clock),
                    sync=self.clock.trusted(),
                    modem=modem,
                    agent=self.figures(),
                )
            )
            await self.clock.sleep(self.settings.health.interval_s)

    # -- helpers --------------------------------------------------------------------------------

    def figures(self) -> dict[str, int | float]:
        """The agent's counters, as published in ``health``."""
        out, poll, up, cmd = (
            self.outbox.figures,
            self.poller.figures,
            self.uplink.figures,
            (self.executor.figures),
        )
        flash = self.store.flash
        usage = resource.getrusage(resource.RUSAGE_SELF)
        delivery = self.confirmations.figures
        end_to_end: dict[str, int | float] = (
            {"watermarks": delivery.watermarks, "resent": delivery.resent}
            if self.outbox.end_to_end
            else {}
        )
        return end_to_end | {
            "uptime_s": round(self.clock.monotonic() - self._started_mono, 1),
            "epoch": self.outbox.epoch,
            "outbox_depth": out.depth,
            "outbox_bytes": out.bytes,
            "outbox_evicted": out.evicted,
            "outbox_evictions": out.evictions,
            "flash_bytes_today": flash.today,
            "flash_bytes_total": flash.total,
            "store_errors": self.store_errors,
            "polls": poll.polls,
            "poll_requests": poll.requests,
            "poll_errors": poll.request_errors,
            "modbus_bytes_sent": self.link.stats.bytes_sent,
            "modbus_bytes_received": self.link.stats.bytes_received,
            "last_poll_ok_ms": poll.last_ok_ms,
            "comms_lost": int(self.telemetry.comms_lost),
            "mqtt_connects": up.connects,
            "mqtt_reconnects": max(up.connects - 1, 0),
            "mqtt_connect_failures": up.connect_failures,
            "published": up.published,
            "commands_received": cmd.received,
            "commands_rejected": sum(cmd.rejected.values()),
            "commands_succeeded": cmd.succeeded,
            "commands_failed": cmd.failed,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_kb": usage.ru_maxrss,
            "pid": os.getpid(),
            "config_version": self.settings.config_version,
        }

    def _birth(self) -> Birth:
        return Birth(
            dev=self.device_id,
            epoch=0,
            seq=0,
            ts=wall_ms(self.clock),
            sync=self.clock.trusted(),
            agent_version=__version__,
            map_id=self.register_map.id,
            map_hash=self.register_map.digest(),
            capabilities=self.executor.capabilities,
        )

    def _header_event(self, kind: EventKind, detail: dict[str, Scalar]) -> Event:
        return Event(
            dev=self.device_id,
            epoch=0,
            seq=0,
            ts=wall_ms(self.clock),
            sync=self.clock.trusted(),
            kind=kind,
            detail=detail,
        )

    def _store(self, message: UplinkMessage) -> None:
        """Append to the outbox; a storage failure is logged and counted, never fatal."""
        try:
            self.outbox.append(message)
        except OutboxError as exc:
            self.store_errors += 1
            log.error("%s: cannot store %s: %s", self.device_id, message.topic_kind, exc)


def run_agent(
    settings: EdgeSettings,
    *,
    time_scale: float = 1.0,
    reload: Callable[[], EdgeSettings] | None = None,
) -> int:
    """Run the agent until SIGTERM or SIGINT (the ``edge run`` entry point); after a new
    remote configuration, again on what `reload` (edge.toml read again) returns.

    `time_scale` above 1 runs the agent on an accelerated clock (tests and benchmarks only).
    """

    async def main() -> int:
        current = settings
        options = RunOptions()
        while True:
            clock: Clock | None = None
            if time_scale != 1.0:
                clock = ScaledClock(time_scale, current.clock.trust)
            agent = Agent(current, clock=clock, options=options)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agent.stop)
            await agent.run()
            if agent.exit_code or not agent.reload_requested or reload is None:
                return agent.exit_code
            current = reload()
            options = RunOptions(first_health_s=RELOAD_HEALTH_S)  # the cloud learns at once
            log.info("%s: running on configuration v%d", current.device.id, current.config_version)

    return asyncio.run(main())
