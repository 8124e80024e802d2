"""Thread events in plain words (pure): each kind in a sentence, faults named, money and
ranking principles written as people write them, no raw ``key: value`` text."""

from __future__ import annotations

from typing import Any

import pytest

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
    assert said.detail == "Invited eve (2 considered)"


def test_the_owners_decision_and_blank_notes() -> None:
    said = describe(event("authorization", {"approved": False, "note": ""}))
    assert (said.title, said.detail) == ("Owner's decision", "Declined")
    noted = describe(event("authorization", {"approved": True, "note": "go ahead"}))
    assert noted.detail == "Approved: go ahead"


def test_shortlist_order_and_unknown_kinds() -> None:
    data = {"principle": "low_carbon", "candidates": [{"engineer_id": "b"}, {"engineer_id": "a"}]}
    said = describe(event("shortlist", data)).detail
    assert said == "Best first: b, a (ranked by low carbon (shortest trip))"
    odd = describe(event("something_new", {"state": "x"}))
    assert (odd.title, odd.detail) == ("Something new", "State x")


@pytest.mark.parametrize(
    ("kind", "data", "said"),
    [
        (
            "alarm",
            {"event": "lockout", "detail": {"fault": "F28", "text": "ignition failure"}},
            "Lockout F28: ignition failure",
        ),
        ("alarm", {"event": "fault_cleared", "detail": {"fault": "F28"}}, "Fault cleared F28"),
        (
            "alarm",
            {"event": "state_change", "detail": {"change": "lockout_cleared"}},
            "Lockout cleared",
        ),
        (
            "analysis",
            {"complexity": "high", "urgency": "high", "cost": 200.0},
            "High complexity, high urgency, estimated £200.00",
        ),
        (
            "response",
            {"engineer": "eve", "available": True, "quote": 190},
            "eve is available, quoting £190.00",
        ),
        ("response", {"engineer": "ed", "available": False}, "ed is not available"),
        ("contract", {"engineer": "eve", "quote": 1234.5}, "With eve for £1,234.50"),
        ("request", {"principle": "cheapest"}, "engineers to be ranked by cheapest quote"),
        (
            "command",
            {"name": "restart", "reason": "F28 repaired"},
            "Restart (lockout reset): F28 repaired",
        ),
        ("command_state", {"from": "sent", "to": "delivered"}, "Delivered to the gateway"),
        (
            "command_state",
            {"from": "sent", "to": "rejected", "reason": "not_in_lockout"},
            "Refused by the gateway (not in lockout)",
        ),
        ("verification", {"outcome": "verified"}, "Verified: the boiler ran normally afterwards"),
        (
            "evaluation",
            {"cs": 5, "sq": 4, "comment": "tidy"},
            "Satisfaction 5/5, repair quality 4/5: “tidy”",
        ),
        ("connectivity", {"from": "online", "to": "offline"}, "The gateway is offline"),
    ],
)
def test_each_kind_in_a_sentence(kind: str, data: dict[str, Any], said: str) -> None:
    detail = describe(event(kind, data)).detail
    assert detail == said
    assert ": " not in detail.split(" ", 1)[0]  # no leading raw "key:"


def test_long_details_are_cut() -> None:
    said = describe(event("completion", {"cause": "x" * 500}))
    assert len(said.detail) == MAX_DETAIL and said.detail.endswith("\N{HORIZONTAL ELLIPSIS}")


def test_people_are_named_when_names_are_known() -> None:
    known = {"eve": "Eve Evans", "ed": "Ed Edwards"}

    def names(user_id: str) -> str:
        return known.get(user_id, user_id)

    rows = [{"engineer_id": "eve", "invited": True}, {"engineer_id": "ed", "invited": True}]
    said = describe(event("crowdsourcing", {"invited": rows}), names)
    assert said.detail == "Invited Eve Evans, Ed Edwards"
    answer = describe(
        event("response", {"engineer": "eve", "available": False}), lambda i: names(i) or i
    )
    assert answer.detail == "Eve Evans is not available"


@pytest.mark.parametrize(
    ("kind", "data", "said"),
    [
        (
            "birth",
            {"seq": 0, "epoch": 3, "agent_version": "0.4.0", "map_id": "demo-boiler-v1"},
            "The gateway's agent 0.4.0 started, reading register map demo-boiler-v1",
        ),
        (
            "gap",
            {"kind": "accounted", "reason": "outbox_full", "count": 120, "ranges": [[5, 124]]},
            "The gateway dropped 120 messages: its store was full and the oldest readings "
            "made room",
        ),
        (
            "gap",
            {"kind": "unexplained", "reason": "missing", "first_seq": 7, "last_seq": 7, "count": 1},
            "1 message did not arrive (number 7)",
        ),
        (
            "gap",
            {"kind": "resolved", "first_seq": 7, "last_seq": 9, "count": 3},
            "The missing 3 messages (numbers 7 to 9) arrived later",
        ),
        (
            "device",
            {"change": "registered", "key": "ab12cd", "model": "X1", "serial": "S-9"},
            "Registered (X1 S-9) with key ab12cd",
        ),
        (
            "device",
            {"change": "claimed", "batch": "b-7", "model": "X1", "serial": "S-9", "owner": "o"},
            "Claimed by its gateway (X1 S-9) with a token from batch b-7",
        ),
        (
            "device",
            {"change": "attributes", "role": "admin", "changes": {"owner": {"from": None}}},
            "Details changed by the admin: owner",
        ),
        (
            "device",
            {"change": "revoked"},
            "Revoked: the gateway can no longer connect or send readings",
        ),
        (
            "device",
            {"change": "config_desired", "version": 4},
            "Configuration version 4 set for it",
        ),
        ("device", {"change": "broker_login", "renewed": True}, "Broker login renewed"),
        ("device", {"change": "something_else"}, "Something else"),
        (
            "reminder",
            {"due": "2027-01-10", "notified": ["tom", "olivia"]},
            "Annual gas-safety check due on 2027-01-10; reminded tom, olivia",
        ),
        (
            "rollout",
            {"change": "halted", "why": "failure rate 40%", "rolling_back": 2},
            "Halted (failure rate 40%); 2 gateways sent back",
        ),
    ],
)
def test_the_gateways_own_events_in_a_sentence(kind: str, data: dict[str, Any], said: str) -> None:
    assert describe(event(kind, data)).detail == said


def test_reminded_people_are_named() -> None:
    said = describe(event("reminder", {"due": "2027-01-10", "notified": ["tom"]}), str.upper)
    assert said.detail.endswith("reminded TOM")
