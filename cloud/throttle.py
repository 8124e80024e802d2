"""Login throttling: growing delays per account and per address, never a lock-out for good.

Password guessing is slowed at two keys, each with its own budget of free failures and a
delay that doubles with every failure past it, up to a cap:

* **per account** (the login name as typed, known or not, so the answers do not tell which
  accounts exist): 5 free failures, then 1 s, 2 s, 4 s ... at most 60 s. A distributed
  attacker gets about one guess a minute per account; the real user, whoever is attacking,
  waits at most 60 s before their right password is checked again, and a success clears the
  account's count. That cap is what keeps an attacker from locking a real user out.
* **per client address**: 20 free failures (an office behind one NAT mistypes too), then 1 s
  doubling to at most 15 min. This is what stops one machine spraying many accounts. A
  success does not clear it (else logging into one's own account would reset the count).

A count is forgotten after ``login_forget_after_s`` (15 min) without a failure. While either
key is blocked, every attempt, right or wrong, is refused with 429 and ``Retry-After``
before any password is checked (so a block costs the server no scrypt run and tells the
attacker nothing). The counts live in the database (``login_throttle``), so every API
process and the portal share them. Counted in ``boilertwin_logins_total{channel,outcome}``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import authenticate
from cloud.db import transaction
from cloud.domain import Clock
from cloud.errors import CloudError
from cloud.metrics import LOGINS
from cloud.models import LoginThrottle, User
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

KEY_MAX = 200
"""Width of ``login_throttle.key``."""


class LoginThrottled(CloudError):
    """Too many failed logins for this account or address: try again after `retry_after_s`."""

    status = 429
    title = "Too many login attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many failed logins; try again in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (RFC 9110 10.2.3)."""
        return {"Retry-After": str(self.retry_after_s)}


@dataclass(frozen=True, slots=True)
class Budget:
    """Free failures, then a delay doubling from `base_s` up to `max_s`."""

    free: int
    max_s: float
    base_s: float = 1.0

    def delay_ms(self, failures: int) -> int:
        """How long after failure number `failures` the key stays blocked."""
        if failures < self.free:
            return 0
        doublings = min(failures - self.free, 40)
        return int(min(self.max_s, self.base_s * 2**doublings) * 1000)


class Throttle:
    """Checks, records and answers login attempts for the API and the portal."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        account: Budget,
        address: Budget,
        forget_after_s: float,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.budgets = {"account": account, "address": address}
        self.forget_ms = int(forget_after_s * 1000)

    @classmethod
    def from_settings(
        cls, sessions: sessionmaker[Session], clock: Clock, settings: CloudSettings
    ) -> Throttle:
        """The policy `settings` describe (``login_*``)."""
        return cls(
            sessions,
            clock,
            account=Budget(
                settings.login_account_free_failures, settings.login_account_max_delay_s
            ),
            address=Budget(
                settings.login_address_free_failures, settings.login_address_max_delay_s
            ),
            forget_after_s=settings.login_forget_after_s,
        )

    def login(
        self, session: Session, user_id: str, password: str, address: str, *, channel: str
    ) -> User | None:
        """The user if the password is right; None if not; `LoginThrottled` while blocked.

        `session` is the request's (the user is loaded through it); the counts are written
        in transactions of their own, so a failure is counted even though the request's
        session is never committed.
        """
        keys = _keys(user_id, address)
        now = self.clock()
        blocked_until = self._blocked_until(keys, now)
        if blocked_until > now:
            LOGINS.labels(channel, "throttled").inc()
            raise LoginThrottled(max(1, math.ceil((blocked_until - now) / 1000)))
        user = authenticate(session, user_id, password)
        if user is None:
            LOGINS.labels(channel, "failure").inc()
            self._failed(keys, now)
            return None
        LOGINS.labels(channel, "success").inc()
        with transaction(self.sessions) as writer:
            writer.execute(delete(LoginThrottle).where(LoginThrottle.key == keys["account"]))
        return user

    def check_claims(self, address: str) -> None:
        """`LoginThrottled` while `address` is blocked after refused gateway claims (the
        address budget: a claim token is a credential too)."""
        now = self.clock()
        blocked_until = self._blocked_until(_claim_keys(address), now)
        if blocked_until > now:
            raise LoginThrottled(max(1, math.ceil((blocked_until - now) / 1000)))

    def claim_refused(self, address: str) -> None:
        """Count a refused claim from `address`."""
        self._failed(_claim_keys(address), self.clock())

    def _blocked_until(self, keys: dict[str, str], now: int) -> int:
        with self.sessions() as session:
            until = session.scalars(
                select(LoginThrottle.blocked_until_ms).where(
                    LoginThrottle.key.in_(list(keys.values())),
                    LoginThrottle.last_failure_ms > now - self.forget_ms,
                )
            ).all()
        return max(until, default=0)

    def _failed(self, keys: dict[str, str], now: int) -> None:
        for attempt in (1, 2):
            try:
                with transaction(self.sessions) as session:
                    for kind, key in sorted(keys.items()):
                        self._count(session, kind, key, now)
                return
            except IntegrityError:
                if attempt == 2:
                    raise  # the row was inserted concurrently twice over: not expected

    def _count(self, session: Session, kind: str, key: str, now: int) -> None:
        row = session.scalars(
            select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
        ).first()
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_ms=now, blocked_until_ms=0)
            session.add(row)
        elif row.last_failure_ms <= now - self.forget_ms:
            row.failures = 0  # quiet for long enough: start afresh
        row.failures += 1
        row.last_failure_ms = now
        row.blocked_until_ms = now + self.budgets[kind].delay_ms(row.failures)
        session.flush()
        if row.blocked_until_ms > now:
            log.warning(
                "login %s blocked for %d s after %d failures",
                kind,
                (row.blocked_until_ms - now) // 1000,
                row.failures,
            )


def _keys(user_id: str, address: str) -> dict[str, str]:
    """The throttle keys of one attempt (the login name as it will be looked up)."""
    return {
        "account": f"account:{user_id.strip().lower()}"[:KEY_MAX],
        "address": f"address:{address}"[:KEY_MAX],
    }


def _claim_keys(address: str) -> dict[str, str]:
    return {"address": f"claim:{address}"[:KEY_MAX]}
