"""``boilertwin cloud devices ...`` and ``broker ...``: gateways, their keys and broker logins."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from cloud import broker_admin as broker_admin_client
from cloud import broker_logins, registry
from cloud.cli.common import (
    BrokerAdminOption,
    ConfigOption,
    DbOption,
    DynsecOption,
    PasswordOutOption,
    read_password,
    session_for,
    settings_from,
)
from cloud.domain import wall_ms
from cloud.dynsec import DynsecError, DynsecFile
from cloud.errors import CloudError
from cloud.mosquitto import ADMIN_USER, CLOUD_USER
from cloud.settings import CloudSettings

devices_app = typer.Typer(help="Register, list, revoke and re-key gateways.", no_args_is_help=True)
broker_app = typer.Typer(
    help="The broker's logins (Mosquitto's dynamic-security plugin).", no_args_is_help=True
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
    settings = settings_from(config, db_url=db)
    target = _target(dynsec, broker_admin)
    with session_for(settings) as session:
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


@devices_app.command("import")
def devices_import(
    file: Annotated[Path, typer.Argument(help="CSV: id,public_key[,model,serial,...].")],
    dynsec: DynsecOption = None,
    passwords_out: Annotated[
        Path | None,
        typer.Option(help="With --dynsec: write id,password of every new login here (0600)."),
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Register many gateways at once (a production line's batch), all or nothing; with
    --dynsec also their broker logins, written to the plugin's file in one go."""
    from cloud.device_import import ImportRejected, read_rows, register_all

    settings = settings_from(config, db_url=db)
    if (dynsec is None) != (passwords_out is None):
        typer.echo("error: --dynsec and --passwords-out go together", err=True)
        raise typer.Exit(2)
    try:
        rows = read_rows(file.read_text(encoding="utf-8"))
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    except UnicodeDecodeError as exc:
        typer.echo(f"error: {file} is not UTF-8 text", err=True)
        raise typer.Exit(1) from exc
    except ImportRejected as exc:
        typer.echo(f"error: {file} not imported:\n{exc}", err=True)
        raise typer.Exit(1) from exc
    document = DynsecFile.load(dynsec) if dynsec is not None else None
    try:
        with session_for(settings) as session:
            count = register_all(session, rows, now_ms=wall_ms(), actor=f"cli:import:{file.name}")
    except ImportRejected as exc:
        typer.echo(f"error: {file} not imported:\n{exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"registered {count} devices from {file}")
    if document is not None and dynsec is not None and passwords_out is not None:
        passwords = {r.device_id: broker_logins.new_password() for r in rows}
        for device_id, password in passwords.items():
            document.set_device(device_id, password)
        passwords_out.touch(mode=0o600)
        passwords_out.write_text(
            "id,password\n" + "".join(f"{d},{p}\n" for d, p in passwords.items())
        )
        document.save(dynsec)
        typer.echo(
            f"{count} broker logins in {dynsec} (start or restart Mosquitto to load it); "
            f"passwords in {passwords_out}"
        )


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
    settings = settings_from(config)
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
    admin_password = read_password(admin_password_file)
    cloud_password = read_password(cloud_password_file)
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


@broker_app.command("refresh-roles")
def broker_refresh_roles(
    dynsec: DynsecOption = None,
    broker_admin: BrokerAdminOption = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Give the cloud's and every device's broker role today's ACLs (after an upgrade that
    added a topic, e.g. the ``stored`` watermarks); logins and passwords are untouched."""
    settings = settings_from(config, db_url=db)
    target = _target(dynsec, broker_admin)
    try:
        if target.dynsec_file is not None:
            document = DynsecFile.load(target.dynsec_file)
            count = document.refresh_roles()
            document.save(target.dynsec_file)
        elif target.online:
            with session_for(settings) as session:
                ids = [device.id for device, _ in registry.list_devices(session)]
            count = asyncio.run(broker_admin_client.refresh_roles(settings, ids))
        else:
            typer.echo("error: say where: --dynsec FILE or --broker-admin", err=True)
            raise typer.Exit(2)
    except DynsecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"roles refreshed: the cloud's and {count} device(s)")


@devices_app.command("list")
def devices_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Every registered device, its state and key fingerprints."""
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
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
    settings = settings_from(config, db_url=db)
    target = _target(dynsec, broker_admin)
    with session_for(settings) as session:
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
    settings = settings_from(config, db_url=db)
    with session_for(settings) as session:
        key = registry.rotate_key(
            session,
            id,
            registry.read_public_key(public_key),
            now_ms=wall_ms(),
            grace_s=grace_hours * 3600,
        )
        typer.echo(f"{id}: key {registry.fingerprint(key.public_key)} is current")
