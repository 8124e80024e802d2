"""Detector rules as data: the packaged ``rules.toml`` or an operator's copy, per-model
overrides included. Loading checks every key; an error names the key that is wrong."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from cloud.predict.features import PEER_SUFFIX, DayFeatures, FeatureRules
from protocols.reference import FaultCode


class RulesError(ValueError):
    """The rules file is wrong; the message names the key."""


class Direction(StrEnum):
    """Which way a feature moves as the part wears."""

    UP = "up"
    DOWN = "down"

    @property
    def sign(self) -> float:
        return 1.0 if self is Direction.UP else -1.0


@dataclass(frozen=True, slots=True)
class ModeRule:
    """How one failure mode is detected (see rules.toml for each key's meaning)."""

    name: str
    feature: str
    direction: Direction
    fault: str
    min_scale: float
    min_change: float
    threshold: float | None = None
    threshold_change: float | None = None
    unless: tuple[str, ...] = ()
    history_days: int = 45
    baseline_days: int = 10
    window_days: int = 21
    min_days: int = 4
    cusum_k: float = 0.5
    cusum_h: float = 5.0
    confidence: float = 0.9
    horizon_days: float = 30.0
    clear_after_days: int = 3


@dataclass(frozen=True, slots=True)
class DetectorRules:
    """Every mode's rule, for the default model and per model."""

    version: str
    modes: tuple[ModeRule, ...]
    features: FeatureRules = field(default_factory=FeatureRules)
    models: Mapping[str, tuple[tuple[ModeRule, ...], FeatureRules]] = field(default_factory=dict)

    def for_model(self, model: str | None) -> tuple[tuple[ModeRule, ...], FeatureRules]:
        """The rules in force for boilers of `model` (the defaults if it has none)."""
        if model is not None and model in self.models:
            return self.models[model]
        return self.modes, self.features

    @property
    def longest_history_days(self) -> int:
        """The most days of history any mode of any model looks at."""
        every = [*self.modes, *(m for modes, _ in self.models.values() for m in modes)]
        return max((m.history_days for m in every), default=1)

    def mode(self, name: str) -> ModeRule | None:
        """The default rule of a mode, by name."""
        return next((m for m in self.modes if m.name == name), None)


_DEFAULT_KEYS = ("history_days", "baseline_days", "window_days", "min_days", "cusum_k",
                 "cusum_h", "confidence", "horizon_days", "clear_after_days")  # fmt: skip
_MODE_KEYS = {f.name for f in fields(ModeRule)} - {"name"}
_FEATURE_KEYS = {f.name for f in fields(FeatureRules)}
_FEATURE_NAMES = {f.name for f in fields(DayFeatures)} - {"readings", "faulted", "vs_peers"}


def packaged_rules() -> DetectorRules:
    """The rules shipped with the cloud."""
    text = resources.files("cloud.predict").joinpath("rules.toml").read_text()
    return parse_rules(tomllib.loads(text))


def load_rules(path: Path | None) -> DetectorRules:
    """`path`'s rules, or the packaged ones for None."""
    if path is None:
        return packaged_rules()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: {exc}") from exc
    try:
        return parse_rules(data)
    except RulesError as exc:
        raise RulesError(f"{path}: {exc}") from exc


def parse_rules(data: Mapping[str, Any]) -> DetectorRules:
    """Rules from a parsed TOML document."""
    _only(data, {"version", "defaults", "features", "mode", "model"}, "top level")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise RulesError("version: a non-empty string is required")
    defaults = _table(data, "defaults")
    _only(defaults, set(_DEFAULT_KEYS), "defaults")
    features = _features(_table(data, "features"), FeatureRules(), "features")
    raw_modes = _table(data, "mode")
    if not raw_modes:
        raise RulesError("mode: at least one [mode.<name>] is required")
    modes = tuple(
        _mode(name, {**defaults, **_table(raw_modes, name)}, f"mode.{name}") for name in raw_modes
    )
    names = {m.name for m in modes}
    for mode in modes:
        for other in mode.unless:
            if other not in names:
                raise RulesError(f"mode.{mode.name}.unless: no mode {other!r}")
    models = {}
    for model, overrides in _table(data, "model").items():
        if not isinstance(overrides, dict):
            raise RulesError(f"model.{model}: must be a table")
        _only(overrides, names | {"features"}, f"model.{model}")
        model_features = _features(
            _table(overrides, "features"), features, f"model.{model}.features"
        )
        model_modes = tuple(
            _override(m, _table(overrides, m.name), f"model.{model}.{m.name}") for m in modes
        )
        models[model] = (model_modes, model_features)
    return DetectorRules(version, modes, features, models)


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RulesError(f"{key}: must be a table")
    return value


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RulesError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RulesError(f"{where}: must be a number")
    if positive and value <= 0:
        raise RulesError(f"{where}: must be above 0")
    return float(value)


def _features(data: Mapping[str, Any], base: FeatureRules, where: str) -> FeatureRules:
    _only(data, _FEATURE_KEYS, where)
    values = {k: _number(v, f"{where}.{k}", positive=True) for k, v in data.items()}
    return replace(base, **values)


def _mode(name: str, data: Mapping[str, Any], where: str) -> ModeRule:
    for key in ("feature", "direction", "fault", "min_scale", "min_change"):
        if key not in data:
            raise RulesError(f"{where}.{key}: required")
    return _override(None, data, where, name=name)


def _override(
    base: ModeRule | None, data: Mapping[str, Any], where: str, name: str | None = None
) -> ModeRule:
    _only(data, _MODE_KEYS, where)
    values: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{where}.{key}"
        if key == "feature":
            stem = str(value).removesuffix(PEER_SUFFIX)
            if not isinstance(value, str) or stem not in _FEATURE_NAMES:
                raise RulesError(
                    f"{at}: unknown feature {value!r}; known: {sorted(_FEATURE_NAMES)}"
                )
            values[key] = value
        elif key == "direction":
            try:
                values[key] = Direction(value)
            except ValueError:
                raise RulesError(f"{at}: must be 'up' or 'down'") from None
        elif key == "fault":
            try:
                values[key] = f"F{int(FaultCode.parse(str(value)))}"
            except ValueError:
                raise RulesError(f"{at}: {value!r} is not a fault code (e.g. F22)") from None
        elif key == "unless":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RulesError(f"{at}: must be a list of names")
            values[key] = tuple(value)
        elif key in ("history_days", "baseline_days", "window_days", "min_days",
                     "clear_after_days"):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RulesError(f"{at}: must be a whole number of days >= 1")
            values[key] = value
        elif key == "confidence":
            values[key] = _number(value, at)
            if not 0.5 <= values[key] < 1:
                raise RulesError(f"{at}: must be in [0.5, 1)")
        elif key in ("threshold", "threshold_change"):
            values[key] = _number(value, at)
        else:
            values[key] = _number(value, at, positive=True)
    rule = replace(base, **values) if base is not None else ModeRule(name=name or "", **values)
    if (rule.threshold is None) == (rule.threshold_change is None):
        raise RulesError(f"{where}: give exactly one of threshold and threshold_change")
    if rule.baseline_days + rule.min_days > rule.history_days:
        raise RulesError(f"{where}: baseline_days + min_days must fit in history_days")
    return rule
