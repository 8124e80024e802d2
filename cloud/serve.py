"""The composition root and process entry points: ``cloud serve`` (API and portal, ingest,
dispatcher, sweepers) and ``cloud ingest``.

`compose` builds the parts of a cloud from one `CloudSettings` (the service platform, the
command service with its restart rules, the web app with the API and the portal side by side);
each entry point runs them inside one `TaskGroup`. SIGTERM or SIGINT
stops the API from accepting requests, then cancels the rest; state is in the database, so
whatever was in flight is picked up by the next start (commands are re-offered, the broker
re-delivers unacknowledged messages to our persistent session).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server
from sqlalchemy.orm import Session, sessionmaker

from cloud import evidence
from cloud.api.app import create_app
from cloud.broker_stats import run_broker_stats
from cloud.commands import CommandService, Issuer, RestartRule
from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.device_config import resend_stale
from cloud.dispatch import Dispatcher, Sweeper
from cloud.domain import Clock, wall_ms
from cloud.ingest import Ingest
from cloud.key_rotation import follow_up
from cloud.keys import CommandKey, load_command_key
from cloud.mqtt import run_mqtt
from cloud.partitions import Retention, maintain
from cloud.periodic import every
from cloud.portal.app import install_portal
from cloud.predict.runner import Predictor
from cloud.rollouts import Publisher, advance
from cloud.service.config import PlatformConfig
from cloud.service.platform import ServicePlatform
from cloud.settings import CloudSettings
from cloud.supervisor import Supervisor
from cloud.twin.gaps import detect_gaps
from cloud.watermarks import WatermarkSender

log = logging.getLogger(__name__)

MAINTENANCE_EVERY_MS = 3_600_000
"""Partition and retention work runs this often (and at start)."""

SHUTDOWN_GRACE_S = 5
"""On SIGTERM, requests still running after this are cut: a portal page's live stream never
ends by itself, and must not hold the shutdown for its whole `portal_live_max_s`."""


async def housekeeping(
    ingest: Ingest, sessions: sessionmaker[Session], settings: CloudSettings, clock: Clock
) -> None:
    """Flush ingest counters and detect unexplained seq gaps, forever; once an hour (and at
    start) keep the time partitions ready and apply the retention policy (`cloud.partitions`).

    A database outage skips a round; anything else ends the loop for the supervisor to
    restart (one device's data never gets this far: `detect_gaps` quarantines it).
    """
    retention = Retention(
        settings.samples_partition_days,
        settings.samples_retention_days,
        settings.rollups_retention_days,
    )
    maintained: list[int] = []

    def once() -> None:
        ingest.flush_counters()
        now = clock()
        detect_gaps(sessions, now, int(settings.gap_grace_s * 1000))
        if not maintained or now - maintained[0] >= MAINTENANCE_EVERY_MS:
            engine = sessions.kw["bind"]
            maintain(engine, now, retention)
            maintained[:] = [now]

    await every(settings.housekeeping_interval_s, once, "housekeeping")


async def predictor_loop(predictor: Predictor, interval_s: float) -> None:
    """Run the detectors over every day that has closed, forever (`cloud.predict.runner`)."""

    def once() -> None:
        if days := predictor.run_due():
            stats = predictor.stats
            log.info(
                "predictor: %d day(s) analysed; %d warnings raised, %d cleared, %d fulfilled, "
                "%d boiler-days skipped on errors, %d old boiler-days pruned so far",
                days,
                stats.raised,
                stats.cleared,
                stats.fulfilled,
                stats.errors,
                stats.pruned,
            )

    await every(interval_s, once, "predictor")


async def service_sweeper(platform: ServicePlatform, interval_s: float) -> None:
    """Response deadlines, repair verification, annual reminders and notification delivery."""

    def once() -> None:
        platform.sweep()
        platform.deliver()

    await every(interval_s, once, "service sweep")


async def config_resender(
    sessions: sessionmaker[Session], key: CommandKey, settings: CloudSettings, clock: Clock
) -> None:
    """Send a configuration again to devices back online after it expired undelivered."""
    issuer = Issuer.under(key, settings, "cloud")

    def once() -> None:
        with transaction(sessions) as session:
            resend_stale(session, clock(), issuer)

    await every(max(settings.sweep_interval_s, 1.0), once, "config resend")


async def rollout_loop(
    sessions: sessionmaker[Session],
    key: CommandKey,
    settings: CloudSettings,
    clock: Clock,
    wake: Callable[[], None],
) -> None:
    """Move staged rollouts on: next waves, halts, rollbacks, stragglers."""
    publisher = Publisher.under(key, settings, "rollout")

    def once() -> None:
        with transaction(sessions) as session:
            said = advance(session, clock(), publisher)
        if said:
            wake()

    await every(max(settings.sweep_interval_s, 1.0), once, "rollouts")


async def evidence_keeper(
    sessions: sessionmaker[Session], key: CommandKey, settings: CloudSettings, clock: Clock
) -> None:
    """Sign the heads of the thread chains that moved; clear envelopes past their keep."""

    def once() -> None:
        now = clock()
        with transaction(sessions) as session:
            evidence.checkpoint_all(session, key, now)
        with transaction(sessions) as session:
            keep_ms = settings.evidence_keep_days * 86_400_000
            cleared = evidence.prune_envelopes(session, now - keep_ms)
        if cleared:
            log.info(
                "evidence: %d envelope(s) past %d days cleared",
                cleared,
                settings.evidence_keep_days,
            )

    await every(settings.checkpoint_interval_s, once, "evidence")


async def key_switcher(
    sessions: sessionmaker[Session],
    key: CommandKey,
    settings: CloudSettings,
    clock: Clock,
    wake: Callable[[], None],
) -> None:
    """Tell gateways to sign with their new key once every ingest worker knows it."""
    issuer = Issuer.under(key, settings, "cloud")

    def once() -> None:
        with transaction(sessions) as session:
            told = follow_up(session, clock(), issuer)
        if told:
            wake()

    await every(max(settings.sweep_interval_s, 1.0), once, "key rotation")


def restart_rules(platform: ServicePlatform) -> list[RestartRule]:
    """Who besides `cloud.commands.RESTART_ROLES` (admin, support) may restart a boiler; any
    one rule allowing it suffices, and every restart still passes the twin and rate checks."""
    return [
        # the contracted engineer, after the completion report, within the restart window
        platform.restart_rule,
    ]


@dataclass(frozen=True, slots=True)
class Cloud:
    """The parts of one cloud process, built by `compose`."""

    sessions: sessionmaker[Session]
    platform: ServicePlatform
    commands: CommandService
    app: FastAPI


def web_app(
    settings: CloudSettings,
    sessions: sessionmaker[Session],
    commands: CommandService,
    platform: ServicePlatform,
    clock: Clock = wall_ms,
    supervisor: Supervisor | None = None,
) -> FastAPI:
    """The API (``/api/v1``, health, metrics) and the portal's pages side by side."""
    app = create_app(settings, sessions, commands, platform, clock=clock, supervisor=supervisor)
    install_portal(app)
    return app


def compose(
    settings: CloudSettings,
    sessions: sessionmaker[Session],
    key: CommandKey,
    clock: Clock = wall_ms,
    *,
    wake: Callable[[], None] | None = None,
    supervisor: Supervisor | None = None,
) -> Cloud:
    """Build the platform, the command service (with `restart_rules`) and the web app."""
    platform = ServicePlatform(sessions, PlatformConfig.from_settings(settings), clock)
    commands = CommandService(
        sessions, key, settings, clock, wake=wake, restart_rules=restart_rules(platform)
    )
    app = web_app(settings, sessions, commands, platform, clock, supervisor)
    return Cloud(sessions, platform, commands, app)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")


async def _run(
    main: Callable[[], Awaitable[None]],
    supervisor: Supervisor,
    loops: dict[str, Callable[[], Awaitable[None]]],
) -> None:
    """Run every loop under `supervisor` until `main` returns, then cancel them.

    A loop that fails is restarted by the supervisor; it never ends `main` (the API)."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(supervisor.supervise(name, loop), name=name)
            for name, loop in loops.items()
        ]
        await main()
        for task in tasks:
            task.cancel()


def _database(settings: CloudSettings) -> sessionmaker[Session]:
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return session_factory(engine)


async def serve_main(settings: CloudSettings, clock: Clock = wall_ms) -> None:
    """The whole cloud in one process."""
    sessions = _database(settings)
    key = load_command_key(settings.keys_dir, settings.command_kid)
    dispatcher = Dispatcher(sessions, settings, clock)
    ingest = Ingest(sessions, clock, settings)
    supervisor = Supervisor(clock)
    cloud = compose(settings, sessions, key, clock, wake=dispatcher.wake, supervisor=supervisor)
    config = uvicorn.Config(
        cloud.app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        # Only a configured proxy may say who the client is (login throttling keys on it).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )
    server = uvicorn.Server(config)
    log.info(
        "cloud serving on http://%s:%d (commands signed as %s), broker %s:%d",
        settings.api_host,
        settings.api_port,
        key.kid,
        settings.broker_host,
        settings.broker_port,
    )
    sweeper = Sweeper(sessions, settings, clock)
    watermarks = WatermarkSender(sessions, key, settings, clock)
    loops: dict[str, Callable[[], Awaitable[None]]] = {
        "mqtt": lambda: run_mqtt(settings, ingest, extra=[dispatcher.run, watermarks.run]),
        "command-sweeper": sweeper.run,
        "housekeeping": lambda: housekeeping(ingest, sessions, settings, clock),
        "service-sweeper": lambda: service_sweeper(cloud.platform, settings.sweep_interval_s),
    }
    loops["config-resend"] = lambda: config_resender(sessions, key, settings, clock)
    loops["rollouts"] = lambda: rollout_loop(sessions, key, settings, clock, dispatcher.wake)
    loops["key-rotation"] = lambda: key_switcher(sessions, key, settings, clock, dispatcher.wake)
    loops["evidence"] = lambda: evidence_keeper(sessions, key, settings, clock)
    if settings.broker_stats:
        loops["broker-stats"] = lambda: run_broker_stats(settings)
    if settings.predict:
        predictor = Predictor(
            sessions,
            cloud.platform.config.detectors,
            clock,
            grace_ms=int(settings.predict_grace_s * 1000),
            day_ms=int(settings.predict_day_s * 1000),
            keep_days=settings.predict_keep_days,
        )
        loops["predictor"] = lambda: predictor_loop(predictor, settings.predict_interval_s)
    await _run(server.serve, supervisor, loops)


async def ingest_main(settings: CloudSettings, clock: Clock = wall_ms) -> None:
    """An ingest worker on its own (scale-out)."""
    sessions = _database(settings)
    ingest = Ingest(sessions, clock, settings)
    if settings.ingest_metrics_port is not None:
        start_http_server(settings.ingest_metrics_port, addr=settings.api_host)
    log.info("ingest worker %s on group %s", settings.mqtt_client_id, settings.ingest_group)
    await _run(
        _until_signalled,
        Supervisor(clock),
        {
            "mqtt": lambda: run_mqtt(settings, ingest),
            "housekeeping": lambda: housekeeping(ingest, sessions, settings, clock),
        },
    )
    ingest.flush_counters()


def run_serve(settings: CloudSettings) -> None:
    """Entry point of ``boilertwin cloud serve``."""
    asyncio.run(serve_main(settings))


def run_ingest(settings: CloudSettings) -> None:
    """Entry point of ``boilertwin cloud ingest`` (one worker; N: `cloud.workers`)."""
    asyncio.run(ingest_main(settings))
