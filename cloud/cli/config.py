"""``boilertwin cloud config ...``: remote configuration layers and a boiler's desired vs
reported configuration (`cloud.device_config`)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from cloud.cli.common import ConfigOption, DbOption, session_for, settings_from
from cloud.commands import Issuer
from cloud.device_config import config_view, layers, set_layer
from cloud.keys import load_command_key

config_app = typer.Typer(help="Remote configuration of gateways.", no_args_is_help=True)


def parse_assignments(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """``report.poll_interval_s=30`` (values are JSON: numbers, "text"; bare text is text)."""
    document: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) not in (2, 3) or not all(parts):
            raise typer.BadParameter(
                f"{item!r}: give section.key=value (or report.deadband.point=v)"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        section = document.setdefault(parts[0], {})
        if len(parts) == 3:
            section.setdefault(parts[1], {})[parts[2]] = value
        else:
            section[parts[1]] = value
    return document


@config_app.command("set")
def config_set(
    assignments: Annotated[
        list[str], typer.Argument(help="section.key=value ... (none: remove)")
    ] = [],  # noqa: B006
    fleet: Annotated[bool, typer.Option("--fleet", help="The layer for every gateway.")] = False,
    model: Annotated[str | None, typer.Option(help="The layer for one boiler model.")] = None,
    device: Annotated[str | None, typer.Option(help="The layer for one gateway.")] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Replace a layer; every gateway whose configuration changes is sent its next version
    (`cloud serve` sends it)."""
    chosen = [
        (s, t)
        for s, t in (("fleet", "*" if fleet else None), ("model", model), ("device", device))
        if t
    ]
    if len(chosen) != 1:
        typer.echo("error: give exactly one of --fleet, --model M, --device D", err=True)
        raise typer.Exit(2)
    scope, target = chosen[0]
    settings = settings_from(config, db_url=db)
    key = load_command_key(settings.keys_dir, settings.command_kid)
    issuer = Issuer.under(key, settings, "cli")
    with session_for(settings) as session:
        issued = set_layer(
            session,
            scope,
            target,
            parse_assignments(assignments),
            now_ms=int(time.time() * 1000),
            issuer=issuer,
        )
    typer.echo(f"layer {scope}/{target} set; {len(issued)} gateway(s) sent a new version")


@config_app.command("show")
def config_show(
    device: Annotated[str | None, typer.Option(help="One gateway: desired vs reported.")] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """The layers, or one gateway's desired and reported configuration (JSON)."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        if device is None:
            out: Any = [
                {"scope": layer.scope, "target": layer.target, "settings": layer.settings}
                for layer in layers(session)
            ]
        else:
            out = config_view(session, device)
    typer.echo(json.dumps(out, indent=2, sort_keys=True))
