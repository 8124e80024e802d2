"""Service analysis: the packaged rules, each rule firing, status checks, rule-file errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cloud.errors import ConfigError
from cloud.service.analysis import (
    Complexity,
    Observation,
    ServiceRequest,
    ServiceRules,
    StatusCheck,
    Urgency,
    analyse,
    check_status,
    load_rules,
)

ROOT = Path(__file__).resolve().parents[2]

RUNNING = 4
BLOCKING_ERROR = 6
LOCKOUT = 7


@pytest.fixture(scope="module")
def rules() -> ServiceRules:
    return load_rules()


def running(**values: float | None) -> Observation:
    """An online boiler running normally, no fault."""
    return Observation("online", RUNNING, 0, values)


def repair(problem: str, description: str = "") -> ServiceRequest:
    return ServiceRequest("repair", problem, description)


# --- Packaged rules ---------------------------------------------------------------------


def test_packaged_rules_load(rules: ServiceRules) -> None:
    assert rules.service_types == ("repair", "annual_check", "service", "preventive")
    assert "no_heating" in rules.problems("repair")
    assert rules.problems("annual_check") == ("annual_check",)
    assert set(rules.faults) == {20, 22, 28, 29, 32, 75}
    assert rules.cold is not None and rules.cold.outdoor_below_c == 5.0
    assert rules.history is not None and rules.history.repeat_episodes == 2
    assert rules.owner is not None and rules.owner.urgency is Urgency.NORMAL


def test_rules_file_ships_with_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "service/rules.toml" in pyproject["tool"]["setuptools"]["package-data"]["cloud"]


def test_levels_have_labels() -> None:
    assert [u.label for u in Urgency] == ["planned", "normal", "high", "urgent"]
    assert [c.label for c in Complexity] == ["low", "medium", "high"]
    assert [s for s in StatusCheck if s.proceeds] == [
        StatusCheck.MATCHED,
        StatusCheck.NOT_OBSERVABLE,
    ]


# --- analyse: each rule ----------------------------------------------------------------


def test_service_base_and_problem_bump(rules: ServiceRules) -> None:
    task = analyse(rules, repair("no_heating"), running(ch_pressure=1.5))
    assert task.skills == {"gas_safe", "boiler_repair"}
    assert task.cost == 120.0
    assert task.complexity is Complexity.MEDIUM
    assert task.urgency is Urgency.HIGH  # repair is normal; no heating raises it to high
    assert task.reasons == (
        "service repair: skills boiler_repair, gas_safe; complexity medium; cost £120.00; "
        "urgency normal",
        "problem no_heating: urgency at least high",
    )


def test_annual_check_base(rules: ServiceRules) -> None:
    task = analyse(rules, ServiceRequest("annual_check", "annual_check"), running())
    assert task.skills == {"gas_safe", "annual_check"}
    assert (task.cost, task.complexity, task.urgency) == (90.0, Complexity.LOW, Urgency.PLANNED)
    assert task.description == "annual check"


def test_no_hot_water_is_at_least_normal(rules: ServiceRules) -> None:
    task = analyse(rules, repair("no_hot_water"), running())
    assert task.urgency is Urgency.NORMAL
    assert "problem no_hot_water: urgency at least normal" in task.reasons


def test_leak_is_urgent(rules: ServiceRules) -> None:
    task = analyse(rules, repair("leak"), running())
    assert task.urgency is Urgency.URGENT
    assert task.skills == {"gas_safe", "boiler_repair", "hydraulics"}


def test_f28_no_heating_in_the_cold(rules: ServiceRules) -> None:
    lockout = Observation("online", LOCKOUT, 28, {"outdoor_temp": 2.0})
    task = analyse(rules, repair("no_heating", "Radiators cold since 6am"), lockout)
    assert task.skills == {"gas_safe", "boiler_repair", "gas", "ignition"}
    assert task.cost == 200.0  # 120 + 80
    assert task.complexity is Complexity.HIGH  # F28 raises medium to high
    assert task.urgency is Urgency.URGENT  # no heating and a lockout, outdoors below 5 °C
    assert task.reasons[2] == (
        "live fault F28 (ignition failure (lockout)): skills + gas, ignition; "
        "complexity at least high; cost + £80.00; urgency at least high"
    )
    assert task.reasons[3] == (
        "cold: outdoor 2 °C is below 5 °C with no heating reported and fault F28 live: "
        "urgency at least urgent"
    )
    assert task.description == (
        "repair: no heating. Radiators cold since 6am. live fault F28: ignition failure (lockout)"
    )
    assert task.as_json() == {
        "complexity": "high",
        "skills": ["boiler_repair", "gas", "gas_safe", "ignition"],
        "cost": 200.0,
        "urgency": "urgent",
        "description": task.description,
        "reasons": list(task.reasons),
    }


def test_f28_without_cold_is_high(rules: ServiceRules) -> None:
    task = analyse(rules, repair("fault_shown"), Observation("online", LOCKOUT, 28))
    assert task.urgency is Urgency.HIGH
    assert not any(reason.startswith("cold") for reason in task.reasons)


@pytest.mark.parametrize(
    ("problem", "fault", "outdoor", "urgency"),
    [
        ("no_heating", 0, 4.9, Urgency.URGENT),  # problem listed in [cold]
        ("no_heating", 0, 5.0, Urgency.HIGH),  # not below the limit
        ("no_heating", 0, None, Urgency.HIGH),  # no outdoor sensor
        ("fault_shown", 29, 0.0, Urgency.URGENT),  # lockout fault listed in [cold]
        ("fault_shown", 22, 0.0, Urgency.NORMAL),  # F22 is not listed
        ("no_hot_water", 0, -3.0, Urgency.NORMAL),  # hot water is not heating
    ],
)
def test_cold_rule(
    rules: ServiceRules, problem: str, fault: int, outdoor: float | None, urgency: Urgency
) -> None:
    observation = Observation("online", RUNNING, fault, {"outdoor_temp": outdoor})
    assert analyse(rules, repair(problem), observation).urgency is urgency


def test_fault_rules_apply_to_any_service_type(rules: ServiceRules) -> None:
    blocked = Observation("online", BLOCKING_ERROR, 75)
    task = analyse(rules, ServiceRequest("service", "other"), blocked)
    assert task.skills == {"gas_safe", "boiler_service", "sensors"}
    assert task.cost == 160.0  # 100 + 60
    assert task.complexity is Complexity.MEDIUM
    assert task.urgency is Urgency.PLANNED


def test_repeat_fault_raises_complexity_and_cost(rules: ServiceRules) -> None:
    blocked = Observation("online", BLOCKING_ERROR, 22, {"ch_pressure": 0.4}, {22: 2, 28: 5})
    task = analyse(rules, repair("low_pressure"), blocked)
    assert task.complexity is Complexity.HIGH  # medium + 1 step
    assert task.cost == pytest.approx(187.5)  # (120 + 30) * 1.25
    assert task.skills == {"gas_safe", "boiler_repair", "hydraulics"}
    assert task.reasons[-1] == (
        "F22 recurred 2 times in the history window: complexity high, cost x1.25"
    )


def test_repeat_complexity_is_capped(rules: ServiceRules) -> None:
    lockout = Observation("online", LOCKOUT, 28, {}, {28: 4})
    task = analyse(rules, repair("fault_shown"), lockout)
    assert task.complexity is Complexity.HIGH
    assert task.cost == 250.0  # (120 + 80) * 1.25
    assert "F28 recurred 4 times in the history window" in task.reasons[-1]


def test_history_below_threshold_or_other_fault_does_nothing(rules: ServiceRules) -> None:
    once = Observation("online", BLOCKING_ERROR, 22, {}, {22: 1, 28: 9})
    task = analyse(rules, repair("low_pressure"), once)
    assert (task.complexity, task.cost) == (Complexity.MEDIUM, 150.0)
    no_fault = analyse(rules, repair("noise"), Observation("online", RUNNING, 0, {}, {28: 9}))
    assert (no_fault.complexity, no_fault.cost) == (Complexity.MEDIUM, 120.0)


def test_landlord_annual_check(rules: ServiceRules) -> None:
    rented = ServiceRequest("annual_check", "annual_check", rented=True)
    task = analyse(rules, rented, Observation("offline", None, None))
    assert task.urgency is Urgency.NORMAL
    assert task.reasons[-1] == (
        "landlord's annual gas-safety check (legal duty): urgency at least normal"
    )
    owner_occupied = ServiceRequest("annual_check", "annual_check", rented=False)
    assert analyse(rules, owner_occupied, running()).urgency is Urgency.PLANNED
    rented_repair = ServiceRequest("repair", "noise", rented=True)
    assert not any("landlord" in r for r in analyse(rules, rented_repair, running()).reasons)


def test_cost_rounds_to_pence_in_json(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(MINIMAL.replace("cost = 50.0", "cost = 33.333"))
    task = analyse(load_rules(path), ServiceRequest("fix", "broken"), running())
    assert task.as_json()["cost"] == 33.33


# --- check_status -----------------------------------------------------------------------


def test_lockout_matches_no_heating(rules: ServiceRules) -> None:
    lockout = Observation("online", LOCKOUT, 28, {"ch_pressure": 1.4}, {28: 1})
    result = check_status(rules, repair("no_heating"), lockout)
    assert result.outcome is StatusCheck.MATCHED and result.outcome.proceeds
    assert result.reason == (
        "live data shows no heating: status lockout, fault F28 (ignition failure (lockout))"
    )
    assert result.evidence == {
        "connectivity": "online",
        "status": 7,
        "status_label": "lockout",
        "fault_code": 28,
        "fault_name": "F28",
        "fault_text": "ignition failure (lockout)",
        "values": {"ch_pressure": 1.4},
        "fault_history": {"F28": 1},
        "predictions": {},
    }
    assert result.as_json() == {
        "outcome": "matched",
        "proceeds": True,
        "reason": result.reason,
        "evidence": result.evidence,
    }


def test_low_pressure_matches_on_the_value(rules: ServiceRules) -> None:
    result = check_status(rules, repair("low_pressure"), running(ch_pressure=0.6))
    assert result.outcome is StatusCheck.MATCHED
    assert result.reason == "live data shows low pressure: ch_pressure 0.6 is below 1.0"


def test_low_pressure_also_explains_no_heating(rules: ServiceRules) -> None:
    result = check_status(rules, repair("no_heating"), running(ch_pressure=0.5))
    assert result.outcome is StatusCheck.MATCHED


def test_running_boiler_contradicts_no_heating(rules: ServiceRules) -> None:
    result = check_status(rules, repair("no_heating"), running(ch_pressure=1.5))
    assert result.outcome is StatusCheck.STATUS_MISMATCH and not result.outcome.proceeds
    assert result.reason == (
        "boiler is online and running with no fault code; ch_pressure 1.5 is not below 1.0"
    )
    assert result.evidence["status_label"] == "running"
    assert result.evidence["fault_name"] is None


def test_mismatch_without_pressure_reading(rules: ServiceRules) -> None:
    result = check_status(rules, repair("no_hot_water"), Observation("online", 0, 0))
    assert result.outcome is StatusCheck.STATUS_MISMATCH
    assert result.reason == "boiler is online and in standby with no fault code"


def test_fault_shown_without_fault(rules: ServiceRules) -> None:
    result = check_status(rules, repair("fault_shown"), running())
    assert result.outcome is StatusCheck.STATUS_MISMATCH
    assert result.reason == "boiler is online and running with no fault code"


@pytest.mark.parametrize("connectivity", ["offline", "stale", "unknown"])
def test_not_online_cannot_be_checked(rules: ServiceRules, connectivity: str) -> None:
    last_seen = Observation(connectivity, RUNNING, 0, {"ch_pressure": 1.5})
    result = check_status(rules, repair("no_heating"), last_seen)
    assert result.outcome is StatusCheck.UNVERIFIED_OFFLINE and not result.outcome.proceeds
    assert result.reason == f"boiler is {connectivity}: its live status cannot be checked"
    assert result.evidence["connectivity"] == connectivity


def test_online_without_data_cannot_be_checked(rules: ServiceRules) -> None:
    result = check_status(rules, repair("no_heating"), Observation("online", None, None))
    assert result.outcome is StatusCheck.UNVERIFIED_OFFLINE
    assert "reports none of the data" in result.reason


@pytest.mark.parametrize(
    ("service_type", "problem"),
    [
        ("repair", "leak"),
        ("repair", "noise"),
        ("repair", "other"),
        ("annual_check", "annual_check"),
    ],
)
@pytest.mark.parametrize("connectivity", ["online", "offline"])
def test_not_observable(
    rules: ServiceRules, service_type: str, problem: str, connectivity: str
) -> None:
    seen = Observation(connectivity, RUNNING, 0)
    result = check_status(rules, ServiceRequest(service_type, problem), seen)
    assert result.outcome is StatusCheck.NOT_OBSERVABLE and result.outcome.proceeds
    assert "cannot be seen in boiler data" in result.reason
    assert result.evidence["connectivity"] == connectivity


@pytest.mark.parametrize("connectivity", ["online", "offline", "stale", "unknown"])
def test_a_predicted_problem_is_confirmed_by_the_warning_not_the_live_status(
    rules: ServiceRules, connectivity: str
) -> None:
    request = ServiceRequest("preventive", "predicted_leak")
    warning = {"id": 7, "fault": "F22", "days_to_fault": 9.4, "due": 1}
    warned = Observation(connectivity, RUNNING, 0, predictions={"leak": warning})
    result = check_status(rules, request, warned)
    assert result.outcome is StatusCheck.MATCHED
    assert result.reason == "an active warning shows predicted leak: F22 forecast in about 9 days"
    assert result.evidence["predictions"] == {"leak": warning}
    other = Observation(connectivity, RUNNING, 0, predictions={"fan": warning})
    result = check_status(rules, request, other)
    assert result.outcome is StatusCheck.STATUS_MISMATCH and not result.outcome.proceeds
    assert result.reason == "no active warning of leak: nothing confirms predicted leak"


def test_a_preventive_task_takes_its_skills_and_cost_from_the_mode(rules: ServiceRules) -> None:
    task = analyse(rules, ServiceRequest("preventive", "predicted_electrode"), running())
    assert task.skills == {"gas_safe", "gas", "ignition"}
    assert (task.cost, task.complexity, task.urgency) == (
        130.0,
        Complexity.MEDIUM,
        Urgency.PLANNED,
    )


def test_unknown_status_and_fault_in_evidence(rules: ServiceRules) -> None:
    odd = Observation("online", 12, 99)
    evidence = check_status(rules, repair("fault_shown"), odd).evidence
    assert evidence["status_label"] is None
    assert (evidence["fault_name"], evidence["fault_text"]) == ("F99", "unknown fault")


# --- Invalid requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ServiceRequest("install", "other"), "unknown service type 'install'"),
        (ServiceRequest("annual_check", "leak"), "'leak' is not allowed for service type"),
        (ServiceRequest("repair", "smells_funny"), "'smells_funny' is not allowed"),
    ],
)
def test_invalid_requests_raise_value_error(
    rules: ServiceRules, request_: ServiceRequest, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        analyse(rules, request_, running())
    with pytest.raises(ValueError, match=message):
        check_status(rules, request_, running())


def test_problems_of_unknown_type(rules: ServiceRules) -> None:
    with pytest.raises(ValueError, match="expected one of repair, annual_check, service"):
        rules.problems("install")


# --- Override files ---------------------------------------------------------------------

MINIMAL = """
[service.fix]
problems = ["broken"]
skills = ["tinker"]
cost = 50.0
urgency = "high"

