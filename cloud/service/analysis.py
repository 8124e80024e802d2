"""Service analysis: T = f(M, R, O) -> <complexity P, skills K, cost SC, urgency SL, $>.

Pure: the only I/O is reading the rules file. `check_status` is the second step of request
validation (does the live twin M show the problem the request R reports?); `analyse` turns
R, M and the owner's situation O into a `TaskProfile` for crowdsourcing. Both follow
`ServiceRules`, loaded from the packaged ``rules.toml`` or an operator's replacement; that
file documents the format and every rule. Each rule dataclass names, per field, the reader
that parses its key, so the file format is declared next to the values it produces.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cloud.errors import ConfigError
from protocols.reference import BoilerStatus, fault_name, fault_text, status_label

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class _Level(IntEnum):
    @property
    def label(self) -> str:
        """Lower-case name, as in JSON and the rules file."""
        return self.name.lower()


class Urgency(_Level):
    """How soon the service is needed (the paper's SL)."""

    PLANNED = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3


class Complexity(_Level):
    """How hard the job is (the paper's P)."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2


class StatusCheck(StrEnum):
    """Outcome of checking a request's problem against the live twin."""

    MATCHED = "matched"
    """The live status shows the reported problem."""
    STATUS_MISMATCH = "status_mismatch"
    """Online, and the live data contradicts the reported problem."""
    UNVERIFIED_OFFLINE = "unverified_offline"
    """Offline, stale or unknown (or online without the data needed): cannot check."""
    NOT_OBSERVABLE = "not_observable"
    """The problem cannot be seen in boiler data (noise, leak, annual check...)."""

    @property
    def proceeds(self) -> bool:
        """Goes on to crowdsourcing; otherwise a person confirms the request first."""
        return self in (StatusCheck.MATCHED, StatusCheck.NOT_OBSERVABLE)


def _fault_text(code: int) -> str:
    return fault_text(code) or "unknown fault"


@dataclass(frozen=True, slots=True)
class Observation:
    """M: what the product twin shows now, and the boiler's recent fault history."""

    connectivity: str
    """``online``, ``offline``, ``stale`` or ``unknown`` (`cloud.domain.Connectivity`)."""
    status: int | None
    fault_code: int | None
    values: Mapping[str, float | None] = field(default_factory=dict)
    """Latest numeric twin values: ``ch_pressure`` (bar), ``outdoor_temp`` (°C)..."""
    fault_history: Mapping[int, int] = field(default_factory=dict)
    """Fault code -> number of fault/lockout episodes in the history window."""
    predictions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Failure mode -> the boiler's active predictive-maintenance warning of it (its id,
    the fault forecast and when)."""

    def evidence(self) -> dict[str, Any]:
        """What was seen, as JSON, for the request's record."""
        fault = self.fault_code
        return {
            "connectivity": str(self.connectivity),
            "status": None if self.status is None else int(self.status),
            "status_label": None if self.status is None else status_label(self.status),
            "fault_code": None if fault is None else int(fault),
            "fault_name": fault_name(fault) if fault else None,
            "fault_text": None if fault is None else _fault_text(fault),
            "values": dict(self.values),
            "fault_history": {fault_name(c): n for c, n in sorted(self.fault_history.items())},
            "predictions": {mode: dict(p) for mode, p in sorted(self.predictions.items())},
        }


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """R, and what the platform knows of the owner (O)."""

    service_type: str
    problem: str
    description: str = ""
    rented: bool = False
    """The property has a tenant: the landlord must have the gas appliances checked yearly."""


@dataclass(frozen=True, slots=True)
class TaskProfile:
    """T = <P, K, SC, SL, $>, with the reasons that produced it."""

    complexity: Complexity
    skills: frozenset[str]
    cost: float
    """Estimated cost, GBP."""
    urgency: Urgency
    description: str
    reasons: tuple[str, ...]
    """Which rule raised what, in the order applied."""

    def as_json(self) -> dict[str, Any]:
        """JSON form: levels as labels, skills sorted, cost rounded to pence."""
        return {
            "complexity": self.complexity.label,
            "skills": sorted(self.skills),
            "cost": round(self.cost, 2),
            "urgency": self.urgency.label,
            "description": self.description,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Validation:
    """Outcome of `check_status`, with the evidence it was based on."""

    outcome: StatusCheck
    reason: str
    evidence: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "outcome": self.outcome.value,
            "proceeds": self.outcome.proceeds,
            "reason": self.reason,
            "evidence": self.evidence,
        }


