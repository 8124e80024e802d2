"""The agent's one SQLite database, and what writing it costs the SD card.

One file (``state_dir/outbox.db``) holds the outbox, the agent's epoch and seq high-water
mark, the command ledger and the reset log, so a single commit makes all of them durable
together. It runs in WAL mode with ``synchronous=FULL``: a commit is on the card when
`Store.commit` returns.

Flash wear is a budget, so the store counts the bytes it writes: WAL growth after every
commit (frames of page size + 24 bytes), plus the pages copied into the database when the WAL
is checkpointed. Automatic checkpoints are off; `commit` truncates the WAL once it passes
`checkpoint_bytes`, which keeps the WAL small and the count exact.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import OutboxError

log = logging.getLogger(__name__)

DAY_MS = 86_400_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    envelope BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    command_id TEXT PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resets (ts_ms INTEGER NOT NULL);
"""


@dataclass(slots=True)
class FlashFigures:
    """Bytes written to storage by the store."""

    total: int = 0
    today: int = 0
    day: int = 0
    """UTC day number `today` belongs to."""
    commits: int = 0
    checkpoints: int = 0


class Store:
    """The open database; `commit` is the only way anything becomes durable."""

    def __init__(
        self,
        path: Path,
        *,
        wall_ms: Callable[[], int],
        checkpoint_bytes: int = 1024 * 1024,
        device_id: str | None = None,
    ) -> None:
        self.path = path
        self.wal_path = Path(f"{path}-wal")
        self._wall_ms = wall_ms
        self._checkpoint_bytes = checkpoint_bytes
        self._device_id = device_id
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self.db.executescript(SCHEMA)
            self.page_size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
            integrity = self.db.execute("PRAGMA quick_check").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open {path}: {exc}", device_id=device_id) from exc
        if integrity != "ok":
            raise OutboxError(f"{path} is damaged: {integrity}", device_id=device_id)
        self.flash = FlashFigures(day=wall_ms() // DAY_MS)
        self._wal_size = self._size(self.wal_path)
        self._in_transaction = False

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    def begin(self) -> None:
        """Open a write transaction if none is open (changes wait for `commit`)."""
        if not self._in_transaction:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"cannot write {self.path}: {exc}", device_id=self._device_id
                ) from exc
            self._in_transaction = True

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run one statement inside the current write transaction (opening one)."""
        self.begin()
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            self.rollback()
            raise OutboxError(
                f"write to {self.path} failed: {exc}", device_id=self._device_id
            ) from exc

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Read rows (sees the open transaction's changes)."""
        return self.db.execute(sql, params).fetchall()

    def rollback(self) -> None:
        """Drop the open transaction's changes."""
        if self._in_transaction:
            self._in_transaction = False
            self.db.execute("ROLLBACK")

    def commit(self) -> None:
        """Make the open transaction durable and count what it wrote."""
        if not self._in_transaction:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise OutboxError(
                f"commit to {self.path} failed: {exc}", device_id=self._device_id
            ) from exc
        finally:
            self._in_transaction = False
        self.flash.commits += 1
        size = self._size(self.wal_path)
        self._count(size - self._wal_size if size >= self._wal_size else size)
        self._wal_size = size
        if size >= self._checkpoint_bytes:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it."""
        # TRUNCATE reports 0 frames copied once it has emptied the WAL: count with PASSIVE first
        _busy, _frames, copied = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            log.warning("%s: WAL checkpoint was blocked", self._device_id)
        self.flash.checkpoints += 1
        self._count(max(copied, 0) * self.page_size)
        self._wal_size = self._size(self.wal_path)

    def _count(self, written: int) -> None:
        day = self._wall_ms() // DAY_MS
        if day != self.flash.day:
            self.flash.day, self.flash.today = day, 0
        self.flash.total += written
        self.flash.today += written

    def close(self) -> None:
        """Commit anything open, fold the WAL in, close the file."""
        try:
            self.commit()
            self.checkpoint()
        except (OutboxError, sqlite3.Error) as exc:
            log.warning("%s: closing %s: %s", self._device_id, self.path, exc)
        finally:
            self.db.close()

    # -- small persistent values ------------------------------------------------------------

    def get_meta(self, key: str, default: int = 0) -> int:
        """A persisted integer."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else default

    def set_meta(self, key: str, value: int) -> None:
        """Set a persisted integer (durable at the next `commit`)."""
        self.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
