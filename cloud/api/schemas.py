"""Request and response bodies (pydantic v2; unknown fields are refused)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from cloud.domain import Role

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

    name: str = Field(min_length=1, max_length=32, examples=["restart"])
    args: dict[str, Arg] = Field(default_factory=dict, max_length=16)
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
