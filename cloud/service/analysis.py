"""Service analysis: T = f(M, R, O) -> <complexity P, skills K, cost SC, urgency SL, $>.

Pure: the only I/O is reading the rules file. `check_status` is the second step of request
validation (does the live twin M show the problem the request R reports?); `analyse` turns
R, M and the owner's situation O into a `TaskProfile` for crowdsourcing. Both follow
`ServiceRules`, loaded from the packaged ``rules.toml`` or an operator's replacement; that
file documents the format and every rule.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from cloud.errors import ConfigError
from protocols.reference import BoilerStatus, FaultCode


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


def fault_name(code: int) -> str:
    """``28`` -> ``"F28"``, as the boiler's display and the rules file name faults."""
    return f"F{code}"


def _fault_text(code: int) -> str:
    return FaultCode(code).text if code in FaultCode else "unknown fault"


def _status_label(status: int) -> str | None:
    return BoilerStatus(status).label if status in BoilerStatus else None


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

    def evidence(self) -> dict[str, Any]:
        """What was seen, as JSON, for the request's record."""
        fault = self.fault_code
        return {
            "connectivity": str(self.connectivity),
            "status": self.status,
            "status_label": None if self.status is None else _status_label(self.status),
            "fault_code": fault,
            "fault_name": fault_name(fault) if fault else None,
            "fault_text": None if fault is None else _fault_text(fault),
            "values": dict(self.values),
            "fault_history": {fault_name(c): n for c, n in sorted(self.fault_history.items())},
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


@dataclass(frozen=True, slots=True)
class Adjustment:
    """What a problem or a live fault adds: skills, cost, and levels it raises the task to."""

    skills: frozenset[str]
    complexity_at_least: Complexity | None
    extra_cost: float
    urgency_at_least: Urgency | None


@dataclass(frozen=True, slots=True)
class ServiceType:
    """``[service.<name>]``: the problems it accepts and its base task."""

    name: str
    problems: tuple[str, ...]
    skills: frozenset[str]
    complexity: Complexity
    cost: float
    urgency: Urgency


@dataclass(frozen=True, slots=True)
class Problem:
    """``[problem.<name>]``: which live data would confirm it, and what it adds."""

    name: str
    observable: bool
    confirmed_by_status: frozenset[BoilerStatus]
    confirmed_by_fault: bool
    confirmed_below: Mapping[str, float]
    adjustment: Adjustment


@dataclass(frozen=True, slots=True)
class ColdRule:
    """``[cold]``: no heat in cold weather."""

    outdoor_below_c: float
    problems: tuple[str, ...]
    faults: frozenset[int]
    urgency: Urgency


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """``[history]``: a live fault that keeps coming back."""

    repeat_episodes: int
    complexity_steps: int
    repeat_cost_factor: float


@dataclass(frozen=True, slots=True)
class OwnerRule:
    """``[owner]``: a landlord's annual gas-safety check is a legal duty."""

    service_types: tuple[str, ...]
    urgency_at_least: Urgency


@dataclass(frozen=True, slots=True)
class ServiceRules:
    """Parsed, validated analysis rules; build with `load_rules`."""

    services: Mapping[str, ServiceType]
    problem_rules: Mapping[str, Problem]
    faults: Mapping[int, Adjustment]
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
        return self._service(service_type).problems

    def validate(self, request: ServiceRequest) -> tuple[ServiceType, Problem]:
        """The request's rules; `ValueError` for an unknown type or a problem it does not take."""
        service = self._service(request.service_type)
        if request.problem not in service.problems:
            raise ValueError(
                f"problem {request.problem!r} is not allowed for service type "
                f"{service.name!r}; allowed: {', '.join(service.problems)}"
            )
        return service, self.problem_rules[request.problem]

    def _service(self, service_type: str) -> ServiceType:
        if service_type not in self.services:
            known = ", ".join(self.services)
            raise ValueError(f"unknown service type {service_type!r}; expected one of {known}")
        return self.services[service_type]


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

    1. ``[service.<type>]``: base skills, complexity, cost and urgency.
    2. ``[problem.<name>]``: the reported problem's skills, extra cost and minimum levels.
    3. ``[fault.F<n>]``: the live fault's, for a nonzero ``fault_code`` and any service type.
    4. ``[history]``: the live fault recurred at least ``repeat_episodes`` times in the
       history window: complexity up ``complexity_steps`` (capped at high) and the cost so
       far times ``repeat_cost_factor``.
    5. ``[cold]``: ``outdoor_temp`` below ``outdoor_below_c`` with one of its problems
       reported or one of its faults live: urgency at least ``urgency``.
    6. ``[owner]``: one of its service types on a rented property: urgency at least
       ``urgency_at_least``.

    "At least" only ever raises a level; costs add; skills are unioned.
    """
    service, problem = rules.validate(request)
    task = _Draft(service)
    task.apply(problem.adjustment, f"problem {problem.name}")
    fault = observation.fault_code or 0
    if fault and fault in rules.faults:
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
        why = (
            [f"{problem.name.replace('_', ' ')} reported"] if problem.name in cold.problems else []
        )
        why += [f"fault {fault_name(fault)} live"] if fault in cold.faults else []
        if why:
            task.urgency = max(task.urgency, cold.urgency)
            task.reasons.append(
                f"cold: outdoor {outdoor:g} °C is below {cold.outdoor_below_c:g} °C with "
                f"{' and '.join(why)}: urgency at least {cold.urgency.label}"
            )
    owner = rules.owner
    if owner is not None and request.rented and service.name in owner.service_types:
        task.urgency = max(task.urgency, owner.urgency_at_least)
        task.reasons.append(
            "landlord's annual gas-safety check (legal duty): "
            f"urgency at least {owner.urgency_at_least.label}"
        )
    parts = [f"{service.name.replace('_', ' ')}: {problem.name.replace('_', ' ')}"]
    parts += [request.description.strip()] if request.description.strip() else []
    parts += [f"live fault {fault_name(fault)}: {_fault_text(fault)}"] if fault else []
    return TaskProfile(
        complexity=Complexity(task.complexity),
        skills=frozenset(task.skills),
        cost=task.cost,
        urgency=Urgency(task.urgency),
        description=". ".join(parts),
        reasons=tuple(task.reasons),
    )


def check_status(
    rules: ServiceRules, request: ServiceRequest, observation: Observation
) -> Validation:
    """Does the live twin show the reported problem? (Request validation, second step.)"""
    _, problem = rules.validate(request)
    evidence = observation.evidence()
    what = problem.name.replace("_", " ")
    if not problem.observable:
        reason = f"{what} cannot be seen in boiler data: a person must confirm it"
        return Validation(StatusCheck.NOT_OBSERVABLE, reason, evidence)
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
        shown.append(f"status {_status_label(status)}")
    if problem.confirmed_by_fault and fault:
        shown.append(f"fault {fault_name(fault)} ({_fault_text(fault)})")
    for key, limit in problem.confirmed_below.items():
        value = observation.values.get(key)
        if value is not None:
            checked = True
            below = value < limit
            (shown if below else not_shown).append(
                f"{key} {value:g} is {'' if below else 'not '}below {limit:g}"
            )
    if shown:
        reason = f"live data shows {what}: {', '.join(shown)}"
        return Validation(StatusCheck.MATCHED, reason, evidence)
    if not checked:
        reason = f"boiler is online but reports none of the data that would show {what}"
        return Validation(StatusCheck.UNVERIFIED_OFFLINE, reason, evidence)
    seen = "boiler is online"
    if status is not None:
        seen += f" and {_STATUS_PHRASE.get(status, f'in status {status}')}"
    if fault is not None:
        seen += f" with fault {fault_name(fault)}" if fault else " with no fault code"
    return Validation(StatusCheck.STATUS_MISMATCH, "; ".join([seen, *not_shown]), evidence)


_STATUS_PHRASE = {
    BoilerStatus.STANDBY: "in standby",
    BoilerStatus.CH_DEMAND: "heating the radiators",
    BoilerStatus.DHW_DEMAND: "heating hot water",
    BoilerStatus.IGNITION: "igniting",
    BoilerStatus.RUNNING: "running",
    BoilerStatus.POST_PURGE: "in post-purge",
    BoilerStatus.BLOCKING_ERROR: "in blocking error",
    BoilerStatus.LOCKOUT: "in lockout",
}


class _Draft:
    """The task as the rules build it up."""

    def __init__(self, service: ServiceType) -> None:
        self.complexity: int = service.complexity
        self.skills = set(service.skills)
        self.cost = service.cost
        self.urgency: int = service.urgency
        self.reasons = [
            f"service {service.name}: skills {', '.join(sorted(service.skills))}; complexity "
            f"{service.complexity.label}; cost £{service.cost:.2f}; urgency {service.urgency.label}"
        ]

    def apply(self, adjustment: Adjustment, rule: str) -> None:
        effects = []
        if adjustment.skills:
            self.skills |= adjustment.skills
            effects.append(f"skills + {', '.join(sorted(adjustment.skills))}")
        if adjustment.complexity_at_least is not None:
            self.complexity = max(self.complexity, adjustment.complexity_at_least)
            effects.append(f"complexity at least {adjustment.complexity_at_least.label}")
        if adjustment.extra_cost:
            self.cost += adjustment.extra_cost
            effects.append(f"cost + £{adjustment.extra_cost:.2f}")
        if adjustment.urgency_at_least is not None:
            self.urgency = max(self.urgency, adjustment.urgency_at_least)
            effects.append(f"urgency at least {adjustment.urgency_at_least.label}")
        if effects:
            self.reasons.append(f"{rule}: {'; '.join(effects)}")


# --- Reading the rules file: each section is a spec of key -> reader ---------------------

_Reader = Callable[["_Table", str], Any]
_REQUIRED: Any = object()


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
        return _Table(self.data[key], f"{self.path}.{key}".lstrip("."), self.source)

    def read(self, spec: Mapping[str, _Reader]) -> dict[str, Any]:
        for key in self.data:
            if key not in spec:
                raise self.error(key, f"unknown key; expected one of {', '.join(spec)}")
        return {key.replace(".", "_"): reader(self, key) for key, reader in spec.items()}

    def refs(self, key: str, names: tuple[str, ...], known: Mapping[str, Any]) -> None:
        for name in names:
            if name not in known:
                raise self.error(key, f"{name!r} is not defined in this file")


def _names(default: Any = _REQUIRED) -> _Reader:
    def read(table: _Table, key: str) -> tuple[str, ...]:
        items = table.get(key, list, "a list of names", default)
        if not all(isinstance(item, str) and item for item in items):
            raise table.error(key, f"must be a list of non-empty strings, got {items!r}")
        return tuple(items)

    return read


def _number(minimum: float = 0.0, default: Any = _REQUIRED, kind: type = float) -> _Reader:
    def read(table: _Table, key: str) -> float:
        value = table.get(
            key, (int, float) if kind is float else int, f"a {kind.__name__}", default
        )
        if not math.isfinite(value) or value < minimum:
            raise table.error(key, f"must be at least {minimum:g}, got {value!r}")
        return kind(value)  # type: ignore[no-any-return]

    return read


def _level(kind: type[_Level], default: Any = _REQUIRED) -> _Reader:
    def read(table: _Table, key: str) -> _Level | None:
        labels = {level.label: level for level in kind}
        text = table.get(key, str, "a label", default)
        if text is None or text in labels:
            return None if text is None else labels[text]
        raise table.error(key, f"must be one of {', '.join(labels)}, got {text!r}")

    return read


def _fault_code(table: _Table, key: str, name: str) -> int:
    if name.startswith("F") and name[1:].isdigit() and int(name[1:]) > 0:
        return int(name[1:])
    raise table.error(key, f"{name!r} is not a fault code: write it as displayed, e.g. F28")


def _statuses(table: _Table, key: str) -> frozenset[BoilerStatus]:
    labels = {status.label: status for status in BoilerStatus}
    names = _names(())(table, key)
    table.refs(key, names, labels)
    return frozenset(labels[name] for name in names)


def _below(table: _Table, key: str) -> Mapping[str, float]:
    if key not in table.data:
        return {}
    limits = table.sub(key)
    return {name: _number(-math.inf)(limits, name) for name in limits.data}


_ADJUSTMENT: dict[str, _Reader] = {
    "skills": lambda t, k: frozenset(_names(())(t, k)),
    "complexity_at_least": _level(Complexity, None),
    "extra_cost": _number(default=0.0),
    "urgency_at_least": _level(Urgency, None),
}
_SERVICE: dict[str, _Reader] = {
    "problems": _names(),
    "skills": lambda t, k: frozenset(_names()(t, k)),
    "complexity": _level(Complexity),
    "cost": _number(),
    "urgency": _level(Urgency),
}
_PROBLEM: dict[str, _Reader] = {
    "observable": lambda t, k: t.get(k, bool, "true or false", True),
    "confirmed_by_status": _statuses,
    "confirmed_by_fault": lambda t, k: t.get(k, bool, "true or false", False),
    "confirmed_below": _below,
    **_ADJUSTMENT,
}
_COLD: dict[str, _Reader] = {
    "outdoor_below_c": _number(-math.inf),
    "problems": _names(()),
    "faults": lambda t, k: frozenset(_fault_code(t, k, name) for name in _names(())(t, k)),
    "urgency": _level(Urgency),
}
_HISTORY: dict[str, _Reader] = {
    "repeat_episodes": _number(1, kind=int),
    "complexity_steps": _number(0, 1, kind=int),
    "repeat_cost_factor": _number(1.0),
}
_OWNER: dict[str, _Reader] = {"service_types": _names(), "urgency_at_least": _level(Urgency)}
_TOP = ("service", "problem", "fault", "cold", "history", "owner")


def _problem(name: str, table: _Table) -> Problem:
    fields = table.read(_PROBLEM)
    adjustment = Adjustment(**{key: fields.pop(key) for key in _ADJUSTMENT})
    if fields["observable"] != bool(
        fields["confirmed_by_status"] or fields["confirmed_by_fault"] or fields["confirmed_below"]
    ):
        raise table.error(
            "observable",
            "true needs confirmed_by_status, confirmed_by_fault or confirmed_below; "
            "false allows none of them",
        )
    return Problem(name=name, adjustment=adjustment, **fields)


def _entries(top: _Table, key: str, required: bool = True) -> dict[str, _Table]:
    if key not in top.data and not required:
        return {}
    section = top.sub(key) if key in top.data else None
    if section is None or not section.data:
        raise top.error(key, "must define at least one entry")
    return {name: section.sub(name) for name in section.data}


def _parse(top: _Table) -> ServiceRules:
    top.read(dict.fromkeys(_TOP, lambda t, k: None))
    problems = {name: _problem(name, t) for name, t in _entries(top, "problem").items()}
    services = {}
    for name, table in _entries(top, "service").items():
        fields = table.read(_SERVICE)
        table.refs("problems", fields["problems"], problems)
        services[name] = ServiceType(name=name, **fields)
    faults = {
        _fault_code(top, f"fault.{name}", name): Adjustment(**table.read(_ADJUSTMENT))
        for name, table in _entries(top, "fault", required=False).items()
    }
    cold = history = owner = None
    if "cold" in top.data:
        cold = ColdRule(**top.sub("cold").read(_COLD))
        top.sub("cold").refs("problems", cold.problems, problems)
    if "history" in top.data:
        history = HistoryRule(**top.sub("history").read(_HISTORY))
    if "owner" in top.data:
        owner = OwnerRule(**top.sub("owner").read(_OWNER))
        top.sub("owner").refs("service_types", owner.service_types, services)
    return ServiceRules(services, problems, faults, cold, history, owner, top.source)
