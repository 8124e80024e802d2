"""Injected communication faults: dropped, corrupted and slow replies.

Set at run time through the control endpoint (``POST /comms``). Decisions come from a seeded
random generator so a failing test can be replayed. Corruption flips one bit of an RTU reply,
which the master sees as a CRC error; Modbus TCP has no checksum of its own to fail, so over
TCP only drops and delays apply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_DELAY_MS = 60_000


@dataclass(frozen=True, slots=True)
class CommsFaultSettings:
    """Probabilities of dropping or corrupting a reply, and a delay added to each reply."""

    drop: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
        delay = self.delay_ms
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_DELAY_MS
        ):
            raise ValueError(f"delay_ms must be between 0 and {MAX_DELAY_MS}, got {delay!r}")


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """What to do with one reply."""

    drop: bool
    corrupt: bool
    delay_s: float


@dataclass(slots=True)
class CommsFaults:
    """Current fault settings, the decisions taken and their counts."""

    settings: CommsFaultSettings = field(default_factory=CommsFaultSettings)
    seed: int = 0
    dropped: int = 0
    corrupted: int = 0
    delayed: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"comms:{self.seed}")

    def plan(self, *, can_corrupt: bool = True) -> ReplyPlan:
        """Decide the fate of the next reply."""
        s = self.settings
        drop = s.drop > 0 and self._rng.random() < s.drop
        corrupt = can_corrupt and not drop and s.corrupt > 0 and self._rng.random() < s.corrupt
        self.dropped += drop
        self.corrupted += corrupt
        self.delayed += s.delay_ms > 0 and not drop
        return ReplyPlan(drop=drop, corrupt=corrupt, delay_s=s.delay_ms / 1000)

    def corrupt_bytes(self, data: bytes) -> bytes:
        """`data` with one bit flipped at random."""
        index = self._rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[index] ^= 1 << self._rng.randrange(8)
        return bytes(flipped)

    def snapshot(self) -> dict[str, float | int]:
        """Settings and counters, JSON-friendly."""
        s = self.settings
        return {
            "drop": s.drop,
            "corrupt": s.corrupt,
            "delay_ms": s.delay_ms,
            "dropped": self.dropped,
            "corrupted": self.corrupted,
            "delayed": self.delayed,
        }
