"""After a preventive visit: has the warning's precursor gone?

The warning's mode follows one feature (`rules.toml`). Over the boiler's readings since the
engineer's completion report (at most the last `WINDOW_MS`), that feature must be back within
the mode's ``min_change`` of the baseline the warning was raised against: pressure back up
and holding, flame current back in band, the fan back on target. A peer feature
(``..._vs_peers``) is compared with the peers' median of the boiler's last analysed day.
Each point starts from its last value before the report (report by exception: a value holds
until the next reading), so the level after a refill counts even if nothing has changed
since; a feature with no value at all (e.g. flame current while the boiler has not run) is
"not yet known", never "gone".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import BoilerDay, Device, Prediction, Sample
from cloud.predict.features import PEER_SUFFIX, POINTS, DayFeatures, day_features
from cloud.predict.rules import DetectorRules

WINDOW_MS = 86_400_000
"""The readings a check looks at: since the report, but no more than the last day."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer: gone (True), still there (False) or not known yet (None), and why."""

    gone: bool | None
    reason: str
    evidence: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """For the verification's thread event."""
        return {"gone": self.gone, "reason": self.reason, **self.evidence}


def precursor_gone(
    session: Session, rules: DetectorRules, warning: Prediction, since_ms: int, now: int
) -> Recovery:
    """Whether `warning`'s precursor has gone in the readings from `since_ms` to `now`."""
    device = session.get(Device, warning.device_id)
    modes, feature_rules = rules.for_model(device.model if device else None)
    rule = next((m for m in modes if m.name == warning.mode), None)
    baseline = warning.evidence.get("baseline")
    if rule is None or not isinstance(baseline, int | float):
        return Recovery(None, f"no detector rule or baseline for {warning.mode}", {})
    start = max(since_ms, now - WINDOW_MS)
    rows = session.execute(
        select(Sample.ts_ms, Sample.point, Sample.num).where(
            Sample.device_id == warning.device_id,
            Sample.point.in_(POINTS),
            Sample.ts_ms >= start,
            Sample.ts_ms <= now,
            Sample.quality == "good",
        )
    )
    readings = sorted((ts, point, num) for ts, point, num in rows if num is not None)
    before = _state_at(session, warning.device_id, start)
    # Report by exception: what was last reported still holds now (the caller checks that the
    # boiler is online), so "now" is one more moment of the same state.
    status = next((n for _, p, n in reversed(readings) if p == "status"), before.get("status"))
    moments = [*readings, (now, "status", status)] if status is not None else readings
    features = day_features(moments, feature_rules, before)
    stem = rule.feature.removesuffix(PEER_SUFFIX)
    value = features.value(stem)
    evidence: dict[str, Any] = {
        "feature": rule.feature,
        "since": start,
        "readings": len({ts for ts, _, _ in readings}),
        "baseline": baseline,
    }
    if value is None:
        return Recovery(None, f"no {stem} known since the visit yet", evidence)
    if stem != rule.feature:
        peers = _peer_median(session, warning.device_id, stem)
        if peers is None:
            return Recovery(None, f"no peer figure for {stem} yet", evidence)
        evidence["peers"] = round(peers, 4)
        value -= peers
    sign = rule.direction.sign
    limit = baseline + sign * rule.min_change
    evidence |= {"value": round(value, 4), "limit": round(limit, 4)}
    if sign * (value - limit) < 0:
        return Recovery(True, f"{rule.feature} {value:.3g} is back within {limit:.3g}", evidence)
    return Recovery(False, f"{rule.feature} {value:.3g} is still beyond {limit:.3g}", evidence)


def _state_at(session: Session, device_id: str, ts: int) -> dict[str, float]:
    """Each point's last good value before `ts` (report by exception: what still held)."""
    state = {}
    for point in POINTS:
        value = session.scalar(
            select(Sample.num)
            .where(
                Sample.device_id == device_id,
                Sample.point == point,
                Sample.ts_ms < ts,
                Sample.quality == "good",
                Sample.num.is_not(None),
            )
            .order_by(Sample.ts_ms.desc())
            .limit(1)
        )
        if value is not None:
            state[point] = float(value)
    return state


def _peer_median(session: Session, device_id: str, stem: str) -> float | None:
    """The same model's median of `stem` on the boiler's last analysed day that has one."""
    for row in session.scalars(
        select(BoilerDay)
        .where(BoilerDay.device_id == device_id)
        .order_by(BoilerDay.day.desc())
        .limit(7)
    ):
        day = DayFeatures.from_json(row.features)
        own, residual = day.value(stem), day.vs_peers.get(stem)
        if own is not None and residual is not None:
            return own - residual
    return None
