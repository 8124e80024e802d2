"""Engineer profiles (the engineer's user twin) and bulk import of a contractor list.

An engineer is a `User` with role ``engineer`` plus an `Engineer` row (qualifications, home,
the history behind AR, CS and SQ) and one `EngineerPrice` row per service type they have
priced before. `upsert_engineer` writes one profile; `import_engineers` writes a whole list,
such as the manufacturer's existing contractor list, from CSV.

The contractor-list CSV is parsed in `cloud.service.engineer_csv` and imported in
`cloud.service.engineer_import`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.auth import DEFAULT_HASHER, USER_ID, PasswordHasher, check_password
from cloud.domain import Role
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.models import Engineer, EngineerPrice, User

log = logging.getLogger(__name__)

SKILL = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""Skill, language, training and service-type tokens, e.g. ``boiler_repair``, ``cy``."""
GAS_SAFE_NUMBER = re.compile(r"[0-9]{6,7}")
"""Gas Safe Register numbers are 6 or 7 digits."""

MAX_COUNT = 2**31 - 1
"""History counts are 32-bit integer columns."""
MAX_NAME = 200
UNUSABLE_PASSWORD = "!no-password"
"""A password hash no password matches (`cloud.auth.verify_password` cannot parse it)."""

PRICE_PREFIX = "price_"
PRICE_JOBS_PREFIX = "price_jobs_"
"""Field names of prices in errors (the CSV columns of `cloud.service.engineer_csv`)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class EngineerSpec:
    """One engineer's profile, validated; `InvalidInput` names the offending field.

    Field names in errors are the CSV column names (``id``, ``name``, ``price_<type>``...).
    """

    user_id: str
    display_name: str
    gas_safe_number: str
    skills: frozenset[str]
    languages: frozenset[str]
    training: frozenset[str]
    home_lat: float
    home_lon: float
    invitations: int = 0
    accepted: int = 0
    evaluated: int = 0
    cs_sum: float = 0.0
    sq_sum: float = 0.0
    prices: Mapping[str, float] = field(default_factory=dict)
    """Service type -> average price (GBP)."""
    price_jobs: Mapping[str, int] = field(default_factory=dict)
    """Service type -> jobs behind that average; after construction, one per price."""

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not USER_ID.fullmatch(self.user_id):
            raise InvalidInput(
                "user id must be 3-64 characters: a-z, 0-9 and . _ @ - (starting with a "
                "letter or digit)",
                field="id",
            )
        name = self.display_name
        if not isinstance(name, str) or len(name) > MAX_NAME or _CONTROL.search(name):
            raise InvalidInput(
                f"name must be at most {MAX_NAME} characters, without control characters",
                field="name",
            )
        number = self.gas_safe_number
        if not isinstance(number, str) or not GAS_SAFE_NUMBER.fullmatch(number):
            raise InvalidInput(
                f"Gas Safe number must be 6-7 digits, got {show(self.gas_safe_number)}",
                field="gas_safe_number",
            )
        for name in ("skills", "languages", "training"):
            object.__setattr__(self, name, _tokens(name, getattr(self, name)))
        if not self.skills:
            raise InvalidInput("at least one skill is required", field="skills")
        _check_degrees("home_lat", self.home_lat, 90.0)
        _check_degrees("home_lon", self.home_lon, 180.0)
        for name in ("invitations", "accepted", "evaluated"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
                raise InvalidInput(f"{name} must be a whole number >= 0", field=name)
        if self.accepted > self.invitations:
            raise InvalidInput(
                f"accepted ({self.accepted}) exceeds invitations ({self.invitations})",
                field="accepted",
            )
        for name in ("cs_sum", "sq_sum"):
            _check_score_sum(name, getattr(self, name), self.evaluated)
        self._check_prices()

    def _check_prices(self) -> None:
        prices: dict[str, float] = {}
        for service_type, average in self.prices.items():
            column = PRICE_PREFIX + str(service_type)
            if not isinstance(service_type, str) or not SKILL.fullmatch(service_type):
                raise InvalidInput(f"service type must match {SKILL.pattern}", field=column)
            if not _is_number(average) or average <= 0:
                raise InvalidInput(
                    f"average price must be a positive amount, got {show(average)}", field=column
                )
            prices[service_type] = float(average)
        jobs: dict[str, int] = {}
        for service_type, count in self.price_jobs.items():
            column = PRICE_JOBS_PREFIX + str(service_type)
            if service_type not in prices:
                raise InvalidInput("a job count needs an average price", field=column)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
                raise InvalidInput(f"must be a whole number >= 1, got {show(count)}", field=column)
            jobs[service_type] = count
        for service_type in prices:
            jobs.setdefault(service_type, max(1, self.evaluated))
        object.__setattr__(self, "prices", MappingProxyType(prices))
        object.__setattr__(self, "price_jobs", MappingProxyType(jobs))


def show(value: object) -> str:
    """`value` as quoted in an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: object) -> TypeGuard[int | float]:
    """A real, finite number (bools are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _tokens(name: str, values: object) -> frozenset[str]:
    if isinstance(values, str) or not isinstance(values, frozenset | set | list | tuple):
        raise InvalidInput(f"{name} must be a set of tokens", field=name)
    for token in values:
        if not isinstance(token, str) or not SKILL.fullmatch(token):
            raise InvalidInput(
                f"{show(token)} is not a valid token: a-z, 0-9 and _, starting with a letter, "
                "at most 32 characters",
                field=name,
            )
    return frozenset(values)


def _check_degrees(name: str, value: object, limit: float) -> None:
    if not _is_number(value) or not -limit <= value <= limit:
        raise InvalidInput(f"{name} must be within +-{limit:g} degrees", field=name)


def _check_score_sum(name: str, value: object, evaluated: int) -> None:
    if not _is_number(value):
        raise InvalidInput(f"{name} must be a number", field=name)
    total = float(value)
    slack = 1e-9 * max(1, evaluated)
    if evaluated == 0 and total != 0:
        raise InvalidInput(f"{name} must be 0 when no job was evaluated", field=name)
    if not evaluated - slack <= total <= 5 * evaluated + slack:
        raise InvalidInput(
            f"{name} must be between {evaluated} and {5 * evaluated} "
            f"({evaluated} evaluated jobs scored 1-5), got {total:g}",
            field=name,
        )


# --- One engineer ---------------------------------------------------------------------------


def upsert_engineer(
    session: Session,
    spec: EngineerSpec,
    *,
    now_ms: int,
    password: str | None = None,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> Engineer:
    """Create or update one engineer's profile in the caller's transaction.

    A missing user is created with role engineer and `password`, or with no usable password
    if None. An existing user's password is never changed here (use `set_password`), so
    upserting cannot take over an account. `Conflict` if the id belongs to another role. The
    engineer's price rows are replaced by `spec.prices`; ``available`` is left as it is.
    """
    user = session.get(User, spec.user_id)
    engineer = session.get(Engineer, spec.user_id)
    if user is None:
        if password is not None:
            check_password(password)
        hashed = UNUSABLE_PASSWORD if password is None else hasher.hash(password)
        session.add(new_user(spec, now_ms, hashed))
    else:
        apply_user(user, spec)
    flush(session, f"user {spec.user_id} was created concurrently; try again")
    session.execute(delete(EngineerPrice).where(EngineerPrice.engineer_id == spec.user_id))
    engineer = apply_engineer(session, spec, engineer, now_ms)
    session.flush()
    session.add_all(price_rows(spec))
    session.flush()
    log.info("engineer %s saved", spec.user_id)
    return engineer


def keep_history(session: Session, spec: EngineerSpec) -> EngineerSpec:
    """`spec` with the stored engineer's history and prices instead of its own, if stored."""
    engineer = session.get(Engineer, spec.user_id)
    if engineer is None:
        return spec
    _, prices = load_engineer(session, spec.user_id)
    return dataclasses.replace(
        spec,
        invitations=engineer.invitations,
        accepted=engineer.accepted,
        evaluated=engineer.evaluated,
        cs_sum=engineer.cs_sum,
        sq_sum=engineer.sq_sum,
        prices={p.service_type: p.average for p in prices},
        price_jobs={p.service_type: max(1, p.jobs) for p in prices},
    )


