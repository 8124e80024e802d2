"""The ``boilertwin`` command: one entry point whose sub-commands grow with each feature.

Lives outside the four packages because it is the one place allowed to know all of them
(`edge_agent` and `cloud` never import each other).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from cloud.cli import app as cloud_app
from cloud.demo import Scenario, run_scenario
from edge_agent.cli import app as edge_app
from hw_sim.cli import app as sim_app

app = typer.Typer(
    help="boilertwin: edge-to-cloud digital twin for gas boilers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sim_app, name="sim")
app.add_typer(edge_app, name="edge")
app.add_typer(cloud_app, name="cloud")


@app.command("version")
def show_version() -> None:
    """Print the installed version."""
    try:
        typer.echo(version("boilertwin"))
    except PackageNotFoundError:
        typer.echo("unknown (not installed)")


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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
