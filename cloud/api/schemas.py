"""Request and response bodies (pydantic v2; unknown fields are refused)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.domain import Role
from cloud.errors import InvalidInput
from cloud.service.crowd import Principle
from cloud.service.domain import RequestInput, ResponseInput, WarningRequest
from protocols.messages import CommandName

_STRICT = ConfigDict(extra="forbid")


class Location(BaseModel):
    """WGS 84 latitude and longitude in degrees."""

    model_config = _STRICT

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class BoilerPatch(BaseModel):
    """Attribute changes (JSON merge-patch style: a field set to null is cleared)."""

    model_config = _STRICT

    model: str | None = Field(default=None, min_length=1, max_length=100)
    serial: str | None = Field(default=None, min_length=1, max_length=100)
    install_date: date | None = None
    location: Location | None = None
    address: str | None = Field(default=None, min_length=1, max_length=300)
    owner: str | None = Field(default=None, min_length=1, max_length=64)
    """User id of an existing user with role ``owner``."""
    tenant: str | None = Field(default=None, min_length=1, max_length=64)
    """User id of an existing user with role ``tenant``."""


Arg = bool | int | float | str | None


class CommandBody(BaseModel):
    """A command request; ``Idempotency-Key`` goes in a header."""

    model_config = _STRICT

    name: Literal[CommandName.RESTART] = Field(
        examples=["restart"],
        description="``restart`` (a lockout reset): the one command people send. "
        "``set_setpoint`` is reserved in the wire protocol but not built (no interlocks yet), "
        "so it is not offered; configuration, updates and key rotation are sent by the cloud "
        "itself (their own endpoints).",
    )
    args: dict[str, Arg] = Field(default_factory=dict, max_length=0)
    """No command takes arguments yet (``restart`` never will)."""
    reason: str = Field(default="", max_length=1000, examples=["F28 repaired on site"])


class UserCreate(BaseModel):
    """A new user (admins only)."""

    model_config = _STRICT

    id: str = Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9._@-]{2,63}$")
    password: str = Field(min_length=8, max_length=1024)
    role: Role
    display_name: str = Field(default="", max_length=200)


class TokenOut(BaseModel):
    """OAuth2 access-token response (RFC 6749 section 5.1) plus the user's role."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    """Seconds until the token expires."""
    role: Role


class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: str
    role: Role
    display_name: str
    disabled: bool = False


# --- Service platform ---------------------------------------------------------------------


class JobCreate(BaseModel):
    """A service request; ``Idempotency-Key`` (header) makes retries safe."""

    model_config = _STRICT

    device_id: str = Field(min_length=1, max_length=63)
    service_type: str = Field(min_length=1, max_length=32, examples=["repair"])
    problem: str = Field(min_length=1, max_length=32, examples=["no_heating"])
    description: str = Field(default="", max_length=2000)
    preferred_time: datetime | None = None
    """When the visit would suit (ISO 8601 with a zone); default: as soon as possible."""
    principle: Principle = Principle.LOW_CARBON
    """How the shortlist is ranked: low_carbon (eq. 14), low_cost (eq. 13) or cheapest."""
    min_performance: float = Field(default=0.0, ge=0.0, le=1.0)
    """The requester's accepted performance threshold W (constraint 4)."""

    def request_input(self, idempotency_key: str | None) -> RequestInput:
        """The service platform's input for this request; the time must carry a zone."""
        preferred = self.preferred_time
        if preferred is not None and preferred.tzinfo is None:
            raise InvalidInput("preferred_time needs a time zone (e.g. Z)", field="preferred_time")
        return RequestInput(
            device_id=self.device_id,
            service_type=self.service_type,
            problem=self.problem,
            description=self.description,
            preferred_ms=int(preferred.timestamp() * 1000) if preferred else 0,
            principle=self.principle,
            min_performance=self.min_performance,
            idempotency_key=idempotency_key,
        )


class PreventiveCreate(BaseModel):
    """A preventive visit from a warning: everything else comes from the warning."""

    model_config = _STRICT

    description: str = Field(default="", max_length=1000)
    """Added to the warning's own description (access, times that suit...)."""
    preferred_time: datetime | None = None
    principle: Principle = Principle.LOW_CARBON
    min_performance: float = Field(default=0.0, ge=0.0, le=1.0)

    def warning_request(self, prediction_id: int) -> WarningRequest:
        """The service platform's input; the time must carry a zone."""
        preferred = self.preferred_time
        if preferred is not None and preferred.tzinfo is None:
            raise InvalidInput("preferred_time needs a time zone (e.g. Z)", field="preferred_time")
        return WarningRequest(
            prediction_id=prediction_id,
            description=self.description,
            preferred_ms=int(preferred.timestamp() * 1000) if preferred else 0,
            principle=self.principle,
            min_performance=self.min_performance,
        )