# --- Readers: each parses one key of a rules-file table -----------------------------------

_Reader = Callable[["_Table", str], Any]
_REQUIRED: Any = object()
_T = TypeVar("_T", bound="DataclassInstance")


def _reads(reader: _Reader) -> dict[str, _Reader]:
    return {"toml": reader}


def _names(default: Any = _REQUIRED, as_set: bool = False) -> _Reader:
    def read(table: _Table, key: str) -> tuple[str, ...] | frozenset[str]:
        items = table.get(key, list, "a list of names", default)
        if not all(isinstance(item, str) and item for item in items):
            raise table.error(key, f"must be a list of non-empty strings, got {items!r}")
        return frozenset(items) if as_set else tuple(items)

    return read


def _number(minimum: float = 0.0, default: Any = _REQUIRED, whole: bool = False) -> _Reader:
    def read(table: _Table, key: str) -> float:
        value = table.get(key, int if whole else (int, float), "a number", default)
        if not math.isfinite(value) or value < minimum:
            raise table.error(key, f"must be a number >= {minimum:g}, got {value!r}")
        return int(value) if whole else float(value)

    return read


def _level(kind: type[_Level], default: Any = _REQUIRED) -> _Reader:
    def read(table: _Table, key: str) -> _Level | None:
        labels = {level.label: level for level in kind}
        text = table.get(key, str, "a label", default)
        if text is not None:
            table.refs(key, [text], labels, kind.__name__.lower())
        return None if text is None else labels[text]

    return read


def _name(default: Any = _REQUIRED) -> _Reader:
    def read(table: _Table, key: str) -> str | None:
        value = table.get(key, str, "a name", default)
        if value is not None and not value:
            raise table.error(key, "must be a non-empty name")
        return value

    return read


def _flag(default: bool) -> _Reader:
    return lambda table, key: table.get(key, bool, "true or false", default)


def _fault_code(table: _Table, key: str, name: str) -> int:
    if name.startswith("F") and name[1:].isdigit() and int(name[1:]) > 0:
        return int(name[1:])
    raise table.error(key, f"{name!r} is not a fault code: write it as displayed, e.g. F28")


def _faults(table: _Table, key: str) -> frozenset[int]:
    return frozenset(_fault_code(table, key, name) for name in _names(())(table, key))


def _statuses(table: _Table, key: str) -> frozenset[BoilerStatus]:
    labels = {status.label: status for status in BoilerStatus}
    names = _names(())(table, key)
    table.refs(key, names, labels, "status")
    return frozenset(labels[name] for name in names)


def _below(table: _Table, key: str) -> Mapping[str, float]:
    limits = table.sub(key) if key in table.data else _Table({}, key, table.source)
    return {name: _number(-math.inf)(limits, name) for name in limits.data}


# --- Rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule's effect on the task: skills added, levels raised to at least, cost added."""

    skills: frozenset[str] = field(metadata=_reads(_names((), as_set=True)))
    complexity: Complexity | None = field(metadata=_reads(_level(Complexity, None)))
    cost: float = field(metadata=_reads(_number(default=0.0)))
    """GBP."""
    urgency: Urgency | None = field(metadata=_reads(_level(Urgency, None)))


@dataclass(frozen=True, slots=True)
class ServiceType(Rule):
    """``[service.<name>]``: the problems it accepts; its effects are the base task."""

    name: str = field()
    problems: tuple[str, ...] = field(metadata=_reads(_names()))


@dataclass(frozen=True, slots=True)
class Problem(Rule):
    """``[problem.<name>]``: which live data would confirm it, and its effects."""

    name: str = field()
    observable: bool = field(metadata=_reads(_flag(True)))
    confirmed_by_status: frozenset[BoilerStatus] = field(metadata=_reads(_statuses))
    confirmed_by_fault: bool = field(metadata=_reads(_flag(False)))
    """Any nonzero fault code confirms it."""
    confirmed_below: Mapping[str, float] = field(metadata=_reads(_below))
    """Twin value -> limit: a value below its limit confirms it."""
    confirmed_by_prediction: str | None = field(metadata=_reads(_name(None)))
    """An active predictive-maintenance warning of this failure mode confirms it."""


