"""``boilertwin demo --scenario ...``: play a scenario against the running ``make demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud.demo.scenarios import Scenario, run_scenario

app = typer.Typer(no_args_is_help=True)


@app.command("demo")
def demo(
    scenario: Annotated[
        Scenario,
        typer.Option(help="What to play against the running demo (start it with `make demo`)."),
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="The demo's folder (DEMO_DIR of `make demo`).")
    ] = Path("run/demo"),
) -> None:
    """Play a scenario against the running `make demo`, narrating each step with timings."""
    raise typer.Exit(run_scenario(scenario, directory))
