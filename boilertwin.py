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
        if cmd_name == "sim" and isinstance(command, TyperGroup):
            command.add_command(typer.main.get_command(evaluate_app), "evaluate")
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


@app.command("verify-proof")
def verify_proof(
    bundle: str = typer.Argument(..., help="The proof bundle (a .zip from a job's proof)."),
    cloud_key: str = typer.Option(
        "", help="The manufacturer's public key (PEM) the bundle must be signed with."
    ),
) -> None:
    """Check a job's proof bundle offline: every file against the signed manifest, the
    thread's hash chain to its signed checkpoint, and every signature. Exit 0 if it holds,
    1 if not (each problem named), 2 if it cannot be read."""
    from pathlib import Path

    from cloud.proof_zip import check_bundle
    from protocols.cose import public_key_from_pem
    from protocols.errors import ProtocolError

    try:
        data = Path(bundle).read_bytes()
        key = public_key_from_pem(Path(cloud_key).read_bytes()) if cloud_key else None
    except (OSError, ProtocolError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    report = check_bundle(data, key)
    for line in report.lines():
        typer.echo(line)
    if not cloud_key and report.ok:
        typer.echo("  (against the bundle's own cloud key: pass --cloud-key to check the signer)")
    raise typer.Exit(0 if report.ok else 1)


evaluate_app = typer.Typer(add_completion=False)


@evaluate_app.command("evaluate")
def evaluate(
    boilers: int = typer.Option(200, help="Boilers in the simulated fleet."),
    days: int = typer.Option(90, help="Simulated days."),
    seed: int = typer.Option(0, help="Seed for the fleet: patterns, onsets, rates, weather."),
    rules: str = typer.Option("", help="Detector rules file (default: the packaged rules)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    db: str = typer.Option("", help="Database URL (default: a temporary SQLite file)."),
) -> None:
    """Predictive maintenance on a simulated fleet: per failure mode, precision, recall and
    lead time of the cloud's warnings, and false warnings on healthy boilers.

    The simulator (`hw_sim.evaluation`) drives the real cloud ingest and detectors
    (`cloud.predict.harness`); it lives here, the one place that may know both."""
    import json
    import tempfile
    import time
    from pathlib import Path

    from cloud.predict.harness import LocalTwin
    from cloud.predict.rules import RulesError, load_rules
    from hw_sim.evaluation import EvaluationSettings
    from hw_sim.scoring import evaluate as run_evaluation
    from hw_sim.scoring import report_json, report_table

    try:
        settings = EvaluationSettings(boilers=boilers, days=days, seed=seed)
        detector_rules = load_rules(Path(rules) if rules else None)
    except (ValueError, RulesError) as exc:
        raise typer.BadParameter(str(exc)) from None
    with tempfile.TemporaryDirectory() as tmp:
        twin = (
            LocalTwin(db, detector_rules)
            if db
            else LocalTwin.in_directory(Path(tmp), detector_rules)
        )
        started = time.perf_counter()
        try:
            report = run_evaluation(settings, twin)
        finally:
            twin.close()
        costs = {
            "wall_s": round(time.perf_counter() - started, 1),
            "messages": twin.messages,
            "ingest_cpu_ms_per_message": round(1000 * twin.ingest_cpu_s / max(1, twin.messages), 3),
            "detector_cpu_ms_per_message": round(
                1000 * twin.predictor.stats.cpu_s / max(1, twin.messages), 3
            ),
            "detector_cpu_ms_per_boiler_day": round(
                1000 * twin.predictor.stats.cpu_s / max(1, twin.predictor.stats.boiler_days), 3
            ),
            "rules_version": detector_rules.version,
        }
    if as_json:
        typer.echo(json.dumps(report_json(report) | {"costs": costs}, indent=2))
    else:
        typer.echo(report_table(report, costs))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
