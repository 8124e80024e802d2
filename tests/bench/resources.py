"""CPU seconds and resident memory of processes, from /proc (Linux), for `make bench`.

A `Meter` follows named groups of processes (the broker, the ingest workers with their
children, the database's server processes) while a phase runs: CPU seconds used in it and
the peak resident set seen (sampled every `every` seconds).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

Pids = Callable[[], set[int]]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the state on (field 3)


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    fields = _stat(pid)
    return 0 if fields is None else int(fields[21]) * PAGE


def tree(root: int) -> set[int]:
    """`root` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    found = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def named(comm: str) -> set[int]:
    """Every process whose command name is `comm` (e.g. the PostgreSQL server's)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


class Meter:
    """CPU seconds and peak RSS of each group while the `async with` block runs."""

    def __init__(self, groups: dict[str, Pids], every: float = 0.5) -> None:
        self.groups = groups
        self.every = every
        self.cpu: dict[str, float] = {}
        self.peak_rss: dict[str, int] = dict.fromkeys(groups, 0)
        self._start: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        for name, pids in self.groups.items():
            now = {pid: cpu_seconds(pid) for pid in pids()}
            self._start.setdefault(name, {})
            for pid, cpu in now.items():
                self._start[name].setdefault(pid, cpu)
            self._last.setdefault(name, {}).update(now)
            self.peak_rss[name] = max(self.peak_rss[name], sum(rss_bytes(p) for p in now))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self._sample()

    async def __aenter__(self) -> Meter:
        self._sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sample()
        for name in self.groups:
            start, last = self._start.get(name, {}), self._last.get(name, {})
            self.cpu[name] = sum(last[pid] - start.get(pid, 0.0) for pid in last)
