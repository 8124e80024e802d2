"""Exports of telemetry and the digital thread, as CSV or Parquet, streamed: rows are read
`CHUNK` at a time in their own session and written out as they come, so an export of a
fleet's month holds one chunk in memory, not the month.

CSV: a header row, then one row per reading or event (UTF-8, RFC 4180 quoting; times as
RFC 3339 UTC and as ms since the epoch). Parquet (pyarrow): the same columns, typed, one row
group per chunk. Who may export what is the API's business (`cloud.api.routes.exports`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.models import Sample, ThreadEvent

CHUNK = 5_000
FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


@dataclass(frozen=True, slots=True)
class Table:
    """What is exported: columns (name, arrow type) and how a row is read."""

    name: str
    columns: tuple[tuple[str, pa.DataType], ...]


TELEMETRY = Table(
    "telemetry",
    (
        ("device_id", pa.string()),
        ("point", pa.string()),
        ("time", pa.string()),
        ("ts_ms", pa.int64()),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("quality", pa.string()),
        ("seq", pa.int64()),
    ),
)
THREAD = Table(
    "thread",
    (
        ("id", pa.int64()),
        ("device_id", pa.string()),
        ("time", pa.string()),
        ("ts_ms", pa.int64()),
        ("kind", pa.string()),
        ("actor", pa.string()),
        ("subject", pa.string()),
        ("data", pa.string()),
        ("chain_seq", pa.int64()),
        ("hash", pa.string()),
    ),
)


def telemetry_query(
    devices: Sequence[str] | None, points: Sequence[str] | None, since_ms: int, until_ms: int
) -> Select[Sample]:
    query = select(Sample).where(Sample.ts_ms >= since_ms, Sample.ts_ms < until_ms)
    if devices is not None:
        query = query.where(Sample.device_id.in_(devices))
    if points:
        query = query.where(Sample.point.in_(points))
    return query.order_by(Sample.device_id, Sample.ts_ms, Sample.id)


def thread_query(
    devices: Sequence[str] | None, kinds: Sequence[str] | None, since_ms: int, until_ms: int
) -> Select[ThreadEvent]:
    query = select(ThreadEvent).where(ThreadEvent.ts_ms >= since_ms, ThreadEvent.ts_ms < until_ms)
    if devices is not None:
        query = query.where(ThreadEvent.device_id.in_(devices))
    if kinds is not None:
        query = query.where(ThreadEvent.kind.in_(kinds))
    return query.order_by(ThreadEvent.id)


def _time(ts_ms: int) -> str:
    try:
        moment = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def telemetry_row(s: Sample) -> tuple[Any, ...]:
    return (s.device_id, s.point, _time(s.ts_ms), s.ts_ms, s.num, s.text, s.quality, s.seq)


def thread_row(e: ThreadEvent) -> tuple[Any, ...]:
    data = json.dumps(e.data or {}, sort_keys=True, ensure_ascii=False)
    return (
        e.id,
        e.device_id,
        _time(e.ts_ms),
        e.ts_ms,
        e.kind,
        e.actor,
        e.subject,
        data,
        e.chain_seq,
        e.hash,
    )


def chunks(
    sessions: sessionmaker[Session], query: Select[Any], to_row: Callable[[Any], tuple[Any, ...]]
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of `query`, `CHUNK` at a time, from a session of its own (``yield_per``: a
    server-side cursor on PostgreSQL, so the rows are never all in memory)."""
    with sessions() as session:
        batch: list[tuple[Any, ...]] = []
        for row in session.scalars(query.execution_options(yield_per=CHUNK)):
            batch.append(to_row(row))
            if len(batch) >= CHUNK:
                yield batch
                batch = []
        if batch:
            yield batch


def as_csv(table: Table, batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([name for name, _ in table.columns])
    yield out.getvalue().encode()
    for batch in batches:
        out.seek(0)
        out.truncate()
        writer.writerows(("" if v is None else v for v in row) for row in batch)
        yield out.getvalue().encode()


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are taken out after each row group."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        taken, self.parts = b"".join(self.parts), []
        return taken


def as_parquet(table: Table, batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    schema = pa.schema([pa.field(name, kind) for name, kind in table.columns])
    sink = _Sink()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
        for batch in batches:
            columns = list(zip(*batch, strict=True))
            arrays = [
                pa.array(values, type=kind)
                for values, (_, kind) in zip(columns, table.columns, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield sink.take()
    yield sink.take()  # the footer (an export with no rows is still a valid file)


def stream(table: Table, form: str, batches: Iterator[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    return as_csv(table, batches) if form == "csv" else as_parquet(table, batches)
