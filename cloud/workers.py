"""``cloud ingest --workers N``: N ingest processes on one shared subscription, kept running.

Each worker is a whole `cloud.serve.ingest_main` in its own process (own interpreter, own
database connections: Python threads would share one core), with its own stable MQTT client
id ``<mqtt_client_id>-w<i>``, so its persistent session (and whatever the broker queued for
it) is picked up again by the worker with the same number after a restart. The parent does
nothing but start them, restart one that dies (after a capped backoff) and, on SIGTERM or
SIGINT, pass the signal on and wait for them.

Lowering N leaves the sessions of the retired ids behind. Mosquitto keeps dealing them their
turn of the shared subscription until the session expires (``mqtt_session_expiry_s``); the
gateways' outboxes keep those messages until the cloud's watermark covers them and resend
what it reports missing, so nothing is lost, only late. Delete retired sessions on the broker
(or keep N) to avoid the delay: see docs/operations.md, "Ingest workers".
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0
"""A worker that died is restarted after 1 s, doubling to 60 s while it keeps dying young."""
HEALTHY_AFTER_S = 60.0
"""A worker that ran this long before dying starts the backoff afresh."""
POLL_S = 0.5


def worker_settings(settings: CloudSettings, index: int) -> CloudSettings:
    """Worker `index`'s settings: its own stable client id (and metrics port, if any)."""
    port = settings.ingest_metrics_port
    return dataclasses.replace(
        settings,
        mqtt_client_id=f"{settings.mqtt_client_id}-w{index}",
        ingest_metrics_port=None if port is None else port + index,
    )


def _work(settings: CloudSettings, level: int) -> None:
    from cloud.serve import run_ingest

    logging.basicConfig(level=level, format=f"%(asctime)s {settings.mqtt_client_id} %(message)s")
    run_ingest(settings)


class _Slot:
    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self.process: BaseProcess | None = None
        self.started = 0.0
        self.failures = 0
        self.due = 0.0


def run_workers(settings: CloudSettings, workers: int) -> int:
    """Run `workers` ingest processes until SIGTERM/SIGINT; returns the exit status."""
    context = multiprocessing.get_context("spawn")
    slots = [_Slot(worker_settings(settings, i)) for i in range(workers)]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    level = logging.getLogger().getEffectiveLevel()
    log.info("starting %d ingest workers on group %s", workers, settings.ingest_group)
    while not stopping:
        now = time.monotonic()
        for slot in slots:
            process = slot.process
            if process is not None and process.is_alive():
                continue
            if process is not None:  # it died
                lived = now - slot.started
                slot.failures = 1 if lived >= HEALTHY_AFTER_S else slot.failures + 1
                slot.due = now + min(RESTART_MAX_S, RESTART_MIN_S * 2 ** min(slot.failures - 1, 10))
                log.error(
                    "worker %s exited (code %s) after %.0f s; restarting in %.1f s",
                    slot.settings.mqtt_client_id,
                    process.exitcode,
                    lived,
                    slot.due - now,
                )
                slot.process = None
            if now >= slot.due:
                slot.process = context.Process(
                    target=_work,
                    args=(slot.settings, level),
                    name=slot.settings.mqtt_client_id,
                    daemon=False,
                )
                slot.process.start()
                slot.started = now
        time.sleep(POLL_S)
    log.info("stopping %d ingest workers", workers)
    for slot in slots:
        if slot.process is not None and slot.process.is_alive():
            slot.process.terminate()  # SIGTERM: each flushes its counters and leaves
    for slot in slots:
        if slot.process is not None:
            slot.process.join()
    return 0
