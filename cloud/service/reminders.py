"""Annual gas-safety check reminders, from each boiler's installation date.

The check is due on every anniversary of ``install_date`` (29 February falls on 28 February in
other years). `reminder_lead_days` before it, the boiler's end user (tenant, or owner where
there is none) is reminded to request an ``annual_check``; the owner is told too. Each
(boiler, anniversary) is reminded once, enforced by the ``reminders`` primary key, so any
number of processes may run the scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud import thread
from cloud.db import take_write_lock
from cloud.models import Device, Reminder
from cloud.notify import NotificationKind, end_user, notify
from cloud.service.domain import JobEvent

log = logging.getLogger(__name__)


def anniversary(install: dt.date, year: int) -> dt.date:
    """The installation date's anniversary in `year`."""
    try:
        return install.replace(year=year)
    except ValueError:  # 29 February in a common year
        return dt.date(year, 2, 28)


def next_due(install: dt.date, today: dt.date) -> dt.date:
    """The first anniversary on or after `today` (never the installation day itself)."""
    due = anniversary(install, today.year)
    if due < today:
        due = anniversary(install, today.year + 1)
    if due <= install:
        due = anniversary(install, install.year + 1)
    return due


def send_reminders(session: Session, now_ms: int, lead_days: int) -> list[tuple[str, str]]:
    """Remind end users of checks due within `lead_days`; returns (device, due date) reminded."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    sent: list[tuple[str, str]] = []
    devices = session.scalars(
        select(Device).where(Device.install_date.is_not(None), Device.revoked.is_(False))
    )
    for device in devices:
        try:
            install = dt.date.fromisoformat(device.install_date or "")
        except ValueError:
            log.warning("%s: install_date %r is not a date", device.id, device.install_date)
            continue
        due = next_due(install, today)
        if (due - today).days > lead_days:
            continue
        key = due.isoformat()
        if session.get(Reminder, (device.id, key)) is not None:
            continue
        take_write_lock(session)  # on SQLite a SAVEPOINT must sit inside a real transaction
        try:
            with session.begin_nested():
                session.add(Reminder(device_id=device.id, due_date=key, sent_ms=now_ms))
        except IntegrityError:
            continue  # another process reminded first
        user = end_user(device)
        notify(
            session,
            [user, device.owner_id],
            NotificationKind.ANNUAL_CHECK_DUE,
            f"Annual gas-safety check due on {key}",
            f"The boiler at {device.address or device.id} was installed on {install}. "
            "Request an annual check (the owner authorises it).",
            now_ms=now_ms,
            device_id=device.id,
            data={"due": key, "service_type": "annual_check"},
        )
        thread.record(
            session,
            device_id=device.id,
            kind=JobEvent.REMINDER,
            ts_ms=now_ms,
            recorded_ms=now_ms,
            actor="cloud",
            data={"due": key, "notified": [u for u in dict.fromkeys((user, device.owner_id)) if u]},
        )
        sent.append((device.id, key))
        log.info("%s: annual check due %s, reminded %s", device.id, key, user)
    return sent