def load_engineer(session: Session, user_id: str) -> tuple[Engineer, list[EngineerPrice]]:
    """An engineer and their price rows (by service type); `NotFound` if there is none."""
    engineer = session.get(Engineer, user_id)
    if engineer is None:
        raise NotFound(f"engineer {user_id} not found", user_id=user_id)
    prices = session.scalars(
        select(EngineerPrice)
        .where(EngineerPrice.engineer_id == user_id)
        .order_by(EngineerPrice.service_type)
    ).all()
    return engineer, list(prices)


def list_engineers(session: Session) -> list[dict[str, Any]]:
    """Every engineer as `engineer_json` shows them, by id."""
    rows = session.execute(
        select(Engineer, User.display_name)
        .join(User, User.id == Engineer.user_id)
        .order_by(Engineer.user_id)
    ).all()
    prices: dict[str, list[EngineerPrice]] = {}
    for price in session.scalars(
        select(EngineerPrice).order_by(EngineerPrice.engineer_id, EngineerPrice.service_type)
    ):
        prices.setdefault(price.engineer_id, []).append(price)
    return [
        engineer_json(engineer, prices.get(engineer.user_id, []), name) for engineer, name in rows
    ]


def engineer_json(
    engineer: Engineer, prices: Sequence[EngineerPrice], display_name: str = ""
) -> dict[str, Any]:
    """The profile as the API shows it, with AR, CS and SQ worked out (0 without history).

    ``ar`` is a fraction (4 decimals), ``ar_pct`` a percentage (1 decimal), ``cs`` and ``sq``
    mean scores 1-5 (3 decimals).
    """
    ar = engineer.accepted / engineer.invitations if engineer.invitations else 0.0
    cs = engineer.cs_sum / engineer.evaluated if engineer.evaluated else 0.0
    sq = engineer.sq_sum / engineer.evaluated if engineer.evaluated else 0.0
    return {
        "id": engineer.user_id,
        "display_name": display_name,
        "gas_safe_number": engineer.gas_safe_number,
        "skills": sorted(str(s) for s in engineer.skills),
        "languages": sorted(str(s) for s in engineer.languages),
        "training": sorted(str(s) for s in engineer.training),
        "home": {"lat": engineer.home_lat, "lon": engineer.home_lon},
        "available": engineer.available,
        "history": {
            "invitations": engineer.invitations,
            "accepted": engineer.accepted,
            "evaluated": engineer.evaluated,
            "cs_sum": engineer.cs_sum,
            "sq_sum": engineer.sq_sum,
        },
        "figures": {
            "ar": round(ar, 4),
            "ar_pct": round(100 * ar, 1),
            "cs": round(cs, 3),
            "sq": round(sq, 3),
        },
        "prices": {
            p.service_type: {"average": p.average, "jobs": p.jobs}
            for p in sorted(prices, key=lambda p: p.service_type)
        },
    }


