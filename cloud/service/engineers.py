"""Engineer profiles (the engineer's user twin) and bulk import of a contractor list.

An engineer is a `User` with role ``engineer`` plus an `Engineer` row (qualifications, home,
the history behind AR, CS and SQ) and one `EngineerPrice` row per service type they have
priced before. `upsert_engineer` writes one profile; `import_engineers` writes a whole list,
such as the manufacturer's existing contractor list, from CSV.

CSV format
----------
UTF-8 (a byte-order mark is tolerated), comma-separated, ``"``-quoted where needed, at most
`MAX_ROWS` data rows and `MAX_BYTES` bytes. The first line is a header naming the columns, in
any order (names are case-insensitive)::

    id,name,gas_safe_number,skills,languages,training,home_lat,home_lon,invitations,accepted,evaluated,cs_sum,sq_sum,price_repair,price_jobs_repair

* required: ``id`` (login name, as `cloud.auth.USER_ID`), ``name`` (display name, may be
  empty), ``gas_safe_number`` (6-7 digits; spaces ignored), ``skills`` (at least one),
  ``home_lat`` and ``home_lon`` (degrees, WGS 84);
* optional: ``languages``, ``training`` (lists, empty = none) and the history ``invitations``,
  ``accepted``, ``evaluated`` (whole numbers, empty = 0), ``cs_sum`` and ``sq_sum`` (sums of
  the 1-5 customer-satisfaction and service-quality scores of the ``evaluated`` jobs, empty =
  0); an engineer with no history is a cold start;
* ``price_<service_type>``: the engineer's average price (GBP) for that service type, empty =
  no pricing history; ``price_jobs_<service_type>``: how many jobs that average is over
  (empty = ``max(1, evaluated)``). Any number of service types.

List cells separate tokens with ``;`` (``gas_safe;boiler_repair``); tokens are lower-cased
and must match `SKILL`. Blank lines are skipped. Any other column is an error naming it, as is
a missing required column, so a typo never silently drops data.

Every row is validated. A row's error names its file line (the header is line 1) and its
field (the CSV column, or ``row``). By default one bad row means nothing is imported and every
error is reported; ``skip_invalid`` imports the good rows and reports the bad ones. A later row
repeating an id is rejected. Rows are upserted by id, so importing the same file twice changes
nothing but ``updated_ms``; an engineer's price rows are replaced by the file's. Problems with
the file as a whole (not UTF-8, too big, bad header, broken quoting) raise `InvalidInput`.

Imported accounts get no password (they cannot log in) until an admin sets one with
``boilertwin cloud users password``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
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

MAX_ROWS = 10_000
MAX_BYTES = 5 * 1024 * 1024
MAX_COUNT = 2**31 - 1
"""History counts are 32-bit integer columns."""
MAX_NAME = 200
UNUSABLE_PASSWORD = "!no-password"
"""A password hash no password matches (`cloud.auth.verify_password` cannot parse it)."""

REQUIRED_COLUMNS = ("id", "name", "gas_safe_number", "skills", "home_lat", "home_lon")
OPTIONAL_COLUMNS = (
    "languages",
    "training",
    "invitations",
    "accepted",
    "evaluated",
    "cs_sum",
    "sq_sum",
)
PRICE_PREFIX = "price_"
PRICE_JOBS_PREFIX = "price_jobs_"

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CHUNK = 500
"""Ids per ``IN (...)`` query when importing."""


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
                f"Gas Safe number must be 6-7 digits, got {_show(self.gas_safe_number)}",
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
                    f"average price must be a positive amount, got {_show(average)}", field=column
                )
            prices[service_type] = float(average)
        jobs: dict[str, int] = {}
        for service_type, count in self.price_jobs.items():
            column = PRICE_JOBS_PREFIX + str(service_type)
            if service_type not in prices:
                raise InvalidInput("a job count needs an average price", field=column)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
                raise InvalidInput(f"must be a whole number >= 1, got {_show(count)}", field=column)
            jobs[service_type] = count
        for service_type in prices:
            jobs.setdefault(service_type, max(1, self.evaluated))
        object.__setattr__(self, "prices", MappingProxyType(prices))
        object.__setattr__(self, "price_jobs", MappingProxyType(jobs))


def _show(value: object) -> str:
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
                f"{_show(token)} is not a valid token: a-z, 0-9 and _, starting with a letter, "
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
        session.add(_new_user(spec, now_ms, hashed))
    else:
        _apply_user(user, spec)
    _flush(session, f"user {spec.user_id} was created concurrently; try again")
    session.execute(delete(EngineerPrice).where(EngineerPrice.engineer_id == spec.user_id))
    engineer = _apply_engineer(session, spec, engineer, now_ms)
    session.flush()
    session.add_all(_price_rows(spec))
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


def _new_user(spec: EngineerSpec, now_ms: int, password_hash: str) -> User:
    return User(
        id=spec.user_id,
        password_hash=password_hash,
        role=Role.ENGINEER.value,
        display_name=spec.display_name,
        disabled=False,
        created_ms=now_ms,
    )


def _apply_user(user: User, spec: EngineerSpec) -> None:
    if user.role != Role.ENGINEER.value:
        raise Conflict(
            f"user {user.id} exists with role {user.role}, not engineer",
            user_id=user.id,
            role=user.role,
        )
    if spec.display_name and user.display_name != spec.display_name:
        user.display_name = spec.display_name


def _apply_engineer(
    session: Session, spec: EngineerSpec, engineer: Engineer | None, now_ms: int
) -> Engineer:
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


def _price_rows(spec: EngineerSpec) -> list[EngineerPrice]:
    return [
        EngineerPrice(
            engineer_id=spec.user_id,
            service_type=service_type,
            average=average,
            jobs=spec.price_jobs[service_type],
        )
        for service_type, average in sorted(spec.prices.items())
    ]


def _flush(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:  # a user created concurrently since we looked
        raise Conflict(message) from exc


# --- Bulk import ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one CSV row was rejected."""

    line: int
    """File line the row starts on (the header is line 1)."""
    user_id: str | None
    """The row's id, if it had one."""
    field: str
    """CSV column at fault, or ``row`` for the row as a whole."""
    message: str

    def __str__(self) -> str:
        return f"line {self.line} (id {self.user_id or '-'}): {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What `import_engineers` did: ids written, in file order, and rows rejected."""

    imported: tuple[str, ...]
    rejected: tuple[RowError, ...]


