"""Notifications: an in-app feed per user, and a pluggable sender for e-mail or SMS.

A notification is written to the ``notifications`` table in the transaction that caused it
(so it exists exactly when what it announces does), then handed to the `Sender` by
`deliver_pending` after commit. The default `LoggingSender` only logs who was told what:
titles and kinds, never bodies or data, because data can hold a one-time evaluation token.
A real sender (SMTP, an SMS gateway) implements `Sender.send`; a failure leaves the
notification unsent and it is retried on the next pass.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import Device, Notification

log = logging.getLogger(__name__)

DELIVERY_BATCH = 200


class NotificationKind:
    """What a notification is about (the portal picks an icon and a link from it)."""

    BOILER_ALARM = "boiler_alarm"
    PREDICTED_FAULT = "predicted_fault"
    REQUEST_TO_AUTHORIZE = "request_to_authorize"
    REQUEST_DECLINED = "request_declined"
    REQUEST_FLAGGED = "request_flagged"
    INVITATION = "invitation"
    SHORTLIST_READY = "shortlist_ready"
    NO_ENGINEERS = "no_engineers"
    CONTRACT = "contract"
    NOT_SELECTED = "not_selected"
    COMPLETED = "completed"
    VERIFIED = "verified"
    FAILED_VERIFICATION = "failed_verification"
    EVALUATE = "evaluate"
    CANCELLED = "cancelled"
    ANNUAL_CHECK_DUE = "annual_check_due"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What a sender gets: enough to address and word a message."""

    notification_id: int
    user_id: str
    kind: str
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)


class Sender(Protocol):
    """Delivers notifications outside the app (e-mail, SMS). Raise `OSError` on failure."""

    def send(self, message: Outgoing) -> None:
        """Deliver one message."""


class LoggingSender:
    """The default sender: logs that a user was notified (no bodies, no data)."""

    def send(self, message: Outgoing) -> None:
        """Log the notification's recipient, kind and title."""
        log.info("notify %s: [%s] %s", message.user_id, message.kind, message.title)


def notify(
    session: Session,
    user_ids: Sequence[str | None],
    kind: str,
    title: str,
    body: str = "",
    *,
    now_ms: int,
    device_id: str | None = None,
    job_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> list[Notification]:
    """Add one notification per distinct user (None entries skipped) in the caller's transaction."""
    rows = []
    for user_id in dict.fromkeys(u for u in user_ids if u):
        row = Notification(
            user_id=user_id,
            ts_ms=now_ms,
            kind=kind,
            title=title[:200],
            body=body,
            device_id=device_id,
            job_id=job_id,
            data=dict(data or {}),
            sent=False,
        )
        session.add(row)
        rows.append(row)
    return rows


def when_text(ms: int) -> str:
    """A time as messages show it: ``2026-11-21 09:30 UTC``."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def end_user(device: Device) -> str | None:
    """Who lives with the boiler: its tenant, or its owner when there is no tenant."""
    return device.tenant_id or device.owner_id


def deliver_pending(session: Session, sender: Sender, limit: int = DELIVERY_BATCH) -> int:
    """Hand unsent notifications to `sender`, marking each sent; returns how many were sent.

    One failing message is logged and retried next time; the others still go.
    """
    rows = session.scalars(
        select(Notification)
        .where(Notification.sent.is_(False))
        .order_by(Notification.id)
        .limit(limit)
    ).all()
    sent = 0
    for row in rows:
        message = Outgoing(row.id, row.user_id, row.kind, row.title, row.body, dict(row.data))
        try:
            sender.send(message)
        except OSError as exc:
            log.warning("notification %d to %s not sent: %s", row.id, row.user_id, exc)
            continue
        row.sent = True
        sent += 1
    return sent


def notification_json(row: Notification) -> dict[str, Any]:
    """API form of one notification."""
    return {
        "id": row.id,
        "ts": row.ts_ms,
        "kind": row.kind,
        "title": row.title,
        "body": row.body,
        "device_id": row.device_id,
        "job_id": row.job_id,
        "data": row.data,
        "read": row.read_ms is not None,
        "read_at": row.read_ms,
    }