def new_user(spec: EngineerSpec, now_ms: int, password_hash: str) -> User:
    """A new engineer `User` from `spec`."""
    return User(
        id=spec.user_id,
        password_hash=password_hash,
        role=Role.ENGINEER.value,
        display_name=spec.display_name,
        disabled=False,
        created_ms=now_ms,
    )


def apply_user(user: User, spec: EngineerSpec) -> None:
    """Update an existing user from `spec`; `Conflict` if it is not an engineer."""
    if user.role != Role.ENGINEER.value:
        raise Conflict(
            f"user {user.id} exists with role {user.role}, not engineer",
            user_id=user.id,
            role=user.role,
        )
    if spec.display_name and user.display_name != spec.display_name:
        user.display_name = spec.display_name


def apply_engineer(
    session: Session, spec: EngineerSpec, engineer: Engineer | None, now_ms: int
) -> Engineer:
    """Create or update the `Engineer` row of `spec`."""
    if engineer is None:
        engineer = Engineer(user_id=spec.user_id, available=True, created_ms=now_ms)
        session.add(engineer)
    engineer.gas_safe_number = spec.gas_safe_number
    engineer.skills = sorted(spec.skills)
    engineer.languages = sorted(spec.languages)
    engineer.training = sorted(spec.training)
    engineer.home_lat = float(spec.home_lat)
    engineer.home_lon = float(spec.home_lon)
    engineer.invitations = spec.invitations
    engineer.accepted = spec.accepted
    engineer.evaluated = spec.evaluated
    engineer.cs_sum = float(spec.cs_sum)
    engineer.sq_sum = float(spec.sq_sum)
    engineer.updated_ms = now_ms
    return engineer


def price_rows(spec: EngineerSpec) -> list[EngineerPrice]:
    """The `EngineerPrice` rows of `spec`."""
    return [
        EngineerPrice(
            engineer_id=spec.user_id,
            service_type=service_type,
            average=average,
            jobs=spec.price_jobs[service_type],
        )
        for service_type, average in sorted(spec.prices.items())
    ]


def flush(session: Session, message: str) -> None:
    """Flush, turning a unique-key race into `Conflict` with `message`."""
    try:
        session.flush()
    except IntegrityError as exc:  # a user created concurrently since we looked
        raise Conflict(message) from exc
