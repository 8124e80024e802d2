"""What every ``boilertwin cloud`` command shares: options, settings, a session, logging."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.errors import CloudError
from cloud.settings import CloudSettings, load_settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="cloud.toml (flat keys as CloudSettings).")
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL: sqlite:///file or postgresql://user@host/db."),
]
LogOption = Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")]
DynsecOption = Annotated[
    Path | None,
    typer.Option(help="The broker's dynamic-security file, edited while Mosquitto is stopped."),
]
BrokerAdminOption = Annotated[
    bool,
    typer.Option(
        "--broker-admin",
        help="On the running broker, as broker_admin_username (broker_admin_password_file).",
    ),
]
PasswordOutOption = Annotated[
    Path | None, typer.Option(help="Write the new broker password here (0600) for the gateway.")
]


def broker_overrides(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        typer.echo(f"error: --broker must be host:port, got {text!r}", err=True)
        raise typer.Exit(2)
    return {"broker_host": host, "broker_port": int(port)}


BrokerOption = Annotated[str | None, typer.Option("--broker", help="MQTT broker host:port.")]


def settings_from(config: Path | None, **overrides: object) -> CloudSettings:
    try:
        return load_settings(config, **overrides)
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@contextmanager
def session_for(settings: CloudSettings, migrate: bool = True) -> Iterator[Session]:
    """One transaction on a migrated database; cloud errors become a clear exit."""
    engine = make_engine(settings.db_url)
    try:
        if migrate:
            upgrade(engine)
        with transaction(session_factory(engine)) as session:
            yield session
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def read_password(path: Path | None) -> str:
    """The password in `path`, or on stdin when it is None or ``-``."""
    if path is None or str(path) == "-":
        return sys.stdin.readline().strip()
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(2) from exc
