"""``boilertwin edge ...``: run the gateway agent, claim its identity, make its key, check its
configuration."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.agent import run_agent
from edge_agent.config import EdgeSettings, human_bytes, load_settings, register_map
from edge_agent.errors import ConfigError, ConfigErrors, EdgeError
from edge_agent.keys import keygen, load_cloud_keys, load_device_key, read_secret
from edge_agent.provision import provision
from edge_agent.tail import load_settings as load_tail_settings
from edge_agent.tail import run_tail
from protocols.planner import plan_reads

app = typer.Typer(help="The gateway agent on the boiler's Raspberry Pi.", no_args_is_help=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The agent's edge.toml.", show_default=True)
]


def _load(config: Path) -> EdgeSettings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        # File-level errors (unreadable, not TOML) already name the file as their key.
        where = "" if exc.key == str(config) else f"{config}: "
        problems = exc.problems if isinstance(exc, ConfigErrors) else [exc]
        for problem in problems:
            typer.echo(f"error: {where}{problem.key}: {problem.reason}", err=True)
        if len(problems) > 1:
            typer.echo(f"{len(problems)} problems in {config}", err=True)
        raise typer.Exit(2) from exc


@app.command("run")
def run(
    config: ConfigOption = Path("/etc/boilertwin/edge.toml"),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    time_scale: Annotated[
        float, typer.Option(hidden=True, help="Run on an accelerated clock (benchmarks).")
    ] = 1.0,
) -> None:
    """Poll the boiler and keep the cloud up to date until SIGTERM."""
    # systemd's journal stamps time and unit itself; a terminal run gets a time stamp.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=log_level.upper(), format=f"{stamp}%(levelname)s %(name)s: %(message)s"
    )
    settings = _load(config)
    if not settings.provisioned:
        if not settings.can_claim:
            typer.echo(
                f"error: {config}: no device.id, and no provisioning.cloud_url and "
                "provisioning.claim_token_file to claim one (or run boilertwin edge provision)",
                err=True,
            )
            raise typer.Exit(2)
        _claim(settings)
        settings = _load(config)
    try:
        code = run_agent(settings, time_scale=time_scale, reload=lambda: _load(config))
    except EdgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if code:
        raise typer.Exit(code)  # 75: switched to a new release; systemd starts it


def _claim(settings: EdgeSettings, attempts: int | None = None) -> None:
    """Claim this gateway's identity, or exit with the reason the cloud gave."""
    try:
        identity = asyncio.run(provision(settings, attempts=attempts))
    except EdgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"claimed: device {identity.device_id} (boiler {identity.model}, serial {identity.serial})"
    )


@app.command("provision")
def provision_command(
    cloud: Annotated[str, typer.Option("--cloud", help="The cloud API's URL (https://...).")],
    claim_token: Annotated[
        str, typer.Option("--claim-token", help="The claim token (printed on the boiler).")
    ],
    config_dir: Annotated[
        Path, typer.Option("--config-dir", help="Folder of edge.toml (Modbus, state folder).")
    ] = Path("/etc/boilertwin"),
    attempts: Annotated[
        int, typer.Option(min=1, help="Requests before giving up on an unreachable cloud.")
    ] = 5,
) -> None:
    """Join the fleet with a claim token: make the key, read the boiler's identity, register
    with the cloud and keep the answer (done once; `edge run` does it too when needed)."""
    settings = _load(config_dir / "edge.toml")
    if settings.identity_path.exists() or (settings.device.id and settings.mqtt.password_file):
        typer.echo(f"already provisioned as {settings.device.id}")
        return
    state = settings.device.state_dir
    state.mkdir(parents=True, exist_ok=True)
    token_file = state / "claim.token"
    token_file.touch(mode=0o600)
    token_file.write_text(claim_token.strip() + "\n")
    settings = replace(
        settings,
        provisioning=replace(settings.provisioning, cloud_url=cloud, claim_token_file=token_file),
    )
    _claim(settings, attempts)


