"""Scoring the predictive-maintenance evaluation: what the twin under test warned about,
against what the simulated fleet really did (`hw_sim.evaluation`), per failure mode.

The rules (`score`): a warning of mode M on a boiler degrading by M, raised after the onset
and before the fault, is true, and the first one gives the lead time; raised after the fault
it is not counted. Any other warning is false for its mode. Recall is over the boilers whose
fault happened inside the simulated window; false warnings on healthy boilers (nothing wrong,
or heavy hot-water use) are per 1,000 boiler-months.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hw_sim.degradation import SECONDS_PER_DAY, Mode
from hw_sim.evaluation import MODEL, EvaluationFleet, EvaluationSettings, Uplinks


@dataclass(frozen=True, slots=True)
class RaisedWarning:
    """A warning the twin under test raised: which boiler, which mode, when (ms)."""

    device_id: str
    mode: str
    raised_ms: int


class TwinUnderTest(Protocol):
    """The seam the evaluation drives: the real cloud, or a fake in a logic test."""

    def register(self, devices: Sequence[tuple[str, bytes, str]]) -> None:
        """Register (device id, raw Ed25519 public key, model) for each boiler."""

    def deliver(self, uplinks: Uplinks) -> None:
        """Ingest what the fleet sent, at its simulated time."""

    def warnings(self, now_ms: int) -> list[RaisedWarning]:
        """Run whatever is due at `now_ms` and return every warning raised so far."""


@dataclass(frozen=True, slots=True)
class ModeScore:
    """One row of the evaluation's table."""

    mode: str
    boilers: int
    faults: int
    warned_before_fault: int
    true_warnings: int
    false_warnings: int
    lead_days: tuple[float, ...]

    @property
    def recall(self) -> float | None:
        return self.warned_before_fault / self.faults if self.faults else None

    @property
    def precision(self) -> float | None:
        raised = self.true_warnings + self.false_warnings
        return self.true_warnings / raised if raised else None

    @property
    def median_lead_days(self) -> float | None:
        return statistics.median(self.lead_days) if self.lead_days else None

    @property
    def p10_lead_days(self) -> float | None:
        if not self.lead_days:
            return None
        ordered = sorted(self.lead_days)
        return ordered[int(0.1 * (len(ordered) - 1))]


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Per-mode scores, and false warnings on boilers with nothing wrong."""

    settings: EvaluationSettings
    modes: tuple[ModeScore, ...]
    healthy_boilers: int
    healthy_false_warnings: int
    messages: int

    @property
    def healthy_boiler_months(self) -> float:
        return self.healthy_boilers * self.settings.days / 30.0

    @property
    def false_per_1000_boiler_months(self) -> float | None:
        months = self.healthy_boiler_months
        return 1000.0 * self.healthy_false_warnings / months if months else None


def score(fleet: EvaluationFleet, warnings: Sequence[RaisedWarning]) -> EvaluationReport:
    """Score `warnings` against what the fleet really did.

    A warning of mode M on a boiler degrading by M, raised after the onset and before the
    fault, is true (the first one gives the lead time); raised after the fault it is not
    counted (the fault was already there). Any other warning is false for its mode: on a
    boiler with another degradation or none, or before the onset. Healthy boilers (nothing
    wrong, or heavy hot-water use) count every warning as false."""
    start_ms = fleet.settings.start_s * 1000
    by_device: dict[str, list[RaisedWarning]] = {}
    for warning in warnings:
        by_device.setdefault(warning.device_id, []).append(warning)
    rows = []
    for mode in (m for m in Mode if not m.healthy):
        boilers = faults = warned = true = false = 0
        leads: list[float] = []
        for plan in fleet.plans:
            boiler = fleet.boilers[plan.device_id]
            mine = [w for w in by_device.get(plan.device_id, ()) if w.mode == mode.value]
            if plan.mode is not mode or plan.pattern is None:
                false += len(mine)
                continue
            boilers += 1
            onset_ms = start_ms + plan.pattern.onset_s * 1000
            fault_ms = None if boiler.fault_s is None else start_ms + boiler.fault_s * 1000
            before = [w for w in mine if fault_ms is None or w.raised_ms < fault_ms]
            false += sum(1 for w in before if w.raised_ms < onset_ms)
            good = [w for w in before if w.raised_ms >= onset_ms]
            true += len(good)
            if fault_ms is not None:
                faults += 1
                if good:
                    warned += 1
                    leads.append((fault_ms - min(w.raised_ms for w in good)) / 86_400_000)
        rows.append(ModeScore(mode.value, boilers, faults, warned, true, false, tuple(leads)))
    healthy = [p for p in fleet.plans if p.mode is None or p.mode.healthy]
    healthy_false = sum(len(by_device.get(p.device_id, ())) for p in healthy)
    return EvaluationReport(fleet.settings, tuple(rows), len(healthy), healthy_false, fleet.sent)


def evaluate(settings: EvaluationSettings, twin: TwinUnderTest) -> EvaluationReport:
    """Run the fleet through `twin`, asking it for warnings after every simulated day."""
    fleet = EvaluationFleet(settings)
    twin.register(
        [
            (plan.device_id, fleet.keys[plan.device_id].public_key().public_bytes_raw(), MODEL)
            for plan in fleet.plans
        ]
    )
    day_ms = int(SECONDS_PER_DAY * 1000)
    last_day = None
    now_ms = int(settings.start_s * 1000)
    for uplinks in fleet.run():
        twin.deliver(uplinks)
        now_ms = uplinks.now_ms
        if now_ms // day_ms != last_day:
            last_day = now_ms // day_ms
            twin.warnings(now_ms)
    return score(fleet, twin.warnings(now_ms + day_ms))


TARGET_MODES = (Mode.LEAK, Mode.ELECTRODE, Mode.SCALING)
TARGET_RECALL = 0.9
TARGET_LEAD_DAYS = 3.0
TARGET_FALSE_PER_1000 = 1.0


def targets(report: EvaluationReport) -> dict[str, bool]:
    """Whether each of the issue's targets holds (recall and lead time for the leak,
    electrode and scaling modes; false warnings on healthy boilers)."""
    met: dict[str, bool] = {}
    for row in report.modes:
        if row.mode in {m.value for m in TARGET_MODES}:
            met[f"{row.mode} recall >= {TARGET_RECALL}"] = (row.recall or 0.0) >= TARGET_RECALL
            met[f"{row.mode} median lead >= {TARGET_LEAD_DAYS:.0f} days"] = (
                row.median_lead_days or 0.0
            ) >= TARGET_LEAD_DAYS
    false = report.false_per_1000_boiler_months
    met[f"false warnings <= {TARGET_FALSE_PER_1000:.0f} per 1,000 boiler-months"] = (
        false is not None and false <= TARGET_FALSE_PER_1000
    )
    return met


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_table(report: EvaluationReport, costs: dict[str, object]) -> str:
    """The figures as a Markdown table with the targets and costs under it."""
    s = report.settings
    lines = [
        f"predictive maintenance: {s.boilers} boilers x {s.days} simulated days, seed {s.seed}, "
        f"rules {costs.get('rules_version', '?')}",
        "| mode | boilers | faults in window | warned before fault | recall | precision "
        "| median lead (days) | 10th pct lead (days) | false warnings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report.modes:
        lines.append(
            f"| {row.mode} | {row.boilers} | {row.faults} | {row.warned_before_fault} | "
            f"{_fmt(row.recall)} | {_fmt(row.precision)} | {_fmt(row.median_lead_days, 1)} | "
            f"{_fmt(row.p10_lead_days, 1)} | {row.false_warnings} |"
        )
    lines.append(
        f"healthy boilers (nothing wrong, or heavy hot-water use): {report.healthy_boilers}, "
        f"{report.healthy_boiler_months:,.0f} boiler-months, {report.healthy_false_warnings} "
        f"warnings = {_fmt(report.false_per_1000_boiler_months)} per 1,000 boiler-months"
    )
    lines.append(
        "targets: "
        + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in targets(report).items())
    )
    lines.append(
        "cost: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in costs.items() if k != "rules_version")
    )
    return "\n".join(lines)


def report_json(report: EvaluationReport) -> dict[str, object]:
    """The figures as JSON-friendly data."""
    s = report.settings
    return {
        "boilers": s.boilers,
        "days": s.days,
        "seed": s.seed,
        "modes": [
            {
                "mode": row.mode,
                "boilers": row.boilers,
                "faults": row.faults,
                "warned_before_fault": row.warned_before_fault,
                "true_warnings": row.true_warnings,
                "false_warnings": row.false_warnings,
                "recall": row.recall,
                "precision": row.precision,
                "median_lead_days": row.median_lead_days,
                "p10_lead_days": row.p10_lead_days,
                "lead_days": [round(d, 2) for d in row.lead_days],
            }
            for row in report.modes
        ],
        "healthy": {
            "boilers": report.healthy_boilers,
            "boiler_months": round(report.healthy_boiler_months, 1),
            "false_warnings": report.healthy_false_warnings,
            "per_1000_boiler_months": report.false_per_1000_boiler_months,
        },
        "targets": targets(report),
        "messages": report.messages,
    }
