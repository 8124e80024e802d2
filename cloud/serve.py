"""Process entry points: ``cloud serve`` (API, ingest, dispatcher, sweepers), ``cloud ingest``.

Each builds everything from one `CloudSettings` inside one `TaskGroup`. SIGTERM or SIGINT
stops the API from accepting requests, then cancels the rest; state is in the database, so
whatever was in flight is picked up by the next start (commands are re-offered, the broker
re-delivers unacknowledged messages to our persistent session).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import uvicorn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.app import create_app
from cloud.commands import CommandService
from cloud.db import make_engine, session_factory, upgrade
from cloud.dispatch import Dispatcher, Sweeper
from cloud.domain import Clock, wall_ms
from cloud.ingest import Ingest
from cloud.keys import load_command_key
from cloud.mqtt import run_mqtt
from cloud.service.config import PlatformConfig
from cloud.service.platform import ServicePlatform
from cloud.settings import CloudSettings
from cloud.supervisor import Supervisor
from cloud.twin.gaps import detect_gaps

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5
"""On SIGTERM, requests still running after this are cut: a portal page's live stream never
ends by itself, and must not hold the shutdown for its whole `portal_live_max_s`."""


async def housekeeping(
    ingest: Ingest, sessions: sessionmaker[Session], settings: CloudSettings, clock: Clock
) -> None:
    """Flush ingest counters and detect unexplained seq gaps, forever.

    A database outage skips a round; anything else ends the loop for the supervisor to
    restart (one device's data never gets this far: `detect_gaps` quarantines it).
    """

    def once() -> None:
        ingest.flush_counters()
        detect_gaps(sessions, clock(), int(settings.gap_grace_s * 1000))

    while True:
        await asyncio.sleep(settings.housekeeping_interval_s)
        try:
            await asyncio.to_thread(once)
        except DBAPIError as exc:
            log.warning("housekeeping skipped: database unavailable (%s)", exc.orig)


async def service_sweeper(platform: ServicePlatform, interval_s: float) -> None:
    """Response deadlines, repair verification, annual reminders and notification delivery."""

    def once() -> None:
        platform.sweep()
        platform.deliver()

    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(once)
        except DBAPIError as exc:
            log.warning("service sweep skipped: database unavailable (%s)", exc.orig)


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
    commands = CommandService(sessions, key, settings, clock, wake=dispatcher.wake)
    ingest = Ingest(sessions, clock, settings)
    platform = ServicePlatform(sessions, PlatformConfig.from_settings(settings), clock)
    supervisor = Supervisor(clock)
    app = create_app(
        settings, sessions, commands, clock=clock, platform=platform, supervisor=supervisor
    )
    config = uvicorn.Config(
        app,
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
    await _run(
        server.serve,
        supervisor,
        {
            "mqtt": lambda: run_mqtt(settings, ingest, extra=[dispatcher.run]),
            "command-sweeper": sweeper.run,
            "housekeeping": lambda: housekeeping(ingest, sessions, settings, clock),
            "service-sweeper": lambda: service_sweeper(platform, settings.sweep_interval_s),
        },
    )


async def ingest_main(settings: CloudSettings, clock: Clock = wall_ms) -> None:
    """An ingest worker on its own (scale-out)."""
    sessions = _database(settings)
    ingest = Ingest(sessions, clock, settings)
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
    """Entry point of ``boilertwin cloud ingest``."""
    asyncio.run(ingest_main(settings))
