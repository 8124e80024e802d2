"""Service-platform values: job and invitation states, thread kinds, request input.

A job (the service twin) moves through these states; every move is a thread event with
subject = the job id, so the job's thread is the proof of what was wrong and what was fixed::

    pending_authorization -> (owner approves) -> validation -> crowdsourcing -> shortlisted
        -> contracted -> completed -> verified -> evaluated
    pending_authorization -> declined                     (owner says no)
    validation flags it   -> flagged -> (owner/support confirms) -> crowdsourcing
    nobody eligible or available -> no_engineers -> (owner/support retries) -> crowdsourcing
    completed -> failed_verification                     (locked out again / never ran normally)
    any state before completed -> cancelled
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud.service.crowd import Principle


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


class JobEvent:
    """Thread event kinds of the service platform (``subject`` = job id)."""

    REQUEST = "request"
    AUTHORIZATION = "authorization"
    VALIDATION = "validation"
    ANALYSIS = "analysis"
    CROWDSOURCING = "crowdsourcing"
    RESPONSE = "response"
    SHORTLIST = "shortlist"
    CONTRACT = "contract"
    COMPLETION = "completion"
    VERIFICATION = "verification"
    EVALUATION = "evaluation"
    CANCELLATION = "cancellation"
    REMINDER = "reminder"


@dataclass(frozen=True, slots=True)
class RequestInput:
    """A service request as the requester states it."""

    device_id: str
    service_type: str
    problem: str
    description: str = ""
    preferred_ms: int = 0
    principle: Principle = Principle.LOW_CARBON
    min_performance: float = 0.0
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseInput:
    """An invited engineer's answer."""

    available: bool
    quote: float | None = None
    lat: float | None = None
    lon: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class CompletionReport:
    """What the engineer reports after the work."""

    cause: str
    actions: str
    parts: tuple[str, ...] = ()
