"""``boilertwin cloud devices import``: thousands of gateways in one go, all or nothing, every
problem named with its line (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

import boilertwin
from cloud.db import make_engine, session_factory
from cloud.dynsec import DynsecFile
from cloud.models import Device, DeviceKey, ThreadEvent, Twin
from protocols.cose import generate_private_key, public_key_to_raw

COUNT = 2000


def _key_text(i: int) -> str:
    raw = public_key_to_raw(generate_private_key().public_key())
    return raw.hex() if i % 2 else base64.b64encode(raw).decode()


def _count(db_url: str, model: object) -> int:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[arg-type]
    finally:
        engine.dispose()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(boilertwin.app, ["cloud", "devices", "import", *args])
    return result.exit_code, result.output


def test_thousands_of_devices_and_their_broker_logins(db_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "batch.csv"
    lines = ["id,public_key,model,serial,lat,lon"]
    lines += [f"gw-{i:05d},{_key_text(i)},Condens 7000,SN{i},51.5,-0.12" for i in range(COUNT)]
    csv.write_text("\n".join(lines) + "\n")
    dynsec = tmp_path / "dynamic-security.json"
    DynsecFile.new("broker-admin", "admin-password").save(dynsec)
    passwords = tmp_path / "passwords.csv"
    code, output = run(
        str(csv), "--db", db_url, "--dynsec", str(dynsec), "--passwords-out", str(passwords)
    )
    assert code == 0, output
    assert f"registered {COUNT} devices" in output
    assert _count(db_url, Device) == COUNT
    assert _count(db_url, DeviceKey) == COUNT
    assert _count(db_url, Twin) == COUNT
    assert _count(db_url, ThreadEvent) == COUNT, "each registration is in its thread"
    logins = {c["username"] for c in json.loads(dynsec.read_text())["clients"]}
    assert {f"gw-{i:05d}" for i in range(COUNT)} <= logins
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    rows = passwords.read_text().splitlines()
    assert rows[0] == "id,password" and len(rows) == COUNT + 1
    secret = rows[1].split(",")[1]
    assert len(secret) >= 24 and secret not in output, "no secret on the terminal"

    again, output = run(str(csv), "--db", db_url)
    assert again == 1 and "line 2: gw-00000 is already registered" in output
    assert _count(db_url, Device) == COUNT


def test_every_problem_is_named_and_nothing_is_written(db_url: str, tmp_path: Path) -> None:
    good = _key_text(0)
    csv = tmp_path / "bad.csv"
    csv.write_text(
        "id,public_key,install_date\n"
        f"gw-ok,{good},2024-03-01\n"
        f"Bad Id,{good},\n"
        "gw-badkey,not-a-key!,\n"
        f"gw-ok,{_key_text(1)},\n"
        f"gw-date,{_key_text(2)},yesterday\n"
        f"bt-cloud-x,{_key_text(3)},\n"
    )
    code, output = run(str(csv), "--db", db_url)
    assert code == 1
    for expected in (
        "line 3: device id 'Bad Id'",
        "line 4: public_key",
        "line 5: gw-ok is also on line 2",
        "line 7: device id 'bt-cloud-x' is reserved",
    ):
        assert expected in output, output
    assert _count(db_url, Device) == 0

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"id,public_key,colour\ngw-1,{good},red\n")
    code, output = run(str(unknown), "--db", db_url)
    assert code == 1 and "unknown column(s) colour" in output

    dated = tmp_path / "dated.csv"
    dated.write_text(f"id,public_key,install_date\ngw-date,{good},yesterday\n")
    code, output = run(str(dated), "--db", db_url)
    assert code == 1 and "line 2: install date must be YYYY-MM-DD" in output, output
    assert _count(db_url, Device) == 0
