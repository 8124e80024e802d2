"""The predictor on a real database (SQLite and PostgreSQL), fed by the real ingest: a small
simulated fleet wears out, and its warnings become twin facts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from cloud.models import (
    Alarm,
    BoilerDay,
    Device,
    Notification,
    Prediction,
    Sample,
    ThreadEvent,
    User,
)
from cloud.predict.harness import LocalTwin
from cloud.predict.runner import DAY_MS, PREDICTED, PredictionState
from cloud.predict.views import at_risk, device_predictions
from cloud.settings import CloudSettings
from cloud.twin.read import twin_json
from hw_sim.evaluation import EvaluationSettings, Uplinks
from hw_sim.scoring import evaluate
from protocols.cose import generate_private_key, public_key_to_raw, seal
from protocols.messages import Quality, Reading, TelemetryBatch
from protocols.topics import TopicKind, topic

SETTINGS = EvaluationSettings(boilers=20, days=40, seed=11)
DEV = "boiler-clock"
HOUR_MS = 3_600_000


def test_a_wearing_fleet_gets_warnings_that_are_twin_facts(db_url: str) -> None:
    twin = LocalTwin(db_url)
    with twin.sessions() as session, session.begin():
        session.add(User(id="sue", password_hash="-", role="support", created_ms=0))
    try:
        report = evaluate(SETTINGS, twin)
        warned_and_recorded(twin, report)
        shown_in_the_twin_and_the_at_risk_list(twin)
        before = twin.predictor.stats.days
        assert twin.predictor.run_due() == 0, "each day runs once"
        assert twin.predictor.stats.days == before
    finally:
        twin.close()


def warned_and_recorded(twin: LocalTwin, report: Any) -> None:
    assert twin.outcomes == {"accepted": twin.messages}
    warned = sum(row.warned_before_fault for row in report.modes)
    faults = sum(row.faults for row in report.modes)
    assert faults and warned >= faults - 1, report
    with twin.sessions() as session:
        predictions = list(session.scalars(select(Prediction)))
        assert predictions
        for prediction in predictions:
            alarm = session.get(Alarm, prediction.alarm_id)
            assert alarm is not None and alarm.kind == PREDICTED
            assert alarm.name == prediction.mode[:16]
            assert (alarm.end_ms is None) == (prediction.state == PredictionState.ACTIVE)
            assert prediction.model_version == "pm-1"
            assert prediction.days_low <= prediction.days_to_fault <= prediction.days_high
            evidence = prediction.evidence
            assert {"baseline", "slope_per_day", "threshold", "values"} <= set(evidence)
            raised = session.scalars(
                select(ThreadEvent).where(
                    ThreadEvent.device_id == prediction.device_id, ThreadEvent.kind == "prediction"
                )
            ).all()
            assert any(e.data["event"] == "raised" for e in raised)
        # a fault that came after its warning fulfils it
        assert any(p.state == PredictionState.FULFILLED for p in predictions)
        told = session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == "sue", Notification.kind == "predicted_fault")
        )
        assert told == len(predictions)
        # features were kept for every boiler-day
        assert session.scalar(select(func.count()).select_from(BoilerDay)) >= 20 * 35


def shown_in_the_twin_and_the_at_risk_list(twin: LocalTwin) -> None:
    with twin.sessions() as session:
        active = session.scalars(
            select(Prediction).where(Prediction.state == PredictionState.ACTIVE)
        ).all()
        rows = at_risk(session)
        assert [p.id for p, _ in rows] == [p.id for p in sorted(active, key=lambda p: p.due_ms)]
        for prediction in active:
            device = session.get(Device, prediction.device_id)
            assert device is not None
            shown = twin_json(session, device, twin.now_ms, CloudSettings())
            assert [p["mode"] for p in shown["predictions"]] == [
                p.mode for p in device_predictions(session, device.id)
            ]
            assert prediction.mode in {p["mode"] for p in shown["predictions"]}
            assert any(a["kind"] == PREDICTED and a["open"] for a in shown["alarms"])


def test_a_gateway_whose_clock_jumps_still_gets_its_warning(db_url: str) -> None:
    """Through the real ingest: for three days the gateway's clock fell back to 1970 (not
    synchronised), then for a day it ran a year ahead. Ingest files those readings at their
    receipt time, so the days stay whole and the leak is still seen."""
    twin = LocalTwin(db_url)
    key = generate_private_key()
    twin.register([(DEV, public_key_to_raw(key.public_key()), "BT-24C")])
    start = 20_000 * DAY_MS
    seq = 0
    try:
        for day in range(30):
            lost = 0.06 * max(0, day - 18)
            for quarter in range(4):
                seq += 1
                true_ms = start + day * DAY_MS + quarter * 6 * HOUR_MS
                shown_ms, sync = true_ms, True
                if 10 <= day < 13:
                    shown_ms, sync = 1_000 + seq, False  # the RTC lost its time
                elif day == 13:
                    shown_ms = true_ms + 365 * DAY_MS  # a wrong NTP answer
                flow = 45.0 + 10 * quarter
                values = {
                    "status": 4.0,
                    "fault_code": 0.0,
                    "flow_temp": flow,
                    "return_temp": flow - 12,
                    "ch_pressure": round(1.5 - lost + 0.008 * (flow - 20), 3),
                }
                batch = TelemetryBatch(
                    dev=DEV,
                    epoch=1,
                    seq=seq,
                    ts=shown_ms,
                    sync=sync,
                    readings=tuple(
                        Reading(k, shown_ms, v, Quality.GOOD) for k, v in values.items()
                    ),
                )
                envelope = seal(batch, key)
                twin.deliver(Uplinks(true_ms + 1_000, ((topic(DEV, TopicKind.DATA), envelope),)))
            raised = twin.warnings(start + (day + 1) * DAY_MS + 2 * HOUR_MS)
        assert twin.outcomes == {"accepted": 120}
        assert [(w.device_id, w.mode) for w in raised] == [(DEV, "leak")]
        with twin.sessions() as session:
            first, last = session.execute(
                select(func.min(Sample.ts_ms), func.max(Sample.ts_ms))
            ).one()
            assert start <= first and last < start + 30 * DAY_MS
            per_day = session.scalars(
                select(BoilerDay.features).where(BoilerDay.device_id == DEV).order_by(BoilerDay.day)
            ).all()
            assert len(per_day) == 30 and all("pressure_20" in f for f in per_day)
    finally:
        twin.close()
