"""The ``boilertwin`` command: one entry point whose sub-commands grow with each feature.

Lives outside the four packages because it is the one place allowed to know all of them
(`edge_agent` and `cloud` never import each other).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from cloud.cli import app as cloud_app
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
