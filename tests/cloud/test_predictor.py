"""The predictor on a real database (SQLite and PostgreSQL), fed by the real ingest: a small
simulated fleet wears out, and its warnings become twin facts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from cloud.models import Alarm, BoilerDay, Device, Notification, Prediction, ThreadEvent, User
from cloud.predict.harness import LocalTwin
from cloud.predict.runner import PREDICTED, PredictionState
from cloud.predict.views import at_risk, device_predictions
from cloud.settings import CloudSettings
from cloud.twin.read import twin_json
from hw_sim.evaluation import EvaluationSettings
from hw_sim.scoring import evaluate

SETTINGS = EvaluationSettings(boilers=20, days=40, seed=11)


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
