"""``boilertwin cloud ...``: database, keys, device registry, users, engineers, ingest, API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud.cli.claims import claims_app
from cloud.cli.common import (
    BrokerOption,
    ConfigOption,
    DbOption,
    LogOption,
    broker_overrides,
    settings_from,
    setup_logging,
)
from cloud.cli.config import config_app
from cloud.cli.devices import broker_app, devices_app
from cloud.cli.evidence import thread_app
from cloud.cli.people import engineers_app, users_app
from cloud.cli.quarantine import quarantine_app
from cloud.cli.updates import keys_app, releases_app, rollouts_app
from cloud.db import make_engine, upgrade
from cloud.errors import CloudError
from cloud.keys import keygen as make_command_key

app = typer.Typer(help="The manufacturer's cloud twin.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(users_app, name="users")
app.add_typer(engineers_app, name="engineers")
app.add_typer(broker_app, name="broker")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(claims_app, name="claims")
app.add_typer(config_app, name="config")
app.add_typer(releases_app, name="releases")
app.add_typer(rollouts_app, name="rollouts")
app.add_typer(keys_app, name="cloud-keys")
app.add_typer(thread_app, name="thread")


@app.command("migrate")
def migrate(config: ConfigOption = None, db: DbOption = None) -> None:
    """Create or upgrade the database schema (Alembic) to the newest revision."""
    settings = settings_from(config, db_url=db)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    engine.dispose()
    typer.echo(f"database at the newest schema: {engine.url.render_as_string(hide_password=True)}")


@app.command("keygen")
def keygen(
    kid: Annotated[str, typer.Option(help="Key id, e.g. cloud-2026; pick a new one to rotate.")],
    config: ConfigOption = None,
    keys_dir: Annotated[Path | None, typer.Option(help="Where keys live.")] = None,
) -> None:
    """Create a command-signing key; gateways pin the printed public key file as <kid>.pem."""
    settings = settings_from(config, keys_dir=keys_dir)
    try:
        key = make_command_key(settings.keys_dir, kid)
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"kid {key.kid}: private {settings.keys_dir / (kid + '.key')} (0600)")
    typer.echo(
        f"public {settings.keys_dir / (kid + '.pem')}: copy to each gateway's cloud_keys_dir"
    )


@app.command("ingest")
def ingest(
    config: ConfigOption = None,
    db: DbOption = None,
    broker: BrokerOption = None,
    workers: Annotated[
        int, typer.Option(min=1, max=256, help="Worker processes (about one per core).")
    ] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics here (worker i of N at port + i)."),
    ] = None,
    log_level: LogOption = "INFO",
) -> None:
    """Run ingest workers (any number, on any hosts, may share the broker's shared
    subscription; the API and portal run as `cloud serve`)."""
    setup_logging(log_level)
    settings = settings_from(
        config, db_url=db, ingest_metrics_port=metrics_port, **broker_overrides(broker)
    )
    from cloud.workers import run_workers, worker_settings

    if workers > 1:
        raise typer.Exit(run_workers(settings, workers))
    from cloud.serve import run_ingest

    # one worker runs in this process, still as worker 0: its client id never collides with
    # `cloud serve` reading the same configuration (two sessions with one id evict each other)
    run_ingest(worker_settings(settings, 0))


@app.command("serve")
def serve(
    config: ConfigOption = None,
    db: DbOption = None,
    broker: BrokerOption = None,
    host: Annotated[str | None, typer.Option(help="API listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="API port.")] = None,
    log_level: LogOption = "INFO",
) -> None:
    """Run the API, an ingest worker, the command dispatcher and the sweeper in one process."""
    from cloud.serve import run_serve

    setup_logging(log_level)
    settings = settings_from(
        config, db_url=db, api_host=host, api_port=port, **broker_overrides(broker)
    )
    run_serve(settings)
