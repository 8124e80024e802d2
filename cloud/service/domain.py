"""Service-platform values: thread kinds and the inputs of requests, answers and reports.

The job and invitation states live in `cloud.domain` (beneath the platform: access rules and
the command service need them too).

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

from cloud.service.crowd import Principle


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
class WarningRequest:
    """A preventive visit asked for from a predictive-maintenance warning: the boiler,
    service type and problem come from the warning, the rest from whoever asks."""

    prediction_id: int
    description: str = ""
    preferred_ms: int = 0
    principle: Principle = Principle.LOW_CARBON
    min_performance: float = 0.0


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
