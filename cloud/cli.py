"""``boilertwin cloud ...``: database, keys, device registry, users, engineers, ingest, API."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from cloud import auth, broker_logins, quarantine, registry
from cloud.auth import create_user
from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.domain import Role, wall_ms
from cloud.dynsec import DynsecError
from cloud.errors import CloudError, InvalidInput
from cloud.ingest import Ingest
from cloud.keys import keygen as make_command_key
from cloud.models import Engineer, User
from cloud.mosquitto import ADMIN_USER, CLOUD_USER
from cloud.service import engineer_csv, engineer_import, engineers
from cloud.settings import CloudSettings, load_settings

app = typer.Typer(help="The manufacturer's cloud twin.", no_args_is_help=True)
devices_app = typer.Typer(help="Register, list, revoke and re-key gateways.", no_args_is_help=True)
users_app = typer.Typer(help="API and portal users.", no_args_is_help=True)
engineers_app = typer.Typer(
    help="Engineer profiles: import a contractor list, add, list.", no_args_is_help=True
)
app.add_typer(devices_app, name="devices")
app.add_typer(users_app, name="users")
app.add_typer(engineers_app, name="engineers")
broker_app = typer.Typer(
    help="The broker's logins (Mosquitto's dynamic-security plugin).", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
quarantine_app = typer.Typer(
    help="Input set aside because handling it failed: list, release.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")

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


def _settings(config: Path | None, **overrides: object) -> CloudSettings:
    try:
        return load_settings(config, **overrides)
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@contextmanager
def _session(settings: CloudSettings, migrate: bool = True) -> Iterator[Session]:
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


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command("migrate")
def migrate(config: ConfigOption = None, db: DbOption = None) -> None:
    """Create or upgrade the database schema (Alembic) to the newest revision."""
    settings = _settings(config, db_url=db)
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
    settings = _settings(config, keys_dir=keys_dir)
    try:
        key = make_command_key(settings.keys_dir, kid)
    except CloudError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"kid {key.kid}: private {settings.keys_dir / (kid + '.key')} (0600)")
    typer.echo(
        f"public {settings.keys_dir / (kid + '.pem')}: copy to each gateway's cloud_keys_dir"
    )


@devices_app.command("add")
def devices_add(
    id: Annotated[str, typer.Option("--id", help="Device id (MQTT user, topic level, kid).")],
    public_key: Annotated[Path, typer.Option(help="The gateway's Ed25519 public key (PEM).")],
    model: Annotated[str | None, typer.Option()] = None,
    serial: Annotated[str | None, typer.Option()] = None,
    install_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    location: Annotated[str | None, typer.Option(help="lat,lon")] = None,
    address: Annotated[str | None, typer.Option()] = None,
    dynsec: DynsecOption = None,
    broker_admin: BrokerAdminOption = False,
    password_out: PasswordOutOption = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Register a gateway and its key (and its broker login, with --dynsec or --broker-admin)."""
    settings = _settings(config, db_url=db)
    target = _target(dynsec, broker_admin)
    with _session(settings) as session:
        key = registry.read_public_key(public_key)
        where = registry.Location.parse(location) if location else None
        registry.add_device(
            session,
            id,
            key,
            now_ms=wall_ms(),
            model=model,
            serial=serial,
            install_date=install_date,
            location=where,
            address=address,
        )
    typer.echo(f"registered {id}")
    if target.wanted:
        _broker_login(settings, target, id, password_out)


def _target(dynsec: Path | None, online: bool) -> broker_logins.BrokerTarget:
    if dynsec is not None and online:
        typer.echo("error: give --dynsec or --broker-admin, not both", err=True)
        raise typer.Exit(2)
    return broker_logins.BrokerTarget(dynsec, online)


