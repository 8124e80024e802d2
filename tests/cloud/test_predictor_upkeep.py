"""The predictor's upkeep on a real database: one boiler whose analysis fails does not stop
the others or the day, old daily features are pruned, and the work shows in the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from cloud.domain import Role
from cloud.models import BoilerDay, Prediction
from cloud.predict.rules import packaged_rules
from cloud.predict.runner import KEEP_DAYS, SEED_DAYS, Predictor
from tests.cloud.api_helpers import DAY, HOUR, T0, World, world_for
from tests.cloud.predict_helpers import DAYS, hourly

BROKEN, LEAKING = "boiler-broken", "boiler-leaking"
pytestmark = pytest.mark.usefixtures("db_url")


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        w.user("olga", Role.OWNER)
        for device_id in (BROKEN, LEAKING):
            w.boiler(device_id, owner="olga")
            hourly(w, device_id, leak_from_day=20)
        yield w


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def predictor(world: World, now: int, **options: int) -> Predictor:
    return Predictor(world.sessions, packaged_rules(), lambda: now, **options)


def test_a_boiler_whose_analysis_fails_is_skipped_not_the_day(world: World) -> None:
    """A corrupt row makes the detectors fail for one boiler on every day it is in their
    history: that boiler is logged, counted and skipped; the other is warned; the days end."""
    first = predictor(world, T0 - (DAYS - 12) * DAY + 2 * HOUR, backfill_days=DAYS)
    first.run_due()  # the first 12 days, before the leak
    with world.db() as session:
        row = session.scalars(select(BoilerDay).where(BoilerDay.device_id == BROKEN)).first()
        assert row is not None
        row.features = {**row.features, "vs_peers": 5}  # not a mapping: from_json breaks
    errors = metric("boilertwin_predictor_errors_total", stage="detect")
    raised = metric("boilertwin_predictor_warnings_total", event="raised")
    rest = predictor(world, T0 + 2 * HOUR)
    assert rest.run_due() == DAYS - 12
    assert rest.stats.errors >= 1
    assert metric("boilertwin_predictor_errors_total", stage="detect") - errors == rest.stats.errors
    assert metric("boilertwin_predictor_warnings_total", event="raised") - raised == 1
    with world.db() as session:
        warned = {p.device_id for p in session.scalars(select(Prediction))}
        assert warned == {LEAKING}
        days = session.scalar(
            select(func.count()).select_from(BoilerDay).where(BoilerDay.device_id == BROKEN)
        )
        assert days == DAYS, "the broken boiler's features are still kept every day"
    assert rest.run_due() == 0, "the days are done, not retried"


def test_old_daily_features_are_pruned_but_never_what_the_detectors_need(
    world: World,
) -> None:
    keep = predictor(world, T0, keep_days=1).keep_days
    assert keep == packaged_rules().longest_history_days + SEED_DAYS == 52
    assert predictor(world, T0).keep_days == KEEP_DAYS
    today = T0 // DAY
    with world.db() as session:
        for back in (keep + 30, keep + 2, keep - 5):
            session.add(
                BoilerDay(
                    device_id=LEAKING, day=today - back, model=None, features={}, computed_ms=0
                )
            )
    pruner = predictor(world, T0 + 2 * HOUR, keep_days=1, backfill_days=1)
    days = metric("boilertwin_predictor_days_total")
    assert pruner.run_due() == 1
    assert pruner.stats.pruned == 2
    assert metric("boilertwin_predictor_days_total") - days == 1
    assert metric("boilertwin_predictor_days_behind") == 0
    with world.db() as session:
        kept = sorted(
            today - d
            for d in session.scalars(select(BoilerDay.day).where(BoilerDay.device_id == LEAKING))
        )
        assert kept == [1, keep - 5]