def decode_csv(data: str | bytes) -> str:
    """The text of a CSV upload, checked for size and encoding (`InvalidInput` otherwise)."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"text is not valid Unicode (character {exc.start + 1})", field="file"
            ) from exc
    else:
        raw = data
    if len(raw) > MAX_BYTES:
        raise InvalidInput(f"file is larger than {MAX_BYTES} bytes; split it", field="file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidInput("file is UTF-16; save it as UTF-8 (CSV UTF-8)", field="file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(
            f"not UTF-8: byte 0x{raw[exc.start]:02x} on line {line}; save the file as UTF-8 "
            "(CSV UTF-8)",
            field="file",
        ) from exc
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise InvalidInput("file contains NUL characters; save it as UTF-8 text", field="file")
    return text


@dataclass(frozen=True, slots=True)
class _Columns:
    names: tuple[str, ...]
    price_types: tuple[str, ...]
    jobs_types: tuple[str, ...]


def _columns(header: list[str]) -> _Columns:
    names = tuple(h.strip().lower() for h in header)
    problems: list[str] = []
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unnamed = [str(i + 1) for i, name in enumerate(names) if not name]
    if unnamed:
        problems.append(f"column(s) {', '.join(unnamed)} have no name")
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        problems.append(f"repeated columns: {', '.join(repeated)}")
    unknown: list[str] = []
    price_types: list[str] = []
    jobs_types: list[str] = []
    for name in dict.fromkeys(n for n in names if n):
        if name in known:
            continue
        if name.startswith(PRICE_JOBS_PREFIX):
            target, found = jobs_types, name[len(PRICE_JOBS_PREFIX) :]
        elif name.startswith(PRICE_PREFIX):
            target, found = price_types, name[len(PRICE_PREFIX) :]
        else:
            unknown.append(name)
            continue
        if SKILL.fullmatch(found):
            target.append(found)
        else:
            unknown.append(name)
    if unknown:
        problems.append(
            f"unknown columns: {', '.join(unknown)} (expected {', '.join(REQUIRED_COLUMNS)}, "
            f"{', '.join(OPTIONAL_COLUMNS)}, price_<service_type>, price_jobs_<service_type>)"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        problems.append(f"missing required columns: {', '.join(missing)}")
    orphans = [PRICE_JOBS_PREFIX + t for t in jobs_types if t not in price_types]
    if orphans:
        problems.append(f"{', '.join(orphans)} without a matching price_ column")
    if problems:
        raise InvalidInput("header (line 1): " + "; ".join(problems), field="columns")
    return _Columns(names, tuple(price_types), tuple(jobs_types))


class _Row:
    """One data row's cells, collecting every malformed cell before the spec is built."""

    def __init__(self, cells: dict[str, str]) -> None:
        self.cells = cells
        self.errors: list[tuple[str, str]] = []

    def text(self, column: str) -> str:
        return self.cells.get(column, "")

    def tokens(self, column: str) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.text(column).split(";") if t.strip())

    def count(self, column: str, empty: int = 0) -> int:
        text = self.text(column)
        if not text:
            return empty
        if not _INT.fullmatch(text):
            self.errors.append((column, f"must be a whole number >= 0, got {_show(text)}"))
            return empty
        return int(text)

    def number(self, column: str, *, required: bool) -> float | None:
        text = self.text(column)
        if not text:
            if required:
                self.errors.append((column, "is required"))
            return None
        if not _FLOAT.fullmatch(text):
            self.errors.append((column, f"must be a number, got {_show(text)}"))
            return None
        return float(text)


