"""The service platform's configuration, built once per process from `CloudSettings`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cloud.service.analysis import ServiceRules, load_rules
from cloud.service.crowd import CrowdRules, TravelModel
from cloud.settings import CloudSettings


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Settings, service-analysis rules, crowdsourcing rules and the travel model."""

    settings: CloudSettings
    rules: ServiceRules
    crowd: CrowdRules
    travel: TravelModel

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
        return cls(settings, load_rules(settings.service_rules_file), crowd, travel)

    def crowd_json(self) -> dict[str, Any]:
        """The crowdsourcing rules in force, recorded with every round."""
        return asdict(self.crowd)
