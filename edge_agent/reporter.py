"""Report by exception, and alarms: what of each poll is worth a cellular byte.

Pure logic on values and millisecond timestamps; no I/O, no clock of its own.

* A reading is reported when its quality changes, when a numeric value moves at least its
  deadband from the last *reported* value (so slow drift is still reported), when any other
  value changes, and at least every heartbeat.
* `alarms` compares two polls and names the events that must not wait for the batch: the
  boiler entering lockout, a fault code appearing, changing or clearing, and the boiler
  leaving lockout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from protocols.messages import DetailValue, EventKind, Quality, Reading, Scalar
from protocols.reference import FAULT_POINT, STATUS_POINT, BoilerStatus, FaultCode, fault_name
from protocols.registers import Point

UNIT_DEADBANDS: Mapping[str, float] = {
    "°C": 0.5,
    "degC": 0.5,
    "C": 0.5,
    "bar": 0.05,
    "%": 5.0,
    "rpm": 100.0,
    "uA": 0.5,
    "µA": 0.5,
    "kW": 0.5,
}
"""Default deadband by unit; points with other units report every change."""


def default_deadband(point: Point) -> float:
    """The deadband a point gets when the configuration names none."""
    return UNIT_DEADBANDS.get(point.unit, 0.0)


@dataclass(frozen=True, slots=True)
class Sample:
    """One point's value from one poll (``None`` when it could not be read)."""

    value: Scalar
    quality: Quality


class ReportByException:
    """Decides, point by point, which samples become readings."""

    def __init__(self, deadbands: Mapping[str, float], heartbeat_ms: int) -> None:
        self._deadbands = dict(deadbands)
        self._heartbeat_ms = heartbeat_ms
        self._last: dict[str, tuple[Sample, int]] = {}

    def offer(self, point: str, sample: Sample, ts_ms: int) -> Reading | None:
        """The reading to send for this sample, or None if it adds nothing."""
        last = self._last.get(point)
        if last is None or self._worth_sending(point, last[0], sample, ts_ms - last[1]):
            self._last[point] = (sample, ts_ms)
            return Reading(point, ts_ms, sample.value, sample.quality)
        return None

    def _worth_sending(self, point: str, last: Sample, now: Sample, age_ms: int) -> bool:
        if now.quality != last.quality or age_ms >= self._heartbeat_ms:
            return True
        old, new = last.value, now.value
        numeric = (int, float)
        if (
            isinstance(old, numeric)
            and isinstance(new, numeric)
            and not isinstance(old, bool)
            and not isinstance(new, bool)
        ):
            band = self._deadbands.get(point, 0.0)
            return abs(new - old) >= band if band > 0 else new != old
        return new != old

    def forget(self) -> None:
        """Report every point afresh at the next poll (e.g. after comms come back)."""
        self._last.clear()


def _fault_name(code: object) -> str:
    """``F28``; a value that is not a whole number is shown as it came."""
    return (fault_name(code) if isinstance(code, int) else None) or f"F{code}"


def alarms(
    before: Mapping[str, Scalar] | None, after: Mapping[str, Scalar]
) -> list[tuple[EventKind, dict[str, DetailValue]]]:
    """Events raised by going from poll `before` to poll `after` (good values only)."""
    if before is None:
        before = {}
    events: list[tuple[EventKind, dict[str, DetailValue]]] = []
    status, fault = after.get(STATUS_POINT), after.get(FAULT_POINT)
    old_status, old_fault = before.get(STATUS_POINT), before.get(FAULT_POINT)
    context: dict[str, DetailValue] = {STATUS_POINT: status, FAULT_POINT: fault}
    if fault is not None and fault != old_fault:
        if fault != 0:
            detail = dict(context, fault=_fault_name(fault), previous=old_fault)
            if isinstance(fault, int) and fault in FaultCode._value2member_map_:
                detail["text"] = FaultCode(fault).text
            events.append((EventKind.FAULT, detail))
        elif old_fault is not None:
            events.append((EventKind.FAULT_CLEARED, dict(context, previous=old_fault)))
    if status == BoilerStatus.LOCKOUT and old_status != BoilerStatus.LOCKOUT:
        events.append((EventKind.LOCKOUT, dict(context, fault=_fault_name(fault))))
    elif old_status == BoilerStatus.LOCKOUT and status is not None and status != old_status:
        events.append(
            (EventKind.STATE_CHANGE, dict(context, previous=old_status, change="lockout_cleared"))
        )
    return events
