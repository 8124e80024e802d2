"""The service platform's configuration, built once per process from `CloudSettings`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cloud.errors import ConfigError
from cloud.predict import rules as detector_rules
from cloud.predict.rules import DetectorRules, RulesError
from cloud.service.analysis import ServiceRules, load_rules
from cloud.service.crowd import CrowdRules, TravelModel
from cloud.settings import CloudSettings

PREVENTIVE = "preventive"
"""The service type of a visit raised from a predictive-maintenance warning."""


def problem_of(mode: str) -> str:
    """The service-rules problem of a visit for failure mode `mode`."""
    return f"predicted_{mode}"


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Settings, service-analysis rules, crowdsourcing rules, the travel model and the
    predictive-maintenance detector rules (for preventive visits)."""

    settings: CloudSettings
    rules: ServiceRules
    crowd: CrowdRules
    travel: TravelModel
    detectors: DetectorRules

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> PlatformConfig:
        """Everything from one settings object (rules from `service_rules_file` or packaged)."""
        crowd = CrowdRules(
            q_ar=settings.q_ar,
            q_cs=settings.q_cs,
            q_sq=settings.q_sq,
            price_tolerance=settings.price_tolerance,
            radius_km=settings.radius_km,
            invite_fraction=settings.invite_fraction,
            invite_min=settings.invite_min,
            invite_max=settings.invite_max,
            newcomer_slots=settings.newcomer_slots,
            newcomer_invitations=settings.newcomer_invitations,
        )
        travel = TravelModel(
            road_factor=settings.road_factor,
            speed_kmh=settings.car_speed_kmh,
            co2_kg_per_km=settings.car_co2_kg_per_km,
        )
        rules = load_rules(settings.service_rules_file)
        try:
            detectors = detector_rules.load_rules(settings.predict_rules_file)
        except RulesError as exc:
            raise ConfigError("predict_rules_file", str(exc)) from None
        if settings.predict:
            check_preventive(rules, detectors)
        return cls(settings, rules, crowd, travel, detectors)

    def crowd_json(self) -> dict[str, Any]:
        """The crowdsourcing rules in force, recorded with every round."""
        return asdict(self.crowd)


def check_preventive(rules: ServiceRules, detectors: DetectorRules) -> None:
    """Every failure mode the detectors warn of can be booked as a preventive visit: service
    type ``preventive`` lists a problem ``predicted_<mode>`` confirmed by that mode."""
    modes = {m.name for m in detectors.modes}
    for model_modes, _ in detectors.models.values():
        modes |= {m.name for m in model_modes}
    if PREVENTIVE not in rules.service_types:
        raise ConfigError(
            "service_rules_file",
            f"[service.{PREVENTIVE}] is missing: warnings could not be booked as visits "
            f"({rules.source})",
        )
    listed = rules.problems(PREVENTIVE)
    for mode in sorted(modes):
        name = problem_of(mode)
        problem = rules.problem_rules.get(name)
        if name not in listed or problem is None or problem.confirmed_by_prediction != mode:
            raise ConfigError(
                "service_rules_file",
                f'the detectors warn of "{mode}": [service.{PREVENTIVE}] needs problem '
                f'{name} with confirmed_by_prediction = "{mode}" ({rules.source})',
            )