@dataclass(frozen=True, slots=True)
class ColdRule:
    """``[cold]``: no heat in cold weather."""

    outdoor_below_c: float = field(metadata=_reads(_number(-math.inf)))
    problems: tuple[str, ...] = field(metadata=_reads(_names(())))
    faults: frozenset[int] = field(metadata=_reads(_faults))
    urgency: Urgency = field(metadata=_reads(_level(Urgency)))


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """``[history]``: a live fault that keeps coming back."""

    repeat_episodes: int = field(metadata=_reads(_number(1, whole=True)))
    complexity_steps: int = field(metadata=_reads(_number(0, 1, whole=True)))
    repeat_cost_factor: float = field(metadata=_reads(_number(1.0)))


@dataclass(frozen=True, slots=True)
class OwnerRule:
    """``[owner]``: a landlord's annual gas-safety check is a legal duty."""

    service_types: tuple[str, ...] = field(metadata=_reads(_names()))
    urgency: Urgency = field(metadata=_reads(_level(Urgency)))


@dataclass(frozen=True, slots=True)
class ServiceRules:
    """Parsed, validated analysis rules; build with `load_rules`."""

    services: Mapping[str, ServiceType]
    problem_rules: Mapping[str, Problem]
    faults: Mapping[int, Rule]
    cold: ColdRule | None
    history: HistoryRule | None
    owner: OwnerRule | None
    source: str
    """Where the rules came from: a path, or the packaged file."""

    @property
    def service_types(self) -> tuple[str, ...]:
        """Known service types, in file order."""
        return tuple(self.services)

    def problems(self, service_type: str) -> tuple[str, ...]:
        """Problems a service type accepts; `ValueError` for an unknown type."""
        if service_type not in self.services:
            known = ", ".join(self.services)
            raise ValueError(f"unknown service type {service_type!r}; expected one of {known}")
        return self.services[service_type].problems

    def validate(self, request: ServiceRequest) -> tuple[ServiceType, Problem]:
        """The request's rules; `ValueError` for an unknown type or a problem it does not take."""
        allowed = self.problems(request.service_type)
        if request.problem not in allowed:
            raise ValueError(
                f"problem {request.problem!r} is not allowed for service type "
                f"{request.service_type!r}; allowed: {', '.join(allowed)}"
            )
        return self.services[request.service_type], self.problem_rules[request.problem]


def load_rules(path: Path | None = None) -> ServiceRules:
    """Rules from `path`, else the packaged ``rules.toml``; `ConfigError` names a bad key."""
    source = "packaged cloud/service/rules.toml" if path is None else str(path)
    try:
        if path is None:
            text = resources.files("cloud.service").joinpath("rules.toml").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    return _parse(_Table(data, "", source))


def analyse(rules: ServiceRules, request: ServiceRequest, observation: Observation) -> TaskProfile:
    """T = f(M, R, O). Each rule that fires adds a reason; they apply in this order:

    1. ``[service.<type>]``: the base skills, complexity, cost and urgency.
    2. ``[problem.<name>]``: the reported problem's effects.
    3. ``[fault.F<n>]``: the live fault's effects (nonzero ``fault_code``, any service type).
    4. ``[history]``: the live fault recurred at least ``repeat_episodes`` times in the
       history window: complexity up ``complexity_steps`` (capped at high) and the cost so
       far times ``repeat_cost_factor``.
    5. ``[cold]``: ``outdoor_temp`` below ``outdoor_below_c`` with one of its problems
       reported or one of its faults live: urgency at least ``urgency``.
    6. ``[owner]``: one of its service types on a rented property: urgency at least ``urgency``.

    Effects add skills and cost and raise complexity and urgency to at least their level.
    """
    service, problem = rules.validate(request)
    task = _Draft()
    task.apply(service, f"service {service.name}", base=True)
    task.apply(problem, f"problem {problem.name}")
    fault = observation.fault_code or 0
    if fault in rules.faults:
        task.apply(rules.faults[fault], f"live fault {fault_name(fault)} ({_fault_text(fault)})")
    episodes = observation.fault_history.get(fault, 0) if fault else 0
    if rules.history is not None and episodes >= rules.history.repeat_episodes:
        factor = rules.history.repeat_cost_factor
        task.complexity = min(Complexity.HIGH, task.complexity + rules.history.complexity_steps)
        task.cost *= factor
        task.reasons.append(
            f"{fault_name(fault)} recurred {episodes} times in the history window: "
            f"complexity {Complexity(task.complexity).label}, cost x{factor:g}"
        )
    cold, outdoor = rules.cold, observation.values.get("outdoor_temp")
    if cold is not None and outdoor is not None and outdoor < cold.outdoor_below_c:
        why = [f"{_words(problem.name)} reported"] if problem.name in cold.problems else []
        why += [f"fault {fault_name(fault)} live"] if fault in cold.faults else []
        if why:
            task.urgency = max(task.urgency, cold.urgency)
            task.reasons.append(
                f"cold: outdoor {outdoor:g} °C is below {cold.outdoor_below_c:g} °C with "
                f"{' and '.join(why)}: urgency at least {cold.urgency.label}"
            )
    owner = rules.owner
    if owner is not None and request.rented and service.name in owner.service_types:
        task.urgency = max(task.urgency, owner.urgency)
        duty = "landlord's annual gas-safety check (legal duty)"
        task.reasons.append(f"{duty}: urgency at least {owner.urgency.label}")
    parts = [_words(service.name), request.description.strip()]
    if problem.name != service.name:
        parts[0] += f": {_words(problem.name)}"
    parts += [f"live fault {fault_name(fault)}: {_fault_text(fault)}"] if fault else []
    return TaskProfile(
        complexity=Complexity(task.complexity),
        skills=frozenset(task.skills),
        cost=task.cost,
        urgency=Urgency(task.urgency),
        description=". ".join(part for part in parts if part),
        reasons=tuple(task.reasons),
    )


