"""``boilertwin cloud users ...`` and ``engineers ...``: API and portal users, engineer profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloud import auth
from cloud.auth import create_user
from cloud.cli.common import ConfigOption, DbOption, read_password, session_for, settings_from
from cloud.domain import Role, wall_ms
from cloud.errors import InvalidInput
from cloud.models import Engineer, User
from cloud.service import engineer_csv, engineer_import, engineers

users_app = typer.Typer(help="API and portal users.", no_args_is_help=True)
engineers_app = typer.Typer(
    help="Engineer profiles: import a contractor list, add, list.", no_args_is_help=True
)


@users_app.command("add")
def users_add(
    id: Annotated[str, typer.Option("--id", help="Login name.")],
    role: Annotated[Role, typer.Option(help="admin, support, owner, tenant or engineer.")],
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file (else from stdin).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Create a user; the password is read from a file or stdin, never from the command line."""
    settings = settings_from(config, db_url=db)
    if password_file is not None:
        password = password_file.read_text().strip()
    else:
        password = sys.stdin.readline().strip()
    with session_for(settings) as session:
        create_user(session, id, password, role, display_name=name, now_ms=wall_ms())
    typer.echo(f"user {id} ({role.value}) created")


@users_app.command("password")
def users_password(
    id: Annotated[str, typer.Argument(help="Login name.")],
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file ('-' or none: stdin).")
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Set a user's password (e.g. an imported engineer's first login); ends their sessions."""
    settings = settings_from(config, db_url=db)
    password = read_password(password_file)
    with session_for(settings) as session:
        auth.set_password(session, id, password)
    typer.echo(f"password of {id} set")


def _read_upload(path: Path) -> bytes:
    """At most one byte more than the import accepts, so a huge file is refused cheaply."""
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read(engineer_csv.MAX_BYTES + 1)
        with path.open("rb") as file:
            return file.read(engineer_csv.MAX_BYTES + 1)
    except OSError as exc:
        typer.echo(f"error: cannot read {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc


@engineers_app.command("import")
def engineers_import(
    file: Annotated[Path, typer.Argument(help="Contractor list, CSV ('-' for stdin).")],
    skip_invalid: Annotated[
        bool, typer.Option(help="Import the valid rows even if others are invalid.")
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Upsert engineers from a CSV contractor list (format: cloud/service/engineers.py).

    Exit 0 when every row was imported, 1 when --skip-invalid left rows out, 2 when nothing
    was imported because of errors.
    """
    settings = settings_from(config, db_url=db)
    data = _read_upload(file)
    with session_for(settings) as session:
        try:
            report = engineer_import.import_engineers(
                session, data, now_ms=wall_ms(), skip_invalid=skip_invalid
            )
        except InvalidInput as exc:
            typer.echo(f"error: {file}: {exc}", err=True)
            raise typer.Exit(2) from exc
    for error in report.rejected:
        typer.echo(str(error), err=True)
    rows = len({error.line for error in report.rejected})
    typer.echo(f"imported {len(report.imported)} engineers")
    if not rows:
        return
    if not report.imported:
        typer.echo(
            f"{rows} rows rejected: nothing imported"
            + ("" if skip_invalid else " (fix them, or use --skip-invalid)"),
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(f"{rows} rows rejected", err=True)
    raise typer.Exit(1)


def _token_list(text: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in text.split(",") if t.strip())


@engineers_app.command("add")
def engineers_add(
    id: Annotated[str, typer.Argument(help="Login name.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    gas_safe: Annotated[str, typer.Option(help="Gas Safe registration number (6-7 digits).")],
    skills: Annotated[str, typer.Option(help="Comma-separated, e.g. gas_safe,boiler_repair.")],
    lat: Annotated[float, typer.Option(help="Home latitude (degrees).")],
    lon: Annotated[float, typer.Option(help="Home longitude (degrees).")],
    languages: Annotated[str, typer.Option(help="Comma-separated, e.g. en,cy.")] = "en",
    training: Annotated[str, typer.Option(help="Comma-separated training tokens.")] = "",
    password_file: Annotated[
        Path | None,
        typer.Option(help="Password for a new account ('-': stdin); none: cannot log in yet."),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Add an engineer, or update one's profile (their history and prices are kept)."""
    settings = settings_from(config, db_url=db)
    password = None if password_file is None else read_password(password_file)
    with session_for(settings) as session:
        existing = session.get(Engineer, id) is not None
        spec = engineers.EngineerSpec(
            user_id=id,
            display_name=name,
            gas_safe_number=gas_safe.replace(" ", ""),
            skills=_token_list(skills),
            languages=_token_list(languages),
            training=_token_list(training),
            home_lat=lat,
            home_lon=lon,
        )
        spec = engineers.keep_history(session, spec)
        had_user = session.get(User, id) is not None
        engineers.upsert_engineer(session, spec, now_ms=wall_ms(), password=password)
    typer.echo(f"engineer {id} {'updated' if existing else 'added'}")
    if password is not None and had_user:
        typer.echo(f"password of existing user {id} unchanged: use `users password`", err=True)
    elif password is None and not had_user:
        typer.echo(f"{id} cannot log in until given a password: `users password {id}`")


@engineers_app.command("list")
def engineers_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Every engineer: id, name, skills and AR, CS, SQ."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        profiles = engineers.list_engineers(session)
    for profile in profiles:
        if as_json:
            typer.echo(json.dumps(profile))
            continue
        figures = profile["figures"]
        typer.echo(
            f"{profile['id']:<20} {profile['display_name'][:24]:<24} "
            f"AR {figures['ar_pct']:5.1f}% CS {figures['cs']:.2f} SQ {figures['sq']:.2f}  "
            f"{','.join(profile['skills'])}"
        )
    if not profiles and not as_json:
        typer.echo("no engineers")
