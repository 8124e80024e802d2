"""Domain values shared across the cloud: roles, callers, connectivity, command, job and
invitation states (beneath the service platform, which moves jobs through them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

Clock = Callable[[], int]
"""Wall-clock milliseconds since the Unix epoch; injected so tests control time."""


def wall_ms() -> int:
    """The system clock in milliseconds (the default `Clock`)."""
    return time.time_ns() // 1_000_000


class Role(StrEnum):
    """What a user is to the platform."""

    ADMIN = "admin"
    """The manufacturer's platform team: everything."""
    SUPPORT = "support"
    """The manufacturer's support desk: every boiler, restart with a recorded reason."""
    OWNER = "owner"
    """Owner or landlord: their own boilers."""
    TENANT = "tenant"
    """End user living with the boiler: their own boiler."""
    ENGINEER = "engineer"
    """Service engineer: boilers they are invited to or contracted on (service platform)."""

    @property
    def article(self) -> str:
        """The role with its indefinite article, for messages: "an owner", "a tenant"."""
        if self is Role.SUPPORT:
            return "a support agent"
        return f"an {self.value}" if self.value[0] in "aeiou" else f"a {self.value}"


STAFF = frozenset({Role.ADMIN, Role.SUPPORT})
"""Roles that see the whole fleet."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API user."""

    user_id: str
    role: Role

    @property
    def is_staff(self) -> bool:
        """Admin or support: sees every boiler."""
        return self.role in STAFF

    @property
    def actor(self) -> str:
        """How the thread names this caller."""
        return f"user:{self.user_id}"


class Connectivity(StrEnum):
    """How a boiler's gateway is connected, as the twin shows it."""

    ONLINE = "online"
    OFFLINE = "offline"
    STALE = "stale"
    """Says online, but nothing heard for longer than ``stale_after_s``: maybe silently dead."""
    UNKNOWN = "unknown"
    """Never heard from."""


class CommandState(StrEnum):
    """Command lifecycle (ARCHITECTURE.md, "Commands")."""

    CREATED = "created"
    SENT = "sent"
    DELIVERED = "delivered"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        """The device reported an outcome; nothing changes it any more."""
        return self in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED)

    @property
    def verdict(self) -> bool:
        """A cloud-side verdict for silence (a later device ack may still correct it)."""
        return self in (CommandState.EXPIRED, CommandState.TIMED_OUT)

    @property
    def rank(self) -> int:
        """Progress order; acks only ever move a command forward."""
        return _RANK[self]


_RANK = {
    CommandState.CREATED: 0,
    CommandState.SENT: 1,
    CommandState.EXPIRED: 1,
    CommandState.DELIVERED: 2,
    CommandState.EXECUTING: 3,
    CommandState.TIMED_OUT: 3,
    CommandState.SUCCEEDED: 4,
    CommandState.FAILED: 4,
    CommandState.REJECTED: 4,
}


# -- service jobs (the platform in `cloud.service` moves them; access rules read them) --------


class JobState(StrEnum):
    """Where a service job is."""

    PENDING_AUTHORIZATION = "pending_authorization"
    """Raised by the tenant; the owner must authorise it."""
    DECLINED = "declined"
    FLAGGED = "flagged"
    """Live data did not confirm the problem (status mismatch, or offline): a person decides."""
    CROWDSOURCING = "crowdsourcing"
    """Invitations are out; engineers answer until the deadline."""
    NO_ENGINEERS = "no_engineers"
    """Nobody eligible, or nobody available; the owner or support may retry."""
    SHORTLISTED = "shortlisted"
    CONTRACTED = "contracted"
    COMPLETED = "completed"
    """The engineer reported the work; the platform is cross-checking live data."""
    VERIFIED = "verified"
    FAILED_VERIFICATION = "failed_verification"
    EVALUATED = "evaluated"
    CANCELLED = "cancelled"

    @property
    def cancellable(self) -> bool:
        """Before the work is done, the requester, owner or support may cancel."""
        return self in _CANCELLABLE

    @property
    def closed(self) -> bool:
        """Nothing more happens to the job."""
        return self in _CLOSED


_CANCELLABLE = frozenset(
    {
        JobState.PENDING_AUTHORIZATION,
        JobState.FLAGGED,
        JobState.CROWDSOURCING,
        JobState.NO_ENGINEERS,
        JobState.SHORTLISTED,
        JobState.CONTRACTED,
    }
)
_CLOSED = frozenset(
    {JobState.DECLINED, JobState.EVALUATED, JobState.CANCELLED, JobState.FAILED_VERIFICATION}
)
INVITED_STATES = frozenset({JobState.CROWDSOURCING, JobState.SHORTLISTED})
"""States in which invited engineers still take part (and see the boiler)."""
CONTRACTED_STATES = frozenset({JobState.CONTRACTED, JobState.COMPLETED})
"""States in which the contracted engineer sees the boiler."""


class InvitationState(StrEnum):
    """An invited engineer's answer."""

    OPEN = "open"
    ACCEPTED = "accepted"
    """Available at the requested time, with a quote and current location."""
    DECLINED = "declined"
    EXPIRED = "expired"
    """No answer by the deadline: counts as not accepted (eq. 17)."""
    WITHDRAWN = "withdrawn"
    """The job was cancelled before they answered (does not count against them)."""
