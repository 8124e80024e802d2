"""`ServicePlatform`: every service-platform action, each in its own transaction.

The API calls these; the sweeper calls `sweep` (response deadlines, verification, annual
reminders) and `deliver` (notifications to the sender). The job row is locked for the whole
of each action, so two processes cannot move one job at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import transaction
from cloud.domain import Caller, Clock, wall_ms
from cloud.errors import NotFound
from cloud.models import Invitation, Job
from cloud.notify import LoggingSender, Sender, deliver_pending
from cloud.service import delivery, market, preventive, reminders, requests
from cloud.service.config import PlatformConfig
from cloud.service.crowd import Principle
from cloud.service.domain import CompletionReport, RequestInput, ResponseInput, WarningRequest
from cloud.service.views import visible_job

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServicePlatform:
    """The service platform over one database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: PlatformConfig,
        clock: Clock = wall_ms,
        sender: Sender | None = None,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.clock = clock
        self.sender: Sender = sender or LoggingSender()
        self.restart_rule = delivery.EngineerRestartRule(config.settings.engineer_restart_window_s)

    def _on_job(
        self, caller: Caller, job_id: str, action: Callable[[Session, Job, int], T]
    ) -> tuple[Job, T]:
        with transaction(self.sessions) as session:
            job = visible_job(session, caller, job_id, lock=True)
            result = action(session, job, self.clock())
            session.flush()
            return job, result

    def create_request(self, caller: Caller, data: RequestInput) -> tuple[Job, bool]:
        """Raise a request (validated and crowdsourced at once when the owner raises it)."""
        try:
            with transaction(self.sessions) as session:
                return requests.create(session, self.config, caller, data, self.clock())
        except IntegrityError:
            if data.idempotency_key is None:
                raise
            # The same key raced in from a retry: answer with the job that won.
            with transaction(self.sessions) as session:
                return requests.create(session, self.config, caller, data, self.clock())
        except NotFound:
            with transaction(self.sessions) as session:
                requests.ownership_failure(session, caller, data.device_id, self.clock())
            raise

    def raise_preventive(self, caller: Caller, data: WarningRequest) -> tuple[Job, bool]:
        """A preventive visit from a warning (or the job already open for it)."""
        with transaction(self.sessions) as session:
            return preventive.raise_from_warning(session, self.config, caller, data, self.clock())

    def authorize(self, caller: Caller, job_id: str, approve: bool, note: str) -> Job:
        """The owner approves or declines a tenant's request."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: requests.authorize(s, self.config, caller, job, approve, note, now),
        )[0]

    def confirm(self, caller: Caller, job_id: str, note: str) -> Job:
        """Proceed with a flagged request, or retry crowdsourcing one nobody took."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: requests.confirm(s, self.config, caller, job, note, now),
        )[0]

    def cancel(self, caller: Caller, job_id: str, reason: str) -> Job:
        """Cancel before the work is done."""
        return self._on_job(
            caller, job_id, lambda s, job, now: requests.cancel(s, caller, job, reason, now)
        )[0]

    def respond(self, caller: Caller, job_id: str, answer: ResponseInput) -> Invitation:
        """An invited engineer answers."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: market.respond(s, self.config, caller, job, answer, now),
        )[1]

    def select(self, caller: Caller, job_id: str, engineer_id: str, principle: Principle) -> Job:
        """The owner chooses a shortlisted engineer: the contract."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: market.select_engineer(
                s, self.config, caller, job, engineer_id, principle, now
            ),
        )[0]

    def complete(self, caller: Caller, job_id: str, report: CompletionReport) -> Job:
        """The contracted engineer reports the work."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: delivery.complete(s, self.config, caller, job, report, now),
        )[0]

    def evaluate(
        self, caller: Caller, job_id: str, token: str, cs: int, sq: int, comment: str
    ) -> dict[str, Any]:
        """The end user rates a verified job, once."""
        return self._on_job(
            caller,
            job_id,
            lambda s, job, now: delivery.evaluate(s, caller, job, token, cs, sq, comment, now),
        )[1]

    def sweep(self) -> dict[str, list[Any]]:
        """Deadlines, verification and reminders, each in its own transaction."""
        now = self.clock()
        done: dict[str, list[Any]] = {}
        with transaction(self.sessions) as session:
            done["rounds_closed"] = market.sweep_rounds(session, self.config, now)
        with transaction(self.sessions) as session:
            done["verification"] = delivery.sweep_verification(session, self.config, now)
        with transaction(self.sessions) as session:
            days = self.config.settings.reminder_lead_days
            done["reminders"] = reminders.send_reminders(session, now, days)
        return done

    def deliver(self) -> int:
        """Hand new notifications to the sender."""
        with transaction(self.sessions) as session:
            return deliver_pending(session, self.sender)