def check_status(
    rules: ServiceRules, request: ServiceRequest, observation: Observation
) -> Validation:
    """Does the live twin show the reported problem? (Request validation, second step.)"""
    _, problem = rules.validate(request)
    evidence, what = observation.evidence(), _words(problem.name)
    if not problem.observable:
        reason = f"{what} cannot be seen in boiler data: a person must confirm it"
        return Validation(StatusCheck.NOT_OBSERVABLE, reason, evidence)
    if problem.confirmed_by_prediction is not None:
        return _check_prediction(problem.confirmed_by_prediction, what, observation, evidence)
    if observation.connectivity != "online":
        reason = f"boiler is {observation.connectivity}: its live status cannot be checked"
        return Validation(StatusCheck.UNVERIFIED_OFFLINE, reason, evidence)
    status, fault = observation.status, observation.fault_code
    shown: list[str] = []
    not_shown: list[str] = []
    checked = (problem.confirmed_by_fault and fault is not None) or (
        bool(problem.confirmed_by_status) and status is not None
    )
    if status is not None and status in problem.confirmed_by_status:
        shown.append(f"status {status_label(status)}")
    if problem.confirmed_by_fault and fault:
        shown.append(f"fault {fault_name(fault)} ({_fault_text(fault)})")
    for key, limit in problem.confirmed_below.items():
        value = observation.values.get(key)
        if value is not None:
            checked, below = True, value < limit
            (shown if below else not_shown).append(
                f"{key} {value} is {'' if below else 'not '}below {limit}"
            )
    if shown:
        reason = f"live data shows {what}: {', '.join(shown)}"
        return Validation(StatusCheck.MATCHED, reason, evidence)
    if not checked:
        reason = f"boiler is online but reports none of the data that would show {what}"
        return Validation(StatusCheck.UNVERIFIED_OFFLINE, reason, evidence)
    seen = "boiler is online"
    if status is not None:
        label = status_label(status)
        seen += f" and {_STATUS_PHRASE.get(status, f'in {_words(label or str(status))}')}"
    if fault is not None:
        seen += f" with fault {fault_name(fault)}" if fault else " with no fault code"
    return Validation(StatusCheck.STATUS_MISMATCH, "; ".join([seen, *not_shown]), evidence)


def _check_prediction(
    mode: str, what: str, observation: Observation, evidence: dict[str, Any]
) -> Validation:
    """A predicted problem is confirmed by the warning itself (days of stored data), not by
    the live status: it holds whether or not the boiler is online right now."""
    warning = observation.predictions.get(mode)
    if warning is None:
        reason = f"no active warning of {_words(mode)}: nothing confirms {what}"
        return Validation(StatusCheck.STATUS_MISMATCH, reason, evidence)
    reason = (
        f"an active warning shows {what}: {warning.get('fault')} forecast in about "
        f"{float(warning.get('days_to_fault') or 0):.0f} days"
    )
    return Validation(StatusCheck.MATCHED, reason, evidence)