@app.command("keygen")
def make_key(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Private key file to create (mode 0600).")
    ] = Path("/var/lib/boilertwin/device.key"),
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create the device's Ed25519 signing key; prints where the public key is."""
    try:
        public = keygen(out, force=force)
    except (ConfigError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"private key: {out} (mode 0600, keep it on this gateway)")
    typer.echo(f"public key:  {public} (register it with the cloud)")


@app.command("check-config")
def check_config(config: ConfigOption = Path("/etc/boilertwin/edge.toml")) -> None:
    """Validate edge.toml and the files it names; exit 0 only if the agent could start."""
    settings = _load(config)
    problems: list[str] = []
    warnings: list[str] = []
    if not settings.provisioned:
        if not settings.can_claim:
            typer.echo(
                "error: device.id: not set, and no provisioning.cloud_url and "
                "provisioning.claim_token_file to claim one",
                err=True,
            )
            raise typer.Exit(2)
        typer.echo(
            f"ok: not provisioned yet; edge run claims an identity from "
            f"{settings.provisioning.cloud_url}"
        )
        return
    try:
        load_device_key(settings.device.key_file)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        keys = load_cloud_keys(settings.commands.cloud_keys_dir)
        if not keys:
            warnings.append(
                f"commands.cloud_keys_dir: no <kid>.pem in {settings.commands.cloud_keys_dir}: "
                "every command will be rejected"
            )
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        read_secret(settings.mqtt.password_file, "mqtt.password_file")
    except ConfigError as exc:
        problems.append(str(exc))
    for key, path in (
        ("mqtt.ca_file", settings.mqtt.ca_file),
        ("mqtt.cert_file", settings.mqtt.cert_file),
        ("mqtt.client_key_file", settings.mqtt.client_key_file),
    ):
        if path is not None and not path.is_file():
            problems.append(f"{key}: {path} does not exist")
    m = settings.modbus
    if m.transport == "rtu" and not Path(m.port).exists():
        warnings.append(f"modbus.port: {m.port} does not exist (yet)")
    regmap = register_map(m)
    plan = plan_reads(regmap.readable(), blocks=regmap.blocks)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    where = (
        f"{m.port} {m.baudrate} 8{m.parity}{m.stopbits}"
        if m.transport == "rtu"
        else (f"{m.host}:{m.tcp_port}")
    )
    typer.echo(f"ok: device {settings.device.id}")
    typer.echo(
        f"  modbus {m.transport} {where} unit {m.unit}: profile {regmap.id} v{regmap.version}, "
        f"{len(regmap.readable())} points in {len(plan)} request(s) per poll"
    )
    r = settings.report
    typer.echo(
        f"  poll every {r.poll_interval_s:g} s, batch (group commit) every "
        f"{r.batch_interval_s:g} s, heartbeat {r.heartbeat_s:g} s"
    )
    q = settings.mqtt
    typer.echo(
        f"  mqtt {'mqtts' if q.tls else 'mqtt'}://{q.host}:{q.port} as {settings.mqtt_username}, "
        f"keepalive {q.keepalive_s} s"
    )
    cap = settings.outbox.max_bytes
    typer.echo(f"  outbox {settings.outbox_path}, cap {human_bytes(cap)} ({cap:,} bytes)")


@app.command("tail")
def watch(
    device: Annotated[str, typer.Option(help="Device id to watch (bt/v1/<device>/#).")],
    public_key: Annotated[
        Path, typer.Option(help="The device's public key (the .pub keygen wrote).")
    ],
    username: Annotated[str, typer.Option(help="Broker user name (e.g. cloud).")],
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the broker password.")
    ] = None,
    host: Annotated[str, typer.Option(help="Broker host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Broker port (8883 is MQTT over TLS).")] = 1883,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="MQTT over TLS.")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for --tls.")] = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many messages.", min=0)] = None,
) -> None:
    """Print every message a gateway sends, each verified against its public key."""
    try:
        settings = load_tail_settings(
            host=host,
            port=port,
            device_id=device,
            public_key_file=public_key,
            username=username,
            password_file=password_file,
            tls=tls,
            ca_file=ca_file,
            count=count,
        )
        run_tail(settings, typer.echo)
    except EdgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