class AuthorizationBody(BaseModel):
    """The owner's answer to a tenant's request."""

    model_config = _STRICT

    approve: bool
    note: str = Field(default="", max_length=1000)


class NoteBody(BaseModel):
    """A reason or note recorded in the job's thread."""

    model_config = _STRICT

    note: str = Field(default="", max_length=1000)


class ResponseBody(BaseModel):
    """An invited engineer's answer: availability, and if available a quote and location."""

    model_config = _STRICT

    available: bool
    quote: float | None = Field(default=None, gt=0, le=100_000)
    """GBP for the whole job."""
    location: Location | None = None
    """Where the engineer is now (the low-carbon ranking measures from here)."""
    note: str = Field(default="", max_length=2000)

    def response_input(self) -> ResponseInput:
        """The service platform's form of this answer."""
        return ResponseInput(
            available=self.available,
            quote=self.quote,
            lat=self.location.lat if self.location else None,
            lon=self.location.lon if self.location else None,
            note=self.note,
        )


class SelectBody(BaseModel):
    """The owner's choice from the shortlist."""

    model_config = _STRICT

    engineer_id: str = Field(min_length=1, max_length=64)
    principle: Principle | None = None
    """The ranking the choice was made from (default: the request's)."""


class CompletionBody(BaseModel):
    """The engineer's report of the work."""

    model_config = _STRICT

    cause: str = Field(min_length=1, max_length=2000, examples=["ignition electrode worn"])
    actions: str = Field(min_length=1, max_length=2000, examples=["replaced electrode, tested"])
    parts: list[str] = Field(default_factory=list, max_length=50)


class EvaluationBody(BaseModel):
    """The end user's rating, with the one-time token they were sent."""

    model_config = _STRICT

    token: str = Field(min_length=10, max_length=200)
    cs: int = Field(ge=1, le=5)
    """Customer satisfaction, 1-5."""
    sq: int = Field(ge=1, le=5)
    """Service quality, 1-5."""
    comment: str = Field(default="", max_length=2000)


class EngineerAvailability(BaseModel):
    """An engineer taking work, or not."""

    model_config = _STRICT

    available: bool


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Report(_Section):
    poll_interval_s: float | None = Field(default=None, gt=0, le=86_400)
    batch_interval_s: float | None = Field(default=None, gt=0, le=86_400)
    heartbeat_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    comms_lost_after: int | None = Field(default=None, ge=1, le=1000)
    deadband: dict[str, float] | None = Field(default=None, max_length=200)


class _Mqtt(_Section):
    keepalive_s: int | None = Field(default=None, ge=10, le=65_535)


class _Outbox(_Section):
    max_bytes: int | None = Field(default=None, ge=1024 * 1024, le=2**40)
    resend_after_s: float | None = Field(default=None, gt=0, le=86_400)


class _Modbus(_Section):
    profile: str | None = Field(default=None, min_length=1, max_length=300)
    timeout_s: float | None = Field(default=None, gt=0, le=60)
    retries: int | None = Field(default=None, ge=0, le=10)


class _Health(_Section):
    interval_s: float | None = Field(default=None, gt=0, le=86_400)


class RemoteSettings(_Section):
    """What the cloud may set on a gateway (`protocols.remote_config`); the gateway checks
    the whole merged configuration again before it keeps it."""

    report: _Report | None = None
    mqtt: _Mqtt | None = None
    outbox: _Outbox | None = None
    modbus: _Modbus | None = None
    health: _Health | None = None

    def document(self) -> dict[str, dict[str, Any]]:
        """As a remote configuration document (unset settings left out)."""
        return {
            name: values for name, values in self.model_dump(exclude_none=True).items() if values
        }


class ConfigLayerBody(BaseModel):
    """Remote settings for a layer; an empty map removes the layer."""

    model_config = _STRICT

    settings: RemoteSettings = Field(
        examples=[{"report": {"poll_interval_s": 30, "batch_interval_s": 120}}]
    )
