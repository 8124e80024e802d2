"""Crowdsourcing (eqs. 2-17): hand-worked examples of every equation, then properties."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.service.crowd import (
    EARTH_RADIUS_KM,
    Assessment,
    Candidate,
    CrowdResult,
    CrowdRules,
    EngineerRecord,
    Place,
    Principle,
    Response,
    Task,
    TravelModel,
    crowdsource,
    haversine_km,
    invite_count,
    min_max,
    performance,
    shortlist,
    updated_acceptance,
    updated_means,
)

BOILER = Place(53.8, -1.55)
KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180  # along a meridian: ~111.195 km
SKILLS = frozenset({"gas", "combi"})
RULES = CrowdRules()
PAPER = CrowdRules(newcomer_slots=0)


def north(degrees: float) -> Place:
    """A place due north of the boiler: exactly `degrees` x KM_PER_DEGREE away."""
    return Place(BOILER.lat + degrees, BOILER.lon)


def engineer(
    engineer_id: str,
    *,
    invitations: int = 10,
    accepted: int = 5,
    cs: float = 4.0,
    sq: float = 4.0,
    evaluated: int = 4,
    home: Place | None = None,
    skills: frozenset[str] = SKILLS,
    average_price: float | None = None,
    available: bool = True,
) -> EngineerRecord:
    return EngineerRecord(
        id=engineer_id,
        skills=skills,
        home=home or north(0.1),
        invitations=invitations,
        accepted=accepted,
        evaluated=evaluated,
        cs_sum=cs * evaluated,
        sq_sum=sq * evaluated,
        average_price=average_price,
        available=available,
    )


def task(*, cost: float = 100.0, min_performance: float = 0.0) -> Task:
    return Task(skills=SKILLS, cost=cost, location=BOILER, min_performance=min_performance)


def by_id(result: CrowdResult) -> dict[str, Assessment]:
    return {a.engineer_id: a for a in result.assessments}


def invited_ids(result: CrowdResult) -> list[str]:
    return [a.engineer_id for a in result.invited]


# -- haversine ---------------------------------------------------------------------------------


def test_haversine_london_to_paris() -> None:
    london, paris = Place(51.5074, -0.1278), Place(48.8566, 2.3522)
    assert haversine_km(london, paris) == pytest.approx(343.5, abs=1.0)
    assert haversine_km(paris, london) == pytest.approx(haversine_km(london, paris))


def test_haversine_same_point_meridian_and_antipode() -> None:
    assert haversine_km(BOILER, BOILER) == 0.0
    assert haversine_km(BOILER, north(0.1)) == pytest.approx(0.1 * KM_PER_DEGREE)
    # Antipodes are half a great circle apart: pi * R.
    assert haversine_km(Place(0, 0), Place(0, 180)) == pytest.approx(math.pi * EARTH_RADIUS_KM)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.5, 0), (-91, 0), (0, 180.1), (0, -181), (math.nan, 0)]
)
def test_place_refuses_impossible_coordinates(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match=r"latitude|longitude"):
        Place(lat, lon)


# -- eqs. 6-9: AR, CS, SQ, min-max, W ------------------------------------------------------------


def test_engineer_figures_eqs_6_to_8() -> None:
    e = EngineerRecord("a", SKILLS, BOILER, invitations=4, accepted=3, evaluated=2, cs_sum=9.0)
    assert e.ar == 3 / 4  # eq. 6, as a fraction
    assert e.cs == 9.0 / 2  # eq. 7
    assert e.sq == 0.0  # eq. 8 with sq_sum 0
    fresh = EngineerRecord("b", SKILLS, BOILER)
    assert (fresh.ar, fresh.cs, fresh.sq) == (0.0, 0.0, 0.0)  # the paper's initial values
    assert fresh.newcomer(RULES)  # 0 < 3 invitations
    assert not e.newcomer(RULES)  # 4 >= 3


def test_engineer_record_refuses_nonsense_counts() -> None:
    with pytest.raises(ValueError, match="accepted <= invitations"):
        EngineerRecord("a", SKILLS, BOILER, invitations=2, accepted=3)
    with pytest.raises(ValueError, match="evaluated"):
        EngineerRecord("a", SKILLS, BOILER, evaluated=-1)


def test_min_max_worked_examples() -> None:
    assert min_max([3.0, 4.5, 5.0]) == [0.0, (4.5 - 3) / (5 - 3), 1.0]  # 0.75 in the middle
    assert min_max([]) == []
    assert min_max([4.0, 4.0]) == [1.0, 1.0]  # no spread, but history: full marks
    assert min_max([0.0, 0.0]) == [0.0, 0.0]  # no spread, no history
    assert min_max([2.5]) == [1.0]


def test_performance_eq_9() -> None:
    # AR = 3/4, CS* = 0.75, SQ* = 0.5 -> 0.5*0.75 + 0.2*0.75 + 0.3*0.5 = 0.375+0.15+0.15
    assert performance(3 / 4, 0.75, 0.5, RULES) == pytest.approx(0.675)
    custom = CrowdRules(q_ar=1.0, q_cs=0.0, q_sq=0.0)
    assert performance(0.25, 1.0, 1.0, custom) == 0.25


def three_engineers() -> list[EngineerRecord]:
    # CS pool {4.5, 3.0, 5.0}; SQ pool {4.0, 5.0, 3.0}
    return [
        engineer("a", invitations=4, accepted=3, cs=4.5, sq=4.0, evaluated=2),
        engineer("b", invitations=2, accepted=1, cs=3.0, sq=5.0, evaluated=1),
        engineer("c", invitations=5, accepted=5, cs=5.0, sq=3.0, evaluated=2),
    ]


def test_crowdsource_normalises_over_the_pool_and_computes_w() -> None:
    result = crowdsource(task(), three_engineers(), PAPER)
    a, b, c = (by_id(result)[k] for k in "abc")
    # a: CS* = (4.5-3)/(5-3) = 0.75, SQ* = (4-3)/(5-3) = 0.5, W = 0.375 + 0.15 + 0.15
    assert (a.cs_norm, a.sq_norm) == (0.75, 0.5)
    assert a.performance == pytest.approx(0.675)
    # b: CS* = 0, SQ* = 1, AR = 1/2: W = 0.25 + 0 + 0.3
    assert (b.cs_norm, b.sq_norm) == (0.0, 1.0)
    assert b.performance == pytest.approx(0.55)
    # c: CS* = 1, SQ* = 0, AR = 5/5: W = 0.5 + 0.2 + 0
    assert (c.cs_norm, c.sq_norm) == (1.0, 0.0)
    assert c.performance == pytest.approx(0.7)
    # Pool of 3: ceil(0.1 * 3) = 1 top invitation, the best W.
    assert (result.pool_size, result.top_k) == (3, 1)
    assert invited_ids(result) == ["c"]
    assert result.invited[0].reason == "top"
    assert by_id(result)["c"].invited


def test_engineers_outside_the_pool_do_not_move_the_normalisation() -> None:
    # A far-away engineer with CS 1.0 would set the minimum if counted.
    far = engineer("z", cs=1.0, home=north(1.0))
    result = crowdsource(task(), [*three_engineers(), far], PAPER)
    assert by_id(result)["a"].cs_norm == 0.75
    z = by_id(result)["z"]
    assert z.failed == ("radius",)
    assert (z.cs_norm, z.sq_norm, z.performance) == (None, None, None)


# -- constraints 1-4 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "min_performance", "failed"),
    [
        ({"available": False}, 0.0, "unavailable"),
        ({"skills": frozenset({"gas"})}, 0.0, "skills"),
        ({"average_price": 200.0}, 0.0, "price"),
        ({"home": north(0.3)}, 0.0, "radius"),  # 0.3 * 111.195 = 33.4 km > 30
        ({}, 0.8, "performance"),
    ],
)
def test_each_constraint_fails_alone_with_its_name(
    changes: dict[str, Any], min_performance: float, failed: str
) -> None:
    # Alone in the pool: CS* = SQ* = 1 (no spread, history), AR = 5/10, so
    # W = 0.5*0.5 + 0.2 + 0.3 = 0.75 < 0.8.
    e = dataclasses.replace(engineer("a"), **changes)
    result = crowdsource(task(min_performance=min_performance), [e], RULES)
    (a,) = result.assessments
    assert a.failed == (failed,)
    assert not a.eligible
    assert result.invited == ()
    assert result.pool_size == 0


def test_missing_skills_are_listed_sorted() -> None:
    t = Task(frozenset({"oil", "gas", "lpg"}), 100.0, BOILER)
    (a,) = crowdsource(t, [engineer("a", skills=frozenset({"gas"}))], RULES).assessments
    assert a.missing_skills == ("lpg", "oil")


def test_every_failure_is_reported_in_order() -> None:
    e = engineer(
        "a",
        available=False,
        skills=frozenset(),
        average_price=10.0,
        home=north(1.0),
    )
    (a,) = crowdsource(task(), [e], RULES).assessments
    assert a.failed == ("unavailable", "skills", "price", "radius")
    assert a.price_gap == pytest.approx((100 - 10) / 100)
    assert a.distance_km == pytest.approx(KM_PER_DEGREE)


@pytest.mark.parametrize(
    ("average_price", "passes", "gap"),
    [
        (None, True, None),  # no history: nothing to object to
        (130.0, True, 0.3),  # |130 - 100| = 30 <= 0.3 * 100, boundary included
        (70.0, True, 0.3),
        (131.0, False, 0.31),
        (69.0, False, 0.31),
        (100.0, True, 0.0),
    ],
)
def test_price_constraint_2(average_price: float | None, passes: bool, gap: float | None) -> None:
    (a,) = crowdsource(task(), [engineer("a", average_price=average_price)], RULES).assessments
    assert ("price" not in a.failed) is passes
    assert a.price_gap == (None if gap is None else pytest.approx(gap))


def test_radius_boundary_is_inclusive() -> None:
    inside = Place(BOILER.lat + 30.0 / KM_PER_DEGREE, BOILER.lon)  # exactly 30 km
    (a,) = crowdsource(task(), [engineer("a", home=inside)], RULES).assessments
    assert a.distance_km == pytest.approx(30.0)
    assert a.eligible


def test_performance_threshold_boundary_is_inclusive() -> None:
    (a,) = crowdsource(task(min_performance=0.75), [engineer("a")], RULES).assessments
    assert a.performance == pytest.approx(0.75)
    assert a.eligible


def test_zero_estimate_skips_the_price_constraint() -> None:
    # |200 - 0| <= 0.3 * 0 would exclude everyone with history; 0 means "no estimate".
    (a,) = crowdsource(task(cost=0.0), [engineer("a", average_price=200.0)], RULES).assessments
    assert a.eligible
    assert a.price_gap is None


def test_task_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="cost"):
        task(cost=-1.0)
    with pytest.raises(ValueError, match="cost"):
        task(cost=math.nan)


def test_duplicate_engineer_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        crowdsource(task(), [engineer("a"), engineer("a")], RULES)


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="q_cs"):
        CrowdRules(q_cs=-0.1)
    with pytest.raises(ValueError, match="invite_fraction"):
        CrowdRules(invite_fraction=0.0)
    with pytest.raises(ValueError, match="invite_min"):
        CrowdRules(invite_min=5, invite_max=3)
    with pytest.raises(ValueError, match="radius_km"):
        CrowdRules(radius_km=0.0)


# -- invitations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0), (1, 1), (9, 1), (10, 1), (11, 2), (30, 3), (95, 10), (200, 10)],
)
def test_invite_count_defaults(n: int, expected: int) -> None:
    assert invite_count(n, RULES) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0),
        (1, 1),  # never more than the pool, even below invite_min
        (3, 2),  # ceil(0.75) = 1, raised to invite_min 2
        (10, 3),  # ceil(2.5) = 3
        (100, 4),  # ceil(25) capped at invite_max 4
    ],
)
def test_invite_count_custom(n: int, expected: int) -> None:
    assert invite_count(n, CrowdRules(invite_fraction=0.25, invite_min=2, invite_max=4)) == expected


def test_invite_count_ignores_float_error() -> None:
    # 0.07 * 100 = 7.000000000000001 in floating point; a naive ceil would give 8.
    assert invite_count(100, CrowdRules(invite_fraction=0.07, invite_max=10)) == 7
    with pytest.raises(ValueError, match="pool_size"):
        invite_count(-1, RULES)


def test_ties_are_broken_by_id() -> None:
    twins = [engineer(k, home=north(0.1)) for k in ("b", "c", "a")]
    result = crowdsource(task(), twins, PAPER)
    assert invited_ids(result) == ["a"]
    # Two invited of four identical engineers: still the lowest ids, in id order.
    rules = CrowdRules(invite_fraction=0.5, newcomer_slots=0)
    result = crowdsource(task(), [*twins, engineer("0")], rules)
    assert invited_ids(result) == ["0", "a"]


def test_newcomer_slot_is_added_after_the_top() -> None:
    # a has 4 invitations, b 2, c 5: only b is a newcomer (< 3). Top is c (W 0.7).
    result = crowdsource(task(), three_engineers(), RULES)
    assert invited_ids(result) == ["c", "b"]
    assert [a.reason for a in result.invited] == ["top", "newcomer"]
    assert result.top_k == 1
    assert by_id(result)["b"].invited and not by_id(result)["a"].invited


def test_newcomer_slots_zero_is_the_paper() -> None:
    engineers = three_engineers()
    paper = crowdsource(task(), engineers, PAPER)
    assert invited_ids(paper) == ["c"]
    assert all(a.reason == "top" for a in paper.invited)


def test_newcomers_go_by_w_then_distance_then_id() -> None:
    # Three fresh engineers, all W = 0 (no history at all), at different distances.
    veteran = engineer("v", invitations=20, accepted=20, cs=5.0, sq=5.0)
    fresh = [
        engineer(k, invitations=0, accepted=0, evaluated=0, home=north(d))
        for k, d in (("x", 0.2), ("y", 0.05), ("z", 0.05))
    ]
    result = crowdsource(task(), [veteran, *fresh], RULES)
    assert invited_ids(result) == ["v", "y"]  # y and z tie on distance; y is first by id
    two = crowdsource(task(), [veteran, *fresh], CrowdRules(newcomer_slots=2))
    assert invited_ids(two) == ["v", "y", "z"]


def test_a_newcomer_in_the_top_takes_no_newcomer_slot() -> None:
    newbie = engineer("n", invitations=1, accepted=1, cs=5.0, sq=5.0)
    other = engineer("o", invitations=0, accepted=0, evaluated=0)
    result = crowdsource(task(), [newbie, other], RULES)
    assert [(a.engineer_id, a.reason) for a in result.invited] == [
        ("n", "top"),
        ("o", "newcomer"),
    ]


def test_empty_inputs_invite_nobody() -> None:
    assert crowdsource(task(), [], RULES) == CrowdResult((), (), 0, 0)
    result = crowdsource(task(), [engineer("a", available=False)], RULES)
    assert (result.invited, result.pool_size, result.top_k) == ((), 0, 0)


def test_figures_are_every_field_and_json_safe() -> None:
    result = crowdsource(task(), [*three_engineers(), engineer("z", home=north(1.0))], RULES)
    names = {f.name for f in dataclasses.fields(Assessment)}
    for a in result.assessments:
        figures = a.figures()
        assert set(figures) == names | {"eligible"}
        assert json.loads(json.dumps(figures)) == figures
    figures_a = by_id(result)["a"].figures()
    assert figures_a["performance"] == 0.675
    assert figures_a["distance_km"] == round(0.1 * KM_PER_DEGREE, 4)
    assert by_id(result)["z"].figures()["performance"] is None


# -- shortlist (eqs. 11-14) --------------------------------------------------------------------

TRAVEL = TravelModel()


def responses() -> list[Response]:
    return [
        Response("e1", True, 90.0, north(0.10), 0.6),  # gap 10, 11.12 km
        Response("e2", True, 120.0, north(0.05), 0.7),  # gap 20, 5.56 km
        Response("e3", True, 100.0, north(0.20), 0.8),  # gap 0, 22.24 km
        Response("e4", False, 95.0, north(0.01), 0.9),  # not available
        Response("e5", True, None, north(0.01), 0.9),  # no quote
        Response("e6", True, 95.0, None, 0.9),  # no location
    ]


def ranks(candidates: Sequence[Candidate]) -> list[tuple[str, float]]:
    return [(c.engineer_id, round(c.rank_pct, 6)) for c in candidates]


def test_shortlist_low_cost_eq_13() -> None:
    # gaps |q - 100|: e1 10, e2 20, e3 0 -> (gap - 0) / (20 - 0) * 100
    got = shortlist(
        responses(), cost=100.0, boiler=BOILER, principle=Principle.LOW_COST, travel=TRAVEL
    )
    assert ranks(got) == [("e3", 0.0), ("e1", 50.0), ("e2", 100.0)]
    assert [c.position for c in got] == [1, 2, 3]
    assert [c.quote_gap for c in got] == [0.0, 10.0, 20.0]  # eq. 11


def test_shortlist_low_carbon_eq_14() -> None:
    # distances 0.10, 0.05, 0.20 degrees: e1 = (0.10 - 0.05) / (0.20 - 0.05) = 1/3
    got = shortlist(
        responses(), cost=100.0, boiler=BOILER, principle=Principle.LOW_CARBON, travel=TRAVEL
    )
    assert ranks(got) == [("e2", 0.0), ("e1", round(100 / 3, 6)), ("e3", 100.0)]
    assert got[0].distance_km == pytest.approx(0.05 * KM_PER_DEGREE)  # eq. 12


def test_shortlist_cheapest() -> None:
    # quotes 90, 120, 100: e3 = (100 - 90) / (120 - 90) = 1/3
    got = shortlist(
        responses(), cost=100.0, boiler=BOILER, principle=Principle.CHEAPEST, travel=TRAVEL
    )
    assert ranks(got) == [("e1", 0.0), ("e3", round(100 / 3, 6)), ("e2", 100.0)]


def test_shortlist_size_truncates_but_ranks_over_everyone() -> None:
    got = shortlist(
        responses(),
        cost=100.0,
        boiler=BOILER,
        principle=Principle.LOW_COST,
        travel=TRAVEL,
        size=2,
    )
    assert ranks(got) == [("e3", 0.0), ("e1", 50.0)]  # e1 still 50%, normalised over three


def test_shortlist_candidate_figures() -> None:
    got = shortlist(
        [Response("e", True, 80.0, north(10 / KM_PER_DEGREE), 0.5)],
        cost=100.0,
        boiler=BOILER,
        principle=Principle.LOW_COST,
        travel=TRAVEL,
    )
    (c,) = got
    assert c.rank_pct == 0.0  # alone: no spread
    assert c.distance_km == pytest.approx(10.0)
    assert c.travel_min == pytest.approx(10 * 1.3 / 40 * 60)  # 13 road km at 40 km/h: 19.5 min
    assert c.co2_kg == pytest.approx(2 * 10 * 1.3 * 0.17)  # there and back: 4.42 kg
    assert c.as_json() == {
        "engineer_id": "e",
        "position": 1,
        "rank_pct": 0.0,
        "distance_km": 10.0,
        "travel_min": 19.5,
        "co2_kg": 4.42,
        "quote": 80.0,
        "quote_gap": 20.0,
        "performance": 0.5,
    }


def test_shortlist_ties_by_id_and_refusals() -> None:
    same = [Response(k, True, 100.0, north(0.1), 0.5) for k in ("b", "a")]
    got = shortlist(same, cost=100.0, boiler=BOILER, principle=Principle.LOW_COST, travel=TRAVEL)
    assert ranks(got) == [("a", 0.0), ("b", 0.0)]
    with pytest.raises(ValueError, match="size"):
        shortlist(
            same, cost=1.0, boiler=BOILER, principle=Principle.CHEAPEST, travel=TRAVEL, size=0
        )
    with pytest.raises(ValueError, match="cost"):
        shortlist(same, cost=-1.0, boiler=BOILER, principle=Principle.CHEAPEST, travel=TRAVEL)


def test_travel_model() -> None:
    model = TravelModel(road_factor=1.5, speed_kmh=60.0, co2_kg_per_km=0.2)
    assert model.road_km(10.0) == 15.0
    assert model.minutes(10.0) == pytest.approx(15.0)  # 15 km at 60 km/h
    assert model.co2_kg(10.0) == pytest.approx(6.0)  # 2 * 15 * 0.2
    assumptions = model.assumptions()
    assert assumptions["speed_kmh"] == 60.0
    json.dumps(assumptions)
    with pytest.raises(ValueError, match="speed_kmh"):
        TravelModel(speed_kmh=0.0)


# -- eqs. 15-17 --------------------------------------------------------------------------------


def test_updated_means_eqs_15_16() -> None:
    # CS 4.0 over 3 jobs, new 5: (4*3 + 5)/4 = 4.25; SQ 3.0, new 1: (3*3 + 1)/4 = 2.5
    assert updated_means(4.0, 3.0, 3, 5.0, 1.0) == (4.25, 2.5)
    assert updated_means(0.0, 0.0, 0, 4.0, 2.0) == (4.0, 2.0)  # first evaluation
    with pytest.raises(ValueError, match="score_cs"):
        updated_means(4.0, 4.0, 1, 6.0, 4.0)
    with pytest.raises(ValueError, match="evaluated"):
        updated_means(4.0, 4.0, -1, 4.0, 4.0)


def test_updated_means_agree_with_the_record() -> None:
    e = engineer("a", cs=4.0, sq=3.0, evaluated=3)
    after = dataclasses.replace(e, evaluated=4, cs_sum=e.cs_sum + 5.0, sq_sum=e.sq_sum + 1.0)
    assert updated_means(e.cs, e.sq, e.evaluated, 5.0, 1.0) == (after.cs, after.sq)


def test_updated_acceptance_eq_17() -> None:
    assert updated_acceptance(3, 4, True) == 4 / 5
    assert updated_acceptance(3, 4, False) == 3 / 5
    assert updated_acceptance(0, 0, True) == 1.0
    assert updated_acceptance(0, 0, False) == 0.0
    with pytest.raises(ValueError, match="accepted"):
        updated_acceptance(5, 4, True)


# -- properties --------------------------------------------------------------------------------


# Weighted so that most drawn crowds have a real eligible pool to choose from.
ENGINEER_SKILLS = [
    frozenset({"gas", "combi", "oil"}),
    frozenset({"gas", "combi"}),
    frozenset({"gas"}),
    frozenset(),
]


@st.composite
def engineer_records(draw: st.DrawFn, engineer_id: str) -> EngineerRecord:
    invitations = draw(st.integers(0, 20))
    evaluated = draw(st.integers(0, 8))
    return EngineerRecord(
        id=engineer_id,
        skills=draw(st.sampled_from(ENGINEER_SKILLS)),
        home=Place(
            BOILER.lat + draw(st.floats(-0.2, 0.2)), BOILER.lon + draw(st.floats(-0.3, 0.3))
        ),
        invitations=invitations,
        accepted=draw(st.integers(0, invitations)),
        evaluated=evaluated,
        cs_sum=sum(draw(st.lists(st.integers(1, 5), min_size=evaluated, max_size=evaluated))),
        sq_sum=sum(draw(st.lists(st.integers(1, 5), min_size=evaluated, max_size=evaluated))),
        average_price=draw(st.none() | st.floats(60, 160)),
        available=draw(st.sampled_from([True, True, True, False])),
    )


@st.composite
def crowds(draw: st.DrawFn) -> list[EngineerRecord]:
    ids = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, min_size=1, max_size=30)
    )
    return [draw(engineer_records(i)) for i in ids]


tasks = st.builds(
    Task,
    skills=st.sampled_from([frozenset(), frozenset({"gas"}), frozenset({"gas", "combi"})]),
    cost=st.floats(60, 180),
    location=st.just(BOILER),
    min_performance=st.sampled_from([0.0, 0.0, 0.2, 0.5]),
)
rule_sets = st.builds(
    CrowdRules,
    invite_fraction=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    invite_min=st.integers(0, 2),
    invite_max=st.integers(2, 6),
    newcomer_slots=st.integers(0, 2),
)


@given(tasks, crowds(), rule_sets)
def test_invitation_properties(t: Task, engineers: list[EngineerRecord], rules: CrowdRules) -> None:
    result = crowdsource(t, engineers, rules)
    eligible = [a for a in result.assessments if a.eligible]
    top = [a for a in result.invited if a.reason == "top"]
    newcomers = [a for a in result.invited if a.reason == "newcomer"]
    assert [a.engineer_id for a in result.assessments] == sorted(e.id for e in engineers)
    assert result.pool_size == len(eligible)
    assert {a.engineer_id for a in result.invited} <= {a.engineer_id for a in eligible}
    assert len(top) == result.top_k == invite_count(len(eligible), rules)
    assert result.invited == (*top, *newcomers)  # top first, then newcomers
    assert len(newcomers) <= rules.newcomer_slots
    assert len({a.engineer_id for a in result.invited}) == len(result.invited)
    left_out = [a for a in eligible if not a.invited]
    for invited in top:
        assert invited.performance is not None
        for other in left_out:
            assert other.performance is not None
            assert invited.performance >= other.performance
    if not eligible:
        assert result.invited == ()
    for a in result.assessments:
        assert (a.performance is None) == (a.cs_norm is None) == (a.sq_norm is None)
        if a.eligible:
            assert a.performance is not None and 0.0 <= a.performance <= 1.0 + 1e-9
    assert {a.engineer_id for a in result.assessments if a.invited} == set(invited_ids(result))


@given(tasks, crowds(), rule_sets, st.randoms(use_true_random=False))
def test_invitations_do_not_depend_on_input_order(
    t: Task, engineers: list[EngineerRecord], rules: CrowdRules, rng: random.Random
) -> None:
    shuffled = list(engineers)
    rng.shuffle(shuffled)
    assert crowdsource(t, shuffled, rules) == crowdsource(t, engineers, rules)


@given(tasks, crowds(), rule_sets)
def test_newcomer_slots_never_change_the_top(
    t: Task, engineers: list[EngineerRecord], rules: CrowdRules
) -> None:
    with_slots = crowdsource(t, engineers, rules)
    paper = crowdsource(t, engineers, dataclasses.replace(rules, newcomer_slots=0))
    top = [a.engineer_id for a in with_slots.invited if a.reason == "top"]
    assert top == invited_ids(paper)


@given(st.lists(st.floats(-1e6, 1e6), max_size=20))
def test_min_max_is_within_unit_interval(values: list[float]) -> None:
    normalised = min_max(values)
    assert len(normalised) == len(values)
    assert all(0.0 <= v <= 1.0 for v in normalised)
    if values and max(values) > min(values):
        assert min(normalised) == 0.0 and max(normalised) == 1.0


@st.composite
def response_lists(draw: st.DrawFn) -> list[Response]:
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=2), unique=True, max_size=12))
    return [
        Response(
            engineer_id=i,
            available=draw(st.booleans()),
            quote=draw(st.none() | st.floats(0, 500)),
            location=draw(
                st.none()
                | st.builds(
                    Place,
                    lat=st.floats(BOILER.lat - 0.5, BOILER.lat + 0.5),
                    lon=st.floats(BOILER.lon - 0.5, BOILER.lon + 0.5),
                )
            ),
            performance=draw(st.floats(0, 1)),
        )
        for i in ids
    ]


@given(response_lists(), st.sampled_from(list(Principle)), st.integers(1, 5), st.floats(0, 400))
def test_shortlist_properties(
    answers: list[Response], principle: Principle, size: int, cost: float
) -> None:
    got = shortlist(
        answers, cost=cost, boiler=BOILER, principle=principle, travel=TRAVEL, size=size
    )
    rankable = [
        r for r in answers if r.available and r.quote is not None and r.location is not None
    ]
    assert len(got) == min(size, len(rankable))
    assert [c.position for c in got] == list(range(1, len(got) + 1))
    assert all(0.0 <= c.rank_pct <= 100.0 for c in got)
    assert [(c.rank_pct, c.engineer_id) for c in got] == sorted(
        (c.rank_pct, c.engineer_id) for c in got
    )
    assert {c.engineer_id for c in got} <= {r.engineer_id for r in rankable}
    if len(rankable) == 1:
        assert got[0].rank_pct == 0.0
    for c in got:
        json.dumps(c.as_json())


@given(response_lists(), st.sampled_from(list(Principle)))
def test_shortlist_of_the_unavailable_is_empty(
    answers: list[Response], principle: Principle
) -> None:
    gone = [dataclasses.replace(r, available=False) for r in answers]
    assert shortlist(gone, cost=100.0, boiler=BOILER, principle=principle, travel=TRAVEL) == ()


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5), st.booleans()), max_size=40),
)
def test_updates_keep_means_and_acceptance_in_range(
    history: list[tuple[int, int, bool]],
) -> None:
    cs = sq = 0.0
    accepted = invitations = 0
    for n, (score_cs, score_sq, was_accepted) in enumerate(history):
        cs, sq = updated_means(cs, sq, n, score_cs, score_sq)
        assert 1.0 <= cs <= 5.0 and 1.0 <= sq <= 5.0
        ar = updated_acceptance(accepted, invitations, was_accepted)
        accepted, invitations = accepted + was_accepted, invitations + 1
        assert 0.0 <= ar <= 1.0
        assert ar == accepted / invitations
