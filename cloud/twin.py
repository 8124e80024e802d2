"""The product twin read model: connectivity, live values, history, derived figures."""

from __future__ import annotations

from cloud.domain import Connectivity
from cloud.models import Twin


def connectivity(twin: Twin | None, now_ms: int, stale_after_ms: int) -> Connectivity:
    """Online / offline / stale / unknown, as the twin shows it now."""
    if twin is None or (twin.connection == "unknown" and twin.last_seen_ms is None):
        return Connectivity.UNKNOWN
    if twin.connection == "offline":
        return Connectivity.OFFLINE
    if twin.last_seen_ms is None or now_ms - twin.last_seen_ms > stale_after_ms:
        return Connectivity.STALE
    return Connectivity.ONLINE