def _spec(row: _Row, columns: _Columns) -> EngineerSpec | None:
    """The row's spec; None if a cell is malformed (`row.errors` says which), `InvalidInput`
    for the first rule it breaks."""
    lat = row.number("home_lat", required=True)
    lon = row.number("home_lon", required=True)
    counts = {name: row.count(name) for name in ("invitations", "accepted", "evaluated")}
    sums = {name: row.number(name, required=False) or 0.0 for name in ("cs_sum", "sq_sum")}
    prices: dict[str, float] = {}
    for service_type in columns.price_types:
        price = row.number(PRICE_PREFIX + service_type, required=False)
        if price is not None:
            prices[service_type] = price
    jobs: dict[str, int] = {}
    for service_type in columns.jobs_types:
        count = row.count(PRICE_JOBS_PREFIX + service_type, empty=-1)
        if count != -1:
            jobs[service_type] = count
    if row.errors or lat is None or lon is None:
        return None
    return EngineerSpec(
        user_id=row.text("id"),
        display_name=row.text("name"),
        gas_safe_number=row.text("gas_safe_number").replace(" ", ""),
        skills=row.tokens("skills"),
        languages=row.tokens("languages"),
        training=row.tokens("training"),
        home_lat=lat,
        home_lon=lon,
        invitations=counts["invitations"],
        accepted=counts["accepted"],
        evaluated=counts["evaluated"],
        cs_sum=sums["cs_sum"],
        sq_sum=sums["sq_sum"],
        prices=prices,
        price_jobs=jobs,
    )


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first file line, cells) of each CSV record; blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"line {reader.line_num}: bad CSV: {exc}", field="file") from exc
        start, end = end + 1, reader.line_num
        if any(cell.strip() for cell in record):
            yield start, record


