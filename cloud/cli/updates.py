"""``boilertwin cloud releases ...`` and ``cloud rollouts ...``: agent releases and staged
rollouts (`cloud.rollouts`); ``cloud serve`` sends the waves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cloud.cli.common import ConfigOption, DbOption, session_for, settings_from
from cloud.key_rotation import push_cloud_keys
from cloud.keys import load_command_key
from cloud.lifecycle_models import Rollout
from cloud.provisioning import cloud_public_keys
from cloud.rollouts import Publisher, add_release, halt, resume, rollout_json, start_rollout
from cloud.settings import CloudSettings

releases_app = typer.Typer(help="Agent releases gateways can be updated to.", no_args_is_help=True)
rollouts_app = typer.Typer(help="Staged rollouts of a release.", no_args_is_help=True)


def _now() -> int:
    return int(time.time() * 1000)


def _publisher(settings: CloudSettings) -> Publisher:
    key = load_command_key(settings.keys_dir, settings.command_kid)
    return Publisher.under(key, settings, "cli")


@releases_app.command("add")
def releases_add(
    wheel: Annotated[Path, typer.Argument(help="The agent's wheel.")],
    version: Annotated[str, typer.Option(help="Its version, e.g. 0.2.0.")],
    min_agent: Annotated[str, typer.Option(help="Oldest agent that may install it.")] = "0.0.0",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Keep a wheel as a release (by its SHA-256 under artifacts_dir)."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        release = add_release(
            session,
            wheel,
            version=version,
            min_agent=min_agent,
            artifacts_dir=settings.artifacts_dir,
            now_ms=_now(),
            actor="cli",
        )
        typer.echo(f"release {release.version}: {release.size} bytes, sha256 {release.sha256}")


@rollouts_app.command("start")
def rollouts_start(
    version: Annotated[str, typer.Argument(help="The release to roll out.")],
    waves: Annotated[str, typer.Option(help="Cumulative percentages.")] = "1,10,50,100",
    max_failure_rate: Annotated[float, typer.Option(help="Halt above this failed share.")] = 0.1,
    min_wave_s: Annotated[float, typer.Option(help="Least seconds per wave.")] = 600.0,
    model: Annotated[str | None, typer.Option(help="Only this boiler model.")] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Start a staged rollout (its first wave is sent by cloud serve at once)."""
    settings = settings_from(config, db_url=db)
    try:
        percentages = [float(w) for w in waves.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--waves {waves!r}: give percentages like 1,10,50,100") from None
    with session_for(settings) as session:
        rollout = start_rollout(
            session,
            version,
            waves=percentages,
            max_failure_rate=max_failure_rate,
            min_wave_s=min_wave_s,
            model=model,
            now_ms=_now(),
            publisher=_publisher(settings),
        )
        typer.echo(json.dumps(rollout_json(session, rollout), indent=2))


@rollouts_app.command("show")
def rollouts_show(
    rollout_id: Annotated[int, typer.Argument()], config: ConfigOption = None, db: DbOption = None
) -> None:
    """A rollout: state, wave, gateways by state."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None:
            typer.echo(f"error: no rollout {rollout_id}", err=True)
            raise typer.Exit(1)
        typer.echo(json.dumps(rollout_json(session, rollout), indent=2))


@rollouts_app.command("halt")
def rollouts_halt(
    rollout_id: Annotated[int, typer.Argument()], config: ConfigOption = None, db: DbOption = None
) -> None:
    """Halt: no more waves; the gateways updated go back."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        rollout = session.get(Rollout, rollout_id)
        if rollout is None or rollout.state != "running":
            typer.echo(f"error: no running rollout {rollout_id}", err=True)
            raise typer.Exit(1)
        typer.echo(halt(session, rollout, _now(), _publisher(settings), "halted by hand (cli)"))


@rollouts_app.command("resume")
def rollouts_resume(
    rollout_id: Annotated[int, typer.Argument()], config: ConfigOption = None, db: DbOption = None
) -> None:
    """Carry on after a halt."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        rollout = resume(session, rollout_id, _now())
        typer.echo(f"rollout {rollout.id} running again from wave {rollout.wave + 1}")


keys_app = typer.Typer(help="The cloud's command keys on every gateway.", no_args_is_help=True)


@keys_app.command("push")
def keys_push(config: ConfigOption = None, db: DbOption = None) -> None:
    """Send every gateway the set of <kid>.pem in keys_dir to pin (pin_keys). To rotate:
    cloud keygen a new kid, push (both are pinned), sign with the new one (command_kid),
    and once every gateway acked, remove the old kid's files and push again."""
    settings = settings_from(config, db_url=db)
    publisher = _publisher(settings)
    keys = cloud_public_keys(settings.keys_dir)
    with session_for(settings) as session:
        devices = push_cloud_keys(session, keys, publisher.issuer, now_ms=_now())
    typer.echo(f"keys {', '.join(sorted(keys))} sent to {len(devices)} gateway(s)")
