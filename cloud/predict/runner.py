"""The predictor: closes each UTC day, sums every boiler's day up, runs the detectors and
keeps the warnings (``predictions`` rows, ``predicted`` alarms, thread events,
notifications) in step with what they find.

It reads what ingest stored (a worker fed by ingest, not a step inside it: ingest's cost per
message does not change). `Predictor.run_due` processes every day that has closed: ended
at least `grace_ms` ago (readings that arrive later than that are left out of the day's
features). One transaction per day; on PostgreSQL an advisory lock lets one process work
while others skip, and a cursor row (``predictor_state``) makes each day run once.

A day for N boilers is one pass over that day's samples of the `POINTS`, in chunks of
`CHUNK` boilers, then one pass over their recent ``boiler_days``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from cloud import thread
from cloud.db import transaction
from cloud.domain import Clock, Role
from cloud.metrics import (
    PREDICTOR_BEHIND,
    PREDICTOR_BOILER_DAYS,
    PREDICTOR_DAY_SECONDS,
    PREDICTOR_DAYS,
    PREDICTOR_ERRORS,
    PREDICTOR_WARNINGS,
)
from cloud.models import Alarm, BoilerDay, Device, Prediction, PredictorState, Sample, Twin, User
from cloud.notify import NotificationKind, end_user, notify
from cloud.predict.detectors import Forecast, detect
from cloud.predict.features import POINTS, DayFeatures, day_features, peer_medians
from cloud.predict.rules import DetectorRules
from protocols.reference import FaultCode

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
CHUNK = 500
CURSOR = "days"
KEEP_DAYS = 400
"""Default retention of ``boiler_days``: a year and a bit (the detectors need 45 days)."""
SEED_DAYS = 7
"""A day starts from the end of the boiler's latest analysed day at most this many days ago."""
PREDICTOR_LOCK = 0x6274_7072  # "btpr"
REPAIR_VERIFIED = "repair_verified"
"""Why a warning ended when the repair of a preventive visit was verified: its mode's history
starts again the day after."""
PREDICTED = "predicted"
"""The alarm kind of a warning."""


class PredictionState:
    """Where a warning stands."""

    ACTIVE = "active"
    CLEARED = "cleared"
    """The detector no longer sees the condition (or a repair was verified)."""
    FULFILLED = "fulfilled"
    """The fault it forecast arrived."""


@dataclass(slots=True)
class PredictorStats:
    """What the predictor has done since it started (for metrics and the evaluation)."""

    days: int = 0
    boiler_days: int = 0
    raised: int = 0
    cleared: int = 0
    fulfilled: int = 0
    errors: int = 0
    """Boiler-days skipped because analysing them failed (logged, counted)."""
    pruned: int = 0
    """``boiler_days`` rows deleted as older than the retention."""
    cpu_s: float = 0.0


