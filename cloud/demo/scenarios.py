"""The scenario registry and `run_scenario` (``boilertwin demo --scenario ...``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TextIO

from cloud.demo.client import (
    INFO_FILE,
    NOT_RUNNING,
    DemoError,
    DemoInfo,
    Narrator,
    Unreachable,
    healthy,
)
from cloud.demo.lockout import lockout_scenario
from cloud.demo.repair import repair_scenario


class Scenario(StrEnum):
    """What ``boilertwin demo --scenario`` can play."""

    LOCKOUT = "lockout"
    """F28 lockout on boiler 1, seen in the twin; repair; remote restart; back to running."""
    REPAIR = "repair"
    """The service story: lockout, the tenant's request, crowdsourced engineers, the
    contract, the repair and the engineer's restart, verification, the tenant's rating
    (`cloud.demo.repair`)."""


PLAYERS: dict[Scenario, Callable[[DemoInfo, Narrator], bool]] = {
    Scenario.LOCKOUT: lockout_scenario,
    Scenario.REPAIR: repair_scenario,
}
"""What plays each scenario."""


def player(scenario: Scenario) -> Callable[[DemoInfo, Narrator], bool]:
    """The function that plays `scenario`."""
    return PLAYERS[scenario]


def run_scenario(scenario: Scenario, directory: Path, out: TextIO | None = None) -> int:
    """Play `scenario` against the demo described in `directory`; the process exit code."""
    narrator = Narrator(out)
    try:
        info = DemoInfo.load(directory)
        if not info.boilers:
            raise DemoError(f"{directory / INFO_FILE} lists no boilers")
        if healthy(info) is None:
            raise DemoError(f"{NOT_RUNNING} (nothing answers at {info.health})")
        narrator.say(f"scenario {scenario.value}: demo in {directory}, API {info.api}")
        ok = player(scenario)(info, narrator)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        if isinstance(exc, Unreachable):
            print(f"demo: {NOT_RUNNING}", file=sys.stderr, flush=True)
        return 1
    narrator.say(
        f"scenario {scenario.value}: " + ("PASSED" if ok else "FAILED (see the lines above)")
    )
    return 0 if ok else 1
