"""Parsing a contractor list (CSV) into validated `EngineerSpec` rows; no database here.

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
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from cloud.errors import InvalidInput
from cloud.service.engineers import (
    PRICE_JOBS_PREFIX,
    PRICE_PREFIX,
    SKILL,
    EngineerSpec,
    show,
)

MAX_ROWS = 10_000
MAX_BYTES = 5 * 1024 * 1024
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

_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


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
            self.errors.append((column, f"must be a whole number >= 0, got {show(text)}"))
            return empty
        return int(text)

    def number(self, column: str, *, required: bool) -> float | None:
        text = self.text(column)
        if not text:
            if required:
                self.errors.append((column, "is required"))
            return None
        if not _FLOAT.fullmatch(text):
            self.errors.append((column, f"must be a number, got {show(text)}"))
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


def parse_rows(text: str | bytes) -> tuple[list[tuple[int, EngineerSpec]], list[RowError]]:
    """Valid rows as (file line, spec) and row errors; `InvalidInput` for an unusable file."""
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
    specs, errors = parse_rows(text)
    return [spec for _, spec in specs], errors
