"""``boilertwin cloud quarantine ...``: input set aside because handling it failed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cloud import quarantine
from cloud.cli.common import ConfigOption, DbOption, session_for, settings_from
from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.domain import wall_ms
from cloud.errors import CloudError
from cloud.ingest import Ingest

quarantine_app = typer.Typer(
    help="Input set aside because handling it failed: list, release.", no_args_is_help=True
)


@quarantine_app.command("list")
def quarantine_list(
    include_released: Annotated[
        bool, typer.Option("--all", help="Also entries released already.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """What is held: messages ingest failed on, devices the gap detector failed on."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        rows = quarantine.listing(session, include_released=include_released)
    for row in rows:
        record = {
            "id": row.id,
            "stage": row.stage,
            "device_id": row.device_id,
            "topic": row.topic,
            "payload_bytes": len(row.payload) if row.payload is not None else None,
            "error": row.error,
            "created": row.created_ms,
            "released": row.released_ms,
            "outcome": row.outcome,
        }
        if as_json:
            typer.echo(json.dumps(record))
        else:
            done = f" released: {row.outcome}" if row.released_ms is not None else ""
            typer.echo(f"#{row.id:<6} {row.stage:<7} {row.device_id or '-':<24} {row.error}{done}")
    if not rows and not as_json:
        typer.echo("nothing is quarantined")


@quarantine_app.command("release")
def quarantine_release(
    id: Annotated[int, typer.Argument(help="The entry's number (from `quarantine list`).")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Deal with a held entry once its cause is fixed: a message is replayed through ingest
    (exactly once: ingest is idempotent), a device goes back to gap detection."""
    settings = settings_from(config, db_url=db)
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            row = quarantine.get(session, id)
            stage, topic, payload = row.stage, row.topic, row.payload
        outcome = "released"
        if stage == quarantine.Stage.INGEST and topic is not None and payload is not None:
            result = Ingest(sessions, wall_ms, settings).handle(topic, payload)
            outcome = f"replayed: {result.outcome}/{result.reason}"
        with transaction(sessions) as session:
            quarantine.mark_released(
                session, quarantine.get(session, id), now_ms=wall_ms(), outcome=outcome
            )
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"#{id} {outcome}")
