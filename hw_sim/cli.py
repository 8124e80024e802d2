"""``boilertwin sim ...``: run the simulated boiler and modem from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hw_sim.pty import PtyError
from hw_sim.rtu_server import LineSettings
from hw_sim.runner import SimSettings, Simulator, run_modem
from protocols.reference import REFERENCE_MAP
from protocols.regmap_doc import register_map_markdown

app = typer.Typer(
    help="Simulated hardware for hardware-in-the-loop tests: a boiler controller and an LTE modem.",
    no_args_is_help=True,
)


def parse_address(text: str, *, option: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (loopback) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run `main`, cancelling it cleanly on SIGTERM or Ctrl-C."""

    async def supervise() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(supervise())
    except PtyError as exc:
        typer.echo(f"error: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _print_ready(sim: Simulator) -> None:
    s = sim.settings
    ident = sim.boiler.identity
    lines = [
        f"boilertwin simulated boiler ready: {ident.model} serial {ident.serial_number}, "
        f"register map bt-ref-1, seed {s.seed}, time x{s.time_scale:g}",
    ]
    if sim.rtu:
        path = Path(sim.rtu.path).absolute()
        lines += [
            f"  Modbus RTU  {path}  unit {s.unit}, {s.line.describe()}"
            + (" (line timing emulated)" if s.line.emulate_timing else ""),
            f"    try: mbpoll -m rtu -b {s.line.baud} -P {_parity_word(s.line.parity)} -a {s.unit} "
            f"-t 3 -0 -r 0 -c 19 -1 {path}",
        ]
    if sim.tcp:
        lines += [
            f"  Modbus TCP  {sim.tcp.host}:{sim.tcp.port}  unit {s.unit}",
            f"    try: mbpoll -m tcp -p {sim.tcp.port} -a {s.unit} -t 3 -0 -r 0 -c 19 -1 "
            f"{sim.tcp.host}",
        ]
    if sim.control:
        url = f"http://{sim.control.host}:{sim.control.port}"
        lines += [
            f"  control     {url}/state",
            f'    try: curl -s -X POST {url}/fault -d \'{{"code": "F28"}}\'   '
            f"then {url}/repair, and write 1 to holding register 210 to reset",
        ]
    if s.modem_pty:
        lines.append(f"  modem (AT)  {Path(s.modem_pty).absolute()}")
    lines.append("Ctrl-C or SIGTERM stops it.")
    print("\n".join(lines), flush=True)


def _parity_word(parity: str) -> str:
    return {"E": "even", "O": "odd", "N": "none"}[parity]


@app.command("boiler")
def boiler(
    pty: Annotated[
        Path | None, typer.Option(help="Publish the Modbus RTU slave's serial port at PATH.")
    ] = None,
    tcp: Annotated[
        str | None, typer.Option(help="Serve Modbus TCP on HOST:PORT (port 0 = any free port).")
    ] = None,
    unit: Annotated[int, typer.Option(help="Modbus unit (slave) id, 1..247.")] = 1,
    control: Annotated[
        str | None, typer.Option(help="Serve the HTTP control endpoint on HOST:PORT.")
    ] = None,
    modem_pty: Annotated[
        Path | None, typer.Option(help="Also simulate the gateway's LTE modem at PATH.")
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per real second (1440: a day in a minute).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for draws, noise and injected comms faults.")] = 0,
    start: Annotated[
        datetime | None, typer.Option(help="Simulated local time at start (default: now).")
    ] = None,
    baud: Annotated[
        int, typer.Option(help="Line speed a master must use (and timing is emulated at).")
    ] = 19200,
    parity: Annotated[str, typer.Option(help="N, E or O.")] = "E",
    stop_bits: Annotated[int, typer.Option(help="1 or 2.")] = 1,
    line_timing: Annotated[
        bool, typer.Option(help="Hold replies as long as a real serial line would.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a simulated boiler controller over Modbus RTU (pty) and/or Modbus TCP."""
    _configure_logging(log_level)
    try:
        settings = SimSettings(
            pty=str(pty) if pty else None,
            tcp=parse_address(tcp, option="--tcp") if tcp else None,
            control=parse_address(control, option="--control") if control else None,
            modem_pty=str(modem_pty) if modem_pty else None,
            unit=unit,
            time_scale=time_scale,
            seed=seed,
            start_wall_s=_local_seconds(start) if start else None,
            line=LineSettings(
                baud=baud, parity=parity.upper(), stop_bits=stop_bits, emulate_timing=line_timing
            ),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run_until_signalled(Simulator(settings).run(ready=_print_ready))


@app.command("modem")
def modem(
    pty: Annotated[Path, typer.Option(help="Publish the modem's AT-command port at PATH.")],
    control: Annotated[str | None, typer.Option(help="Serve GET/POST /modem on HOST:PORT.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a simulated LTE modem answering AT commands on a pty."""
    _configure_logging(log_level)
    address = parse_address(control, option="--control") if control else None

    def ready(url: str | None) -> None:
        print(f"boilertwin simulated modem ready: AT port {pty.absolute()}", flush=True)
        if url:
            print(f"  control {url}/modem", flush=True)

    run_until_signalled(run_modem(str(pty), address, ready=ready))


@app.command("register-map")
def register_map(
    format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
) -> None:
    """Print the reference controller's register map."""
    if format == "markdown":
        typer.echo(register_map_markdown(REFERENCE_MAP), nl=False)
    elif format == "json":
        import json

        typer.echo(json.dumps(REFERENCE_MAP.to_dict(), indent=2))
    else:
        raise typer.BadParameter("format must be markdown or json", param_hint="--format")


def _local_seconds(moment: datetime) -> float:
    """Local wall-clock seconds since the epoch for a naive or aware datetime."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    offset = moment.utcoffset()
    return moment.timestamp() + (offset.total_seconds() if offset else 0.0)


fleet_app = typer.Typer(
    help="Thousands of simulated gateways against a real broker (docs/fleet-simulator.md).",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("keys")
def fleet_keys(
    count: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many gateways.")],
    out: Annotated[Path, typer.Option(help="Folder for keys.csv (secret) and devices.csv.")],
    prefix: Annotated[str, typer.Option(help="Device ids are <prefix>-000000...")] = "sim",
) -> None:
    """Make gateway keys: devices.csv is for `boilertwin cloud devices import`."""
    from hw_sim.fleet import make_keys

    keys, devices = make_keys(count, out, prefix)
    typer.echo(f"{count} keys in {keys} (0600); register them with:")
    typer.echo(f"  boilertwin cloud devices import {devices} --dynsec FILE --passwords-out PW.csv")


@fleet_app.command("run")
def fleet_run(
    keys: Annotated[Path, typer.Option(help="keys.csv from `sim fleet keys`.")],
    passwords: Annotated[Path, typer.Option(help="The import's --passwords-out file.")],
    cloud_keys: Annotated[Path, typer.Option(help="Folder of the cloud's <kid>.pem keys.")],
    broker: Annotated[str, typer.Option(help="Broker HOST:PORT.")] = "127.0.0.1:1883",
    minutes: Annotated[float, typer.Option(min=0.01, help="Simulated minutes to run.")] = 60.0,
    time_scale: Annotated[float, typer.Option(min=0.01, help="Simulated s per real s.")] = 60.0,
    lockouts_per_day: Annotated[float, typer.Option(min=0.0)] = 0.5,
    offline_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    offline_hours: Annotated[float, typer.Option(min=0.0)] = 3.0,
    storm_at_minute: Annotated[float | None, typer.Option(help="Everyone reconnects.")] = None,
    seed: Annotated[int, typer.Option()] = 1,
    drain_seconds: Annotated[
        float, typer.Option(min=0.0, help="Then wait this long for watermarks to confirm all.")
    ] = 0.0,
    degrade_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of boilers that wear out.")
    ] = 0.0,
    degrade_mode: Annotated[
        str | None,
        typer.Option(help="leak, electrode, scaling, fan or sensor_drift (default: a mix)."),
    ] = None,
) -> None:
    """Run the fleet against the broker, then print what it sent and what was confirmed."""
    from hw_sim.fleet import FleetSettings, load_cloud_keys, load_identities, run_fleet
    from hw_sim.fleet_wear import FLEET_MODES

    host, port = parse_address(broker, option="--broker")
    mode = next((m for m in FLEET_MODES if m.value == degrade_mode), None)
    if degrade_mode is not None and mode is None:
        known = ", ".join(m.value for m in FLEET_MODES)
        typer.echo(f"error: --degrade-mode must be one of {known}", err=True)
        raise typer.Exit(2)
    try:
        identities = load_identities(keys, passwords)
        pinned = load_cloud_keys(cloud_keys)
    except (OSError, KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    settings = FleetSettings(
        broker_host=host,
        broker_port=port,
        time_scale=time_scale,
        duration_s=minutes * 60,
        lockouts_per_day=lockouts_per_day,
        offline_share=offline_share,
        offline_s=offline_hours * 3600,
        storm_at_s=None if storm_at_minute is None else storm_at_minute * 60,
        seed=seed,
        drain_s=drain_seconds,
        degrade_share=degrade_share,
        degrade_mode=mode,
    )
    typer.echo(f"{len(identities)} gateways, {minutes} simulated minutes at {time_scale}x")
    summary = asyncio.run(run_fleet(identities, pinned, settings))
    for line in summary.lines():
        typer.echo(line)