_STATUS_PHRASE: dict[int, str] = {
    BoilerStatus.CH_DEMAND: "heating the radiators",
    BoilerStatus.DHW_DEMAND: "heating hot water",
    BoilerStatus.IGNITION: "igniting",
    BoilerStatus.RUNNING: "running",
}


def _words(name: str) -> str:
    return name.replace("_", " ")


class _Draft:
    """The task as the rules build it up."""

    def __init__(self) -> None:
        self.complexity, self.urgency, self.cost = 0, 0, 0.0
        self.skills: set[str] = set()
        self.reasons: list[str] = []

    def apply(self, rule: Rule, name: str, base: bool = False) -> None:
        effects = []
        plus, at_least = ("", "") if base else ("+ ", "at least ")
        if rule.skills:
            self.skills |= rule.skills
            effects.append(f"skills {plus}{', '.join(sorted(rule.skills))}")
        if rule.complexity is not None:
            self.complexity = max(self.complexity, rule.complexity)
            effects.append(f"complexity {at_least}{rule.complexity.label}")
        if rule.cost:
            self.cost += rule.cost
            effects.append(f"cost {plus}£{rule.cost:.2f}")
        if rule.urgency is not None:
            self.urgency = max(self.urgency, rule.urgency)
            effects.append(f"urgency {at_least}{rule.urgency.label}")
        if effects:
            self.reasons.append(f"{name}: {'; '.join(effects)}")


# --- Parsing -------------------------------------------------------------------------------


class _Table:
    """One TOML table; errors name the offending key by its dotted path."""

    def __init__(self, data: object, path: str, source: str) -> None:
        self.path, self.source = path, source
        if not isinstance(data, dict):
            raise ConfigError(path, f"must be a table ({source})")
        self.data: dict[str, Any] = data

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(".".join(p for p in (self.path, key) if p), f"{reason} ({self.source})")

    def get(self, key: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, "missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.error(key, f"must be {what}, got {value!r}")
        return value

    def sub(self, key: str) -> _Table:
        return _Table(self.data[key], ".".join(p for p in (self.path, key) if p), self.source)

    def only(self, keys: Iterable[str]) -> None:
        for key in self.data:
            if key not in keys:
                raise self.error(key, f"unknown key; expected one of {', '.join(keys)}")

    def refs(self, key: str, names: Iterable[str], known: Mapping[str, Any], what: str) -> None:
        for name in names:
            if name not in known:
                raise self.error(
                    key, f"unknown {what} {name!r}; expected one of {', '.join(known)}"
                )

    def build(self, cls: type[_T], **given: Any) -> _T:
        readers = {f.name: f.metadata["toml"] for f in fields(cls) if "toml" in f.metadata}
        self.only(readers)
        return cls(**given, **{key: read(self, key) for key, read in readers.items()})

    def entries(self, key: str, required: bool = True) -> dict[str, _Table]:
        if required and not self.get(key, dict, "a table", _REQUIRED):
            raise self.error(key, "must define at least one entry")
        section = self.sub(key) if key in self.data else _Table({}, key, self.source)
        return {name: section.sub(name) for name in section.data}


def _parse(top: _Table) -> ServiceRules:
    top.only(("service", "problem", "fault", "cold", "history", "owner"))
    problems = {}
    for name, table in top.entries("problem").items():
        problems[name] = problem = table.build(Problem, name=name)
        confirms = problem.confirmed_by_status or problem.confirmed_by_fault
        if problem.observable != bool(
            confirms or problem.confirmed_below or problem.confirmed_by_prediction
        ):
            raise table.error(
                "observable",
                "true needs confirmed_by_status, confirmed_by_fault, confirmed_below or "
                "confirmed_by_prediction; false allows none of them",
            )
    services = {}
    for name, table in top.entries("service").items():
        services[name] = table.build(ServiceType, name=name)
        table.refs("problems", services[name].problems, problems, "problem")
    faults = {
        _fault_code(top, f"fault.{name}", name): table.build(Rule)
        for name, table in top.entries("fault", required=False).items()
    }
    cold = top.sub("cold").build(ColdRule) if "cold" in top.data else None
    if cold is not None:
        top.sub("cold").refs("problems", cold.problems, problems, "problem")
    history = top.sub("history").build(HistoryRule) if "history" in top.data else None
    owner = top.sub("owner").build(OwnerRule) if "owner" in top.data else None
    if owner is not None:
        top.sub("owner").refs("service_types", owner.service_types, services, "service type")
    return ServiceRules(services, problems, faults, cold, history, owner, top.source)
