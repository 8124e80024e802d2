"""The ``boilertwin`` command: one entry point whose sub-commands grow with each feature.

Lives outside the four packages because it is the one place allowed to know all of them
(`edge_agent` and `cloud` never import each other). Each command group is imported only when
it is run, so a gateway's ``boilertwin edge run`` never loads the cloud stack (SQLAlchemy,
FastAPI, alembic): a Raspberry Pi's memory and start-up time are the edge agent's alone.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import typer
from typer._click import Command, Context  # typer vendors click: these are its types
from typer.core import TyperGroup

GROUPS = {
    "sim": "hw_sim.cli",
    "edge": "edge_agent.cli",
    "cloud": "cloud.cli",
    "demo": "cloud.demo.cli",
}
"""Command name -> module whose ``app`` (a `typer.Typer`) implements it, imported on use."""


class LazyGroup(TyperGroup):
    """A click group that imports a command's module only when that command is wanted."""

    def list_commands(self, ctx: Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *GROUPS})

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in GROUPS:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(GROUPS[cmd_name])
        command = typer.main.get_command(module.app)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyGroup,
    help="boilertwin: edge-to-cloud digital twin for gas boilers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """boilertwin: edge-to-cloud digital twin for gas boilers."""


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
