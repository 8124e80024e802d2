"""Bulk registration: ``cloud devices import FILE`` for production lines and fleet simulators.

The file is CSV with a header. Columns: ``id`` and ``public_key`` (the gateway's raw Ed25519
public key, 32 bytes as 64 hex digits or as base64) are required; ``model``, ``serial``,
``install_date`` (YYYY-MM-DD), ``lat``, ``lon`` and ``address`` are optional. Every row is
checked before anything is written, and every problem is reported at once with its line
number; the import is all or nothing, in one transaction (10,000 devices take seconds, not
the hours of one ``devices add`` each).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.errors import CloudError, InvalidInput
from cloud.models import Device
from cloud.registry import Location, add_device, check_device_id
from protocols.cose import public_key_from_raw
from protocols.errors import ProtocolError

REQUIRED = ("id", "public_key")
OPTIONAL = ("model", "serial", "install_date", "lat", "lon", "address")
MAX_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device to register, as read from the file."""

    line: int
    device_id: str
    public_key: Ed25519PublicKey
    model: str | None = None
    serial: str | None = None
    install_date: str | None = None
    location: Location | None = None
    address: str | None = None


class ImportRejected(CloudError):
    """The file cannot be imported; `problems` lists every reason, by line."""

    status = 422
    title = "Import rejected"

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:50]
        more = f"\n... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__("\n".join(shown) + more)
        self.problems = problems


def parse_key(text: str) -> Ed25519PublicKey:
    """A raw Ed25519 public key from 64 hex digits or base64 (standard or URL-safe)."""
    text = text.strip()
    try:
        if len(text) == 64:
            raw = bytes.fromhex(text)
        else:
            urlsafe = text.replace("+", "-").replace("/", "_")
            raw = base64.urlsafe_b64decode(urlsafe + "=" * (-len(urlsafe) % 4))
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput("public_key is neither 64 hex digits nor base64") from exc
    try:
        return public_key_from_raw(raw)
    except ProtocolError as exc:
        raise InvalidInput(f"public_key is not an Ed25519 public key: {exc}") from exc


def read_rows(text: str) -> list[DeviceRow]:
    """Every row of the CSV `text`; `ImportRejected` with every problem found."""
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    problems = []
    if missing:
        problems.append(f"line 1: missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(
            f"line 1: unknown column(s) {', '.join(unknown)} "
            f"(known: {', '.join(REQUIRED + OPTIONAL)})"
        )
    if problems:
        raise ImportRejected(problems)
    rows: list[DeviceRow] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if len(rows) >= MAX_ROWS:
            raise ImportRejected([f"line {line}: more than {MAX_ROWS:,} devices in one file"])
        try:
            row = _row(line, record)
        except InvalidInput as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if row.device_id in seen:
            problems.append(f"line {line}: {row.device_id} is also on line {seen[row.device_id]}")
            continue
        seen[row.device_id] = line
        rows.append(row)
    if problems:
        raise ImportRejected(problems)
    if not rows:
        raise ImportRejected(["the file holds no devices"])
    return rows


def _row(line: int, record: dict[str, str | None]) -> DeviceRow:
    if None in record:
        raise InvalidInput("more fields than columns")
    values = {k: (v or "").strip() or None for k, v in record.items()}
    device_id = check_device_id(values["id"] or "")
    if values["public_key"] is None:
        raise InvalidInput("public_key is empty")
    lat, lon = values.get("lat"), values.get("lon")
    if (lat is None) != (lon is None):
        raise InvalidInput("give both lat and lon, or neither")
    return DeviceRow(
        line=line,
        device_id=device_id,
        public_key=parse_key(values["public_key"]),
        model=values.get("model"),
        serial=values.get("serial"),
        install_date=values.get("install_date"),
        location=Location.parse(f"{lat},{lon}") if lat is not None else None,
        address=values.get("address"),
    )


def register_all(session: Session, rows: Iterable[DeviceRow], *, now_ms: int, actor: str) -> int:
    """Register every row in the caller's transaction; `ImportRejected` (nothing written) if
    any id is already registered or any value is refused."""
    rows = list(rows)
    ids = [r.device_id for r in rows]
    existing: set[str] = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        existing.update(session.scalars(select(Device.id).where(Device.id.in_(chunk))))
    problems = [
        f"line {r.line}: {r.device_id} is already registered"
        for r in rows
        if r.device_id in existing
    ]
    if problems:
        raise ImportRejected(problems)
    for row in rows:
        try:
            add_device(
                session,
                row.device_id,
                row.public_key,
                now_ms=now_ms,
                actor=actor,
                model=row.model,
                serial=row.serial,
                install_date=row.install_date,
                location=row.location,
                address=row.address,
                known_new=True,
            )
        except InvalidInput as exc:
            problems.append(f"line {row.line}: {exc}")
    if problems:
        raise ImportRejected(problems)
    return len(rows)
