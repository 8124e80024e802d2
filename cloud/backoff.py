"""Capped full-jitter backoff, shared by the MQTT session and the loop supervisor."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped full-jitter backoff: attempt n waits uniform(0, min(max_s, min_s * 2**n))."""

    min_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before reconnect attempt number `failures` (1-based)."""
        return random.uniform(0, min(self.max_s, self.min_s * 2 ** min(failures - 1, 30)))