class Predictor:
    """Runs the detectors over closed days (see the module doc)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        rules: DetectorRules,
        clock: Clock,
        *,
        grace_ms: int = 3_600_000,
        backfill_days: int = 2,
        day_ms: int = DAY_MS,
        keep_days: int = KEEP_DAYS,
    ) -> None:
        """`day_ms`: the length of a "day"; only tests and demos, with a simulator whose
        days are as short, change it (its days keep their own cursor). `keep_days`: how long
        ``boiler_days`` rows are kept (never less than the detectors look back)."""
        if day_ms < 1000:
            raise ValueError(f"a predictor day must be at least 1 s, got {day_ms} ms")
        self.sessions = sessions
        self.rules = rules
        self.clock = clock
        self.grace_ms = grace_ms
        self.backfill_days = backfill_days
        self.day_ms = day_ms
        self.cursor = CURSOR if day_ms == DAY_MS else f"{CURSOR}-{day_ms}"
        self.keep_days = max(keep_days, rules.longest_history_days + SEED_DAYS)
        self.stats = PredictorStats()
        self._support: list[str] | None = None

    def run_due(self) -> int:
        """Process every day closed by now; returns how many days ran."""
        closed = (self.clock() - self.grace_ms) // self.day_ms - 1
        ran = 0
        while True:
            cpu, wall = time.process_time(), time.monotonic()
            with transaction(self.sessions) as session:
                if not self._locked(session):
                    return ran
                cursor = session.get(PredictorState, self.cursor)
                if cursor is None:
                    cursor = PredictorState(name=self.cursor, day=closed - self.backfill_days)
                    session.add(cursor)
                PREDICTOR_BEHIND.set(max(0, closed - cursor.day))
                if cursor.day >= closed:
                    return ran
                cursor.day += 1
                self.run_day(session, cursor.day)
                self._prune(session, cursor.day)
            self.stats.cpu_s += time.process_time() - cpu
            self.stats.days += 1
            PREDICTOR_DAYS.inc()
            PREDICTOR_DAY_SECONDS.observe(time.monotonic() - wall)
            PREDICTOR_BEHIND.set(max(0, closed - cursor.day))
            ran += 1

    def _prune(self, session: Session, day: int) -> None:
        """Delete ``boiler_days`` older than `keep_days` before `day`."""
        result = session.execute(delete(BoilerDay).where(BoilerDay.day < day - self.keep_days))
        self.stats.pruned += max(0, result.rowcount or 0)  # type: ignore[attr-defined]

    @staticmethod
    def _locked(session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True
        return bool(
            session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PREDICTOR_LOCK})
        )

    def run_day(self, session: Session, day: int) -> None:
        """Features, peers and detectors for one UTC `day` (days since the epoch)."""
        start, end = day * self.day_ms, (day + 1) * self.day_ms
        now = self.clock()
        devices = list(
            session.execute(
                select(Device.id, Device.model)
                .join(Twin, Twin.device_id == Device.id)
                .where(Twin.last_seen_ms >= start, Device.revoked.is_(False))
                .order_by(Device.id)
            )
        )
        features: dict[str, DayFeatures] = {}
        models = dict(devices)
        for i in range(0, len(devices), CHUNK):
            chunk = [d for d, _ in devices[i : i + CHUNK]]
            rows: dict[str, list[tuple[int, str, float | None]]] = defaultdict(list)
            for device_id, ts, point, num in session.execute(
                select(Sample.device_id, Sample.ts_ms, Sample.point, Sample.num).where(
                    Sample.device_id.in_(chunk),
                    Sample.point.in_(POINTS),
                    Sample.ts_ms >= start,
                    Sample.ts_ms < end,
                    Sample.quality == "good",
                )
            ):
                rows[device_id].append((ts, point, num))
            starts = self._day_starts(session, chunk, day)
            for device_id in chunk:
                if not rows.get(device_id):
                    continue
                try:
                    _, feature_rules = self.rules.for_model(models[device_id])
                    features[device_id] = day_features(
                        rows[device_id], feature_rules, starts.get(device_id)
                    )
                except Exception:
                    self._failed("features", device_id, day)
        by_model: dict[str | None, list[str]] = defaultdict(list)
        for device_id in features:
            by_model[models[device_id]].append(device_id)
        for members in by_model.values():
            medians = peer_medians(features[d] for d in members)
            for device_id in members:
                features[device_id] = features[device_id].with_peers(medians)
        for device_id, found in features.items():
            session.add(  # new: the cursor runs each day once, in one transaction
                BoilerDay(
                    device_id=device_id,
                    day=day,
                    model=models[device_id],
                    features=found.to_json(),
                    computed_ms=now,
                )
            )
        self.stats.boiler_days += len(features)
        PREDICTOR_BOILER_DAYS.inc(len(features))
        ids = sorted(features)
        for i in range(0, len(ids), CHUNK):
            self._detect(session, ids[i : i + CHUNK], models, day, now)

    @staticmethod
    def _day_starts(
        session: Session, chunk: Sequence[str], day: int
    ) -> dict[str, dict[str, float]]:
        """Where each boiler's points stood when `day` began: the end of its latest analysed
        day in the week before (older is too stale to carry forward)."""
        starts: dict[str, dict[str, float]] = {}
        for device_id, features in session.execute(
            select(BoilerDay.device_id, BoilerDay.features)
            .where(
                BoilerDay.device_id.in_(chunk),
                BoilerDay.day >= day - SEED_DAYS,
                BoilerDay.day < day,
            )
            .order_by(BoilerDay.day)
        ):
            last = features.get("last")
            if isinstance(last, dict):
                starts[device_id] = last
        return starts

    def _detect(
        self,
        session: Session,
        chunk: Sequence[str],
        models: dict[str, str | None],
        day: int,
        now: int,
    ) -> None:
        longest = self.rules.longest_history_days
        history: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        session.flush()
        for device_id, past, features in session.execute(
            select(BoilerDay.device_id, BoilerDay.day, BoilerDay.features)
            .where(BoilerDay.device_id.in_(chunk), BoilerDay.day > day - longest)
            .order_by(BoilerDay.device_id, BoilerDay.day)
        ):
            history[device_id].append((past, features))
        active: dict[str, dict[str, Prediction]] = defaultdict(dict)
        for prediction in session.scalars(
            select(Prediction).where(
                Prediction.device_id.in_(chunk), Prediction.state == PredictionState.ACTIVE
            )
        ):
            active[prediction.device_id][prediction.mode] = prediction
        repaired: dict[str, dict[str, int]] = defaultdict(dict)
        for device_id, mode, ended in session.execute(
            select(Prediction.device_id, Prediction.mode, Prediction.ended_ms).where(
                Prediction.device_id.in_(chunk),
                Prediction.ended_reason == REPAIR_VERIFIED,
                Prediction.ended_ms >= (day - longest) * self.day_ms,
            )
        ):
            ended_day = int(ended or 0) // self.day_ms
            repaired[device_id][mode] = max(repaired[device_id].get(mode, ended_day), ended_day)
        for device_id in chunk:
            try:
                days = [(d, DayFeatures.from_json(f)) for d, f in history.get(device_id, [])]
                modes, _ = self.rules.for_model(models[device_id])
                found = detect(modes, days, repaired.get(device_id))
                forecasts = {f.mode: f for f in found}
                if not forecasts and not active[device_id]:
                    continue  # nothing to write: the common case, no savepoint
                with session.begin_nested():
                    self._apply(session, device_id, days, forecasts, active[device_id], day, now)
            except Exception:
                self._failed("detect", device_id, day)

    def _apply(
        self,
        session: Session,
        device_id: str,
        days: Sequence[tuple[int, DayFeatures]],
        forecasts: dict[str, Forecast],
        active: dict[str, Prediction],
        day: int,
        now: int,
    ) -> None:
        """Bring one boiler's warnings in step with today's forecasts."""
        today = days[-1][1] if days and days[-1][0] == day else None
        for mode, prediction in active.items():
            if today is not None and today.faulted:
                self._end(session, prediction, PredictionState.FULFILLED, "fault_arrived", now)
            elif mode in forecasts:
                self._refresh(prediction, forecasts.pop(mode), day, now)
            elif now - prediction.updated_ms >= self._clear_after_ms(mode):
                self._end(session, prediction, PredictionState.CLEARED, "condition_gone", now)
        if today is not None and today.faulted:
            return
        for forecast in forecasts.values():
            self._raise(session, device_id, forecast, day, now)

    def _failed(self, stage: str, device_id: str, day: int) -> None:
        """One boiler's day could not be analysed: say so, count it, go on with the others
        (the day is not retried for it; its readings stay in the samples)."""
        log.exception("predictor: %s failed for %s on day %d; skipped", stage, device_id, day)
        PREDICTOR_ERRORS.labels(stage).inc()
        self.stats.errors += 1

    def _raise(
        self, session: Session, device_id: str, forecast: Forecast, day: int, now: int
    ) -> None:
        code = int(FaultCode.parse(forecast.fault))
        alarm = Alarm(
            device_id=device_id, kind=PREDICTED, code=code, name=forecast.mode[:16],
            start_ms=now, end_ms=None, seq=0,
        )  # fmt: skip
        session.add(alarm)
        session.flush()
        prediction = Prediction(
            device_id=device_id,
            alarm_id=alarm.id,
            mode=forecast.mode,
            fault=forecast.fault,
            state=PredictionState.ACTIVE,
            raised_ms=now,
            updated_ms=now,
            evidence={},
            model_version=self.rules.version,
            days_to_fault=0.0,
            days_low=0.0,
            days_high=0.0,
            due_ms=now,
        )
        self._refresh(prediction, forecast, day, now)
        session.add(prediction)
        session.flush()
        _touch_twin(session, device_id)
        self.stats.raised += 1
        PREDICTOR_WARNINGS.labels("raised").inc()
        thread.record(
            session,
            device_id=device_id,
            kind=thread.ThreadKind.PREDICTION,
            ts_ms=now,
            recorded_ms=now,
            actor=f"detector:{self.rules.version}",
            data={"event": "raised", "prediction": prediction.id, **_summary(prediction)},
        )
        device = session.get(Device, device_id)
        if device is None:
            return
        what = MODE_TEXT.get(forecast.mode, forecast.mode)
        low, high = prediction.days_low, prediction.days_high
        notify(
            session,
            [device.owner_id, end_user(device), *self._support_users(session)],
            NotificationKind.PREDICTED_FAULT,
            f"Boiler {device_id} is heading for {forecast.fault} ({what})",
            f"Forecast in about {prediction.days_to_fault:.0f} days ({low:.0f} to {high:.0f}). "
            "A preventive visit can be booked from the boiler's page.",
            now_ms=now,
            device_id=device_id,
            data={"prediction": prediction.id, "mode": forecast.mode, "fault": forecast.fault},
        )

    def _end(
        self, session: Session, prediction: Prediction, state: str, reason: str, now: int
    ) -> None:
        end_prediction(session, prediction, state, reason, now)
        PREDICTOR_WARNINGS.labels(state).inc()
        if state == PredictionState.FULFILLED:
            self.stats.fulfilled += 1
        else:
            self.stats.cleared += 1

    def _clear_after_ms(self, mode: str) -> int:
        rule = self.rules.mode(mode)
        return (rule.clear_after_days if rule is not None else 3) * self.day_ms

    def _refresh(self, prediction: Prediction, forecast: Forecast, day: int, now: int) -> None:
        prediction.days_to_fault = round(forecast.days_to_fault, 2)
        prediction.days_low = round(forecast.days_low, 2)
        prediction.days_high = round(forecast.days_high, 2)
        prediction.due_ms = (day + 1) * self.day_ms + int(forecast.days_to_fault * self.day_ms)
        prediction.evidence = forecast.evidence
        prediction.updated_ms = now

    def _support_users(self, session: Session) -> list[str]:
        if self._support is None:
            self._support = list(
                session.scalars(
                    select(User.id).where(User.role == Role.SUPPORT, User.disabled.is_(False))
                )
            )
        return self._support


MODE_TEXT = {
    "leak": "a slow water leak",
    "electrode": "ignition electrode wear",
    "scaling": "heat-exchanger scaling",
    "fan": "fan wear",
    "sensor_drift": "a failing pressure sensor",
}


def _summary(prediction: Prediction) -> dict[str, object]:
    return {
        "mode": prediction.mode,
        "fault": prediction.fault,
        "days_to_fault": prediction.days_to_fault,
        "days_low": prediction.days_low,
        "days_high": prediction.days_high,
        "model_version": prediction.model_version,
    }


def end_prediction(
    session: Session,
    prediction: Prediction,
    state: str,
    reason: str,
    now: int,
    actor: str = "detector",
) -> None:
    """Close a warning (and its alarm) and record why in the thread."""
    prediction.state = state
    prediction.ended_ms = now
    _touch_twin(session, prediction.device_id)
    prediction.ended_reason = reason
    if prediction.alarm_id is not None:
        alarm = session.get(Alarm, prediction.alarm_id)
        if alarm is not None and alarm.end_ms is None:
            alarm.end_ms = now
    thread.record(
        session,
        device_id=prediction.device_id,
        kind=thread.ThreadKind.PREDICTION,
        ts_ms=now,
        recorded_ms=now,
        actor=actor,
        data={
            "event": state,
            "reason": reason,
            "prediction": prediction.id,
            **_summary(prediction),
        },
    )


def _touch_twin(session: Session, device_id: str) -> None:
    """A new version of the twin (its ETag, and the portal's live pages, follow)."""
    twin = session.get(Twin, device_id, with_for_update=True)
    if twin is not None:
        twin.version += 1
