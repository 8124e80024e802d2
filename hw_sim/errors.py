"""The simulator's base exception; every error `hw_sim` raises on purpose derives from it."""

from __future__ import annotations


class SimulatorError(Exception):
    """Base of the simulator's own errors."""