[problem.broken]
confirmed_by_status = ["lockout"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_override_replaces_the_packaged_rules(tmp_path: Path) -> None:
    custom = load_rules(write(tmp_path, MINIMAL))
    assert custom.service_types == ("fix",)
    assert custom.source == str(tmp_path / "rules.toml")
    cold_lockout = Observation("online", LOCKOUT, 28, {"outdoor_temp": -5.0}, {28: 9})
    task = analyse(custom, ServiceRequest("fix", "broken"), cold_lockout)
    # No [fault], [cold], [history] or [owner]: only the base applies.
    assert task.skills == {"tinker"}
    assert task.cost == 50.0
    assert (task.complexity, task.urgency) == (Complexity.LOW, Urgency.HIGH)
    assert len(task.reasons) == 1
    assert check_status(custom, ServiceRequest("fix", "broken"), cold_lockout).outcome is (
        StatusCheck.MATCHED
    )
    with pytest.raises(ValueError):
        analyse(custom, repair("no_heating"), cold_lockout)


def test_override_changes_the_numbers(tmp_path: Path) -> None:
    text = MINIMAL + '[fault.F28]\ncost = 10\n\n[cold]\noutdoor_below_c = -10\nfaults = ["F28"]\n'
    text += 'urgency = "urgent"\n'
    custom = load_rules(write(tmp_path, text))
    request = ServiceRequest("fix", "broken")
    mild = analyse(custom, request, Observation("online", LOCKOUT, 28, {"outdoor_temp": -5.0}))
    assert (mild.cost, mild.urgency) == (60.0, Urgency.HIGH)
    bitter = analyse(custom, request, Observation("online", LOCKOUT, 28, {"outdoor_temp": -11}))
    assert bitter.urgency is Urgency.URGENT


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (MINIMAL.replace('urgency = "high"', 'urgency = "asap"'), "service.fix.urgency", "asap"),
        (MINIMAL.replace("cost = 50.0", "cost = -5"), "service.fix.cost", ">= 0"),
        (MINIMAL.replace("cost = 50.0", 'cost = "50"'), "service.fix.cost", "a number"),
        (MINIMAL + "[servcie.x]\n", "servcie", "unknown key"),
        (MINIMAL + "[problem.broken.extra]\n", "problem.broken.extra", "unknown key"),
        (MINIMAL.replace('["broken"]', '["broken", "gone"]'), "service.fix.problems", "'gone'"),
        (MINIMAL.replace('["lockout"]', '["locked"]'), "problem.broken.confirmed_by_status", ""),
        (MINIMAL + "[fault.X28]\ncost = 1\n", "fault.X28", "not a fault code"),
        (MINIMAL + "[fault.F28]\ncost = -1\n", "fault.F28.cost", ">= 0"),
        (MINIMAL + "[problem.vague]\n", "problem.vague.observable", "needs confirmed_by"),
        (
            MINIMAL + '[problem.p]\nobservable = false\nconfirmed_by_prediction = "leak"\n',
            "problem.p.observable",
            "false allows none",
        ),
        (
            MINIMAL + "[problem.p]\nconfirmed_by_prediction = 3\n",
            "problem.p.confirmed_by_prediction",
            "a name",
        ),
        (
            MINIMAL + '[problem.p]\nconfirmed_by_prediction = ""\n',
            "problem.p.confirmed_by_prediction",
            "non-empty",
        ),
        (
            MINIMAL + "[history]\nrepeat_episodes = 0\nrepeat_cost_factor = 1.5\n",
            "history.repeat_episodes",
            ">= 1",
        ),
        (
            MINIMAL + "[history]\nrepeat_episodes = 2\nrepeat_cost_factor = 0.5\n",
            "history.repeat_cost_factor",
            ">= 1",
        ),
        (
            MINIMAL + '[owner]\nservice_types = ["repair"]\nurgency = "normal"\n',
            "owner.service_types",
            "'repair'",
        ),
        (
            MINIMAL + '[cold]\noutdoor_below_c = 5\nurgency = "urgent"\nproblems = ["x"]\n',
            "cold.problems",
            "'x'",
        ),
        (MINIMAL.split("[problem.broken]")[0], "problem", "missing"),
        ("service = 1\n[problem.broken]\nobservable = false\n", "service", "a table"),
    ],
)
def test_malformed_override_names_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules(write(tmp_path, text))
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(tmp_path / "rules.toml") in caught.value.reason


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[service.repair\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_rules(path)
    assert caught.value.key == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")