def _parse(text: str | bytes) -> tuple[list[tuple[int, EngineerSpec]], list[RowError]]:
    records = _records(decode_csv(text))
    first = next(records, None)
    if first is None:
        raise InvalidInput("file is empty: a header row is required", field="columns")
    line, header = first
    if line != 1:
        raise InvalidInput("the header must be on line 1", field="columns")
    columns = _columns(header)
    specs: list[tuple[int, EngineerSpec]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for rows, (line, record) in enumerate(records, start=1):
        if rows > MAX_ROWS:
            raise InvalidInput(f"more than {MAX_ROWS} rows; split the file", field="file")
        cells = dict(zip(columns.names, (c.strip() for c in record), strict=False))
        user_id = cells.get("id") or None
        if len(record) != len(columns.names):
            message = f"has {len(record)} fields, the header has {len(columns.names)}"
            errors.append(RowError(line, user_id, "row", message))
            continue
        if user_id is not None:
            if user_id in seen:
                message = f"duplicate id {user_id}: first on line {seen[user_id]}"
                errors.append(RowError(line, user_id, "id", message))
                continue
            seen[user_id] = line
        row = _Row(cells)
        try:
            spec = _spec(row, columns)
        except InvalidInput as exc:
            row.errors.append((str(exc.context.get("field", "row")), exc.detail))
            spec = None
        if spec is not None:
            specs.append((line, spec))
        errors.extend(RowError(line, user_id, column, message) for column, message in row.errors)
    return specs, errors


def parse_csv(text: str | bytes) -> tuple[list[EngineerSpec], list[RowError]]:
    """The valid rows of a contractor CSV (module docstring) and an error per invalid row.

    `InvalidInput` when the file as a whole is unusable (encoding, size, header, quoting).
    """
    specs, errors = _parse(text)
    return [spec for _, spec in specs], errors


def import_engineers(
    session: Session, text: str | bytes, *, now_ms: int, skip_invalid: bool = False
) -> ImportReport:
    """Upsert every engineer of a contractor CSV in the caller's transaction.

    Nothing is written if any row is invalid, unless `skip_invalid`. An id already taken by a
    user with another role is a row error. `InvalidInput` when the file as a whole is unusable.
    """
    specs, errors = _parse(text)
    good: list[tuple[int, EngineerSpec]] = []
    for chunk in _chunks(specs):
        ids = [s.user_id for _, s in chunk]
        roles = {
            user.id: user.role
            for user in session.execute(select(User.id, User.role).where(User.id.in_(ids)))
        }
        for line, spec in chunk:
            role = roles.get(spec.user_id, Role.ENGINEER.value)
            if role == Role.ENGINEER.value:
                good.append((line, spec))
            else:
                message = f"user {spec.user_id} exists with role {role}, not engineer"
                errors.append(RowError(line, spec.user_id, "id", message))
    errors.sort(key=lambda e: e.line)
    if errors and not skip_invalid:
        log.warning("engineer import refused: %d invalid rows", len(errors))
        return ImportReport((), tuple(errors))
    for chunk in _chunks(good):
        _write_chunk(session, [spec for _, spec in chunk], now_ms)
    log.info("imported %d engineers, rejected %d rows", len(good), len(errors))
    return ImportReport(tuple(spec.user_id for _, spec in good), tuple(errors))


def _chunks(items: list[tuple[int, EngineerSpec]]) -> Iterator[list[tuple[int, EngineerSpec]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _write_chunk(session: Session, specs: list[EngineerSpec], now_ms: int) -> None:
    """Upsert `specs` with a handful of statements rather than a few per engineer."""
    ids = [spec.user_id for spec in specs]
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))}
    engineers = {
        e.user_id: e for e in session.scalars(select(Engineer).where(Engineer.user_id.in_(ids)))
    }
    for spec in specs:
        user = users.get(spec.user_id)
        if user is None:
            session.add(_new_user(spec, now_ms, UNUSABLE_PASSWORD))
        else:
            _apply_user(user, spec)  # re-checks the role inside this transaction
    _flush(session, "engineers were created concurrently by someone else; try again")
    session.execute(delete(EngineerPrice).where(EngineerPrice.engineer_id.in_(ids)))
    for spec in specs:
        _apply_engineer(session, spec, engineers.get(spec.user_id), now_ms)
    session.flush()
    session.add_all([row for spec in specs for row in _price_rows(spec)])
    session.flush()
