"""Thread events in words (pure)."""

from __future__ import annotations

from typing import Any

from cloud.models import ThreadEvent
from cloud.portal.timeline import MAX_DETAIL, describe


def event(kind: str, data: dict[str, Any]) -> ThreadEvent:
    return ThreadEvent(device_id="boiler-0001", kind=kind, ts_ms=1, recorded_ms=1, data=data)


def test_a_round_names_who_was_invited_not_the_whole_assessment() -> None:
    rows = [
        {"engineer_id": "eve", "invited": True, "performance": 0.94},
        {"engineer_id": "edna", "invited": False, "performance": 0.2},
    ]
    said = describe(event("crowdsourcing", {"invited": rows, "considered": 2}))
    assert said.title == "Engineers invited"
    assert said.detail == "invited eve; considered: 2"


def test_the_owners_decision_and_blank_notes() -> None:
    said = describe(event("authorization", {"approved": False, "note": ""}))
    assert (said.title, said.detail) == ("Owner's decision", "declined")


def test_shortlist_order_and_unknown_kinds() -> None:
    data = {"principle": "low_carbon", "candidates": [{"engineer_id": "b"}, {"engineer_id": "a"}]}
    assert describe(event("shortlist", data)).detail == "best first: b, a; principle: low_carbon"
    odd = describe(event("something_new", {"state": "x"}))
    assert (odd.title, odd.detail) == ("Something new", "state: x")


def test_long_details_are_cut() -> None:
    said = describe(event("completion", {"cause": "x" * 500}))
    assert len(said.detail) == MAX_DETAIL and said.detail.endswith("\N{HORIZONTAL ELLIPSIS}")