def _broker_login(
    settings: CloudSettings,
    target: broker_logins.BrokerTarget,
    device_id: str,
    password_out: Path | None,
) -> None:
    try:
        password = broker_logins.issue(settings, target, device_id)
    except (DynsecError, CloudError) as exc:
        typer.echo(f"error: broker login for {device_id}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if password_out is not None:
        password_out.touch(mode=0o600)
        password_out.write_text(password + "\n")
        typer.echo(f"broker password for {device_id} written to {password_out}")
    else:
        typer.echo(f"broker password for {device_id}: {password}")
    typer.echo(
        f"broker login of {device_id} (bound to client id {device_id}) in "
        f"{target.describe(settings)}"
    )


@devices_app.command("broker")
def devices_broker(
    id: Annotated[str, typer.Option("--id")],
    dynsec: DynsecOption = None,
    broker_admin: BrokerAdminOption = False,
    password_out: PasswordOutOption = None,
    config: ConfigOption = None,
) -> None:
    """Give a device its broker login, or a new password for it (the old one stops working)."""
    settings = _settings(config)
    target = _target(dynsec, broker_admin)
    if not target.wanted:
        typer.echo("error: say where the login goes: --dynsec FILE or --broker-admin", err=True)
        raise typer.Exit(2)
    _broker_login(settings, target, id, password_out)


@broker_app.command("init")
def broker_init(
    dynsec: Annotated[
        Path, typer.Option(help="The plugin's file to create (plugin_opt_config_file).")
    ],
    admin_password_file: Annotated[
        Path, typer.Option(help="Password of the admin login (the plugin's control topic).")
    ],
    cloud_password_file: Annotated[Path, typer.Option(help="Password of the cloud's login.")],
    admin_user: Annotated[str, typer.Option(help="The admin login.")] = ADMIN_USER,
    cloud_user: Annotated[str, typer.Option(help="The cloud's login.")] = CLOUD_USER,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Create the broker's dynamic-security file: deny by default, an admin and the cloud."""
    admin_password = _read_password(admin_password_file)
    cloud_password = _read_password(cloud_password_file)
    for name, value in (("admin", admin_password), ("cloud", cloud_password)):
        if len(value) < 12:
            typer.echo(f"error: the {name} password must be at least 12 characters", err=True)
            raise typer.Exit(2)
    try:
        broker_logins.init_file(
            dynsec,
            admin_user=admin_user,
            admin_password=admin_password,
            cloud_user=cloud_user,
            cloud_password=cloud_password,
            force=force,
        )
    except DynsecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"{dynsec}: logins {admin_user} (admin) and {cloud_user} (cloud); add devices "
        "with `cloud devices add ... --dynsec` (broker stopped) or --broker-admin"
    )


@devices_app.command("list")
def devices_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Every registered device, its state and key fingerprints."""
    settings = _settings(config, db_url=db)
    with _session(settings) as session:
        rows = registry.list_devices(session)
        for device, keys in rows:
            prints = [registry.fingerprint(k.public_key) for k in keys]
            record = {
                "id": device.id,
                "revoked": device.revoked,
                "model": device.model,
                "serial": device.serial,
                "install_date": device.install_date,
                "keys": [
                    {
                        "fingerprint": registry.fingerprint(k.public_key),
                        "valid_until": k.valid_until_ms,
                    }
                    for k in keys
                ],
            }
            if as_json:
                typer.echo(json.dumps(record))
            else:
                state = "REVOKED" if device.revoked else "active"
                listed = ",".join(prints)
                typer.echo(f"{device.id:<24} {state:<8} {device.model or '-':<16} keys {listed}")
    if not rows and not as_json:
        typer.echo("no devices registered")


@devices_app.command("revoke")
def devices_revoke(
    id: Annotated[str, typer.Option("--id")],
    dynsec: DynsecOption = None,
    broker_admin: BrokerAdminOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Refuse every message from a device from now on (and remove its broker login, with
    --dynsec or --broker-admin: a connected gateway is disconnected at once)."""
    settings = _settings(config, db_url=db)
    target = _target(dynsec, broker_admin)
    with _session(settings) as session:
        registry.revoke_device(session, id, now_ms=wall_ms())
    typer.echo(f"revoked {id}")
    if not target.wanted:
        return
    try:
        removed = broker_logins.remove(settings, target, id)
    except DynsecError as exc:
        typer.echo(f"error: broker login of {id}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if removed:
        typer.echo(f"broker login of {id} removed from {target.describe(settings)}")


@devices_app.command("rotate")
def devices_rotate(
    id: Annotated[str, typer.Option("--id")],
    public_key: Annotated[Path, typer.Option(help="The gateway's new public key (PEM).")],
    grace_hours: Annotated[
        float, typer.Option(help="How long the old key stays valid (messages still queued).")
    ] = 24.0,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Make a new key current; the old one is accepted for a grace period."""
    settings = _settings(config, db_url=db)
    with _session(settings) as session:
        key = registry.rotate_key(
            session,
            id,
            registry.read_public_key(public_key),
            now_ms=wall_ms(),
            grace_s=grace_hours * 3600,
        )
        typer.echo(f"{id}: key {registry.fingerprint(key.public_key)} is current")


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
    settings = _settings(config, db_url=db)
    if password_file is not None:
        password = password_file.read_text().strip()
    else:
        password = sys.stdin.readline().strip()
    with _session(settings) as session:
        create_user(session, id, password, role, display_name=name, now_ms=wall_ms())
    typer.echo(f"user {id} ({role.value}) created")


def _read_password(path: Path | None) -> str:
    """The password in `path`, or on stdin when it is None or ``-``."""
    if path is None or str(path) == "-":
        return sys.stdin.readline().strip()
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


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
    settings = _settings(config, db_url=db)
    password = _read_password(password_file)
    with _session(settings) as session:
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
    settings = _settings(config, db_url=db)
    data = _read_upload(file)
    with _session(settings) as session:
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
    settings = _settings(config, db_url=db)
    password = None if password_file is None else _read_password(password_file)
    with _session(settings) as session:
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
    settings = _settings(config, db_url=db)
    with _session(settings) as session:
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
    settings = _settings(config, db_url=db)
    with _session(settings) as session:
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
    settings = _settings(config, db_url=db)
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


def _broker(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        typer.echo(f"error: --broker must be host:port, got {text!r}", err=True)
        raise typer.Exit(2)
    return {"broker_host": host, "broker_port": int(port)}


BrokerOption = Annotated[str | None, typer.Option("--broker", help="MQTT broker host:port.")]


@app.command("ingest")
def ingest(
    config: ConfigOption = None,
    db: DbOption = None,
    broker: BrokerOption = None,
    log_level: LogOption = "INFO",
) -> None:
    """Run an ingest worker (any number may share the broker's shared subscription)."""
    from cloud.serve import run_ingest

    _logging(log_level)
    settings = _settings(config, db_url=db, **_broker(broker))
    run_ingest(settings)


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

    _logging(log_level)
    settings = _settings(config, db_url=db, api_host=host, api_port=port, **_broker(broker))
    run_serve(settings)
