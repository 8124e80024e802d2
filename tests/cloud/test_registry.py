"""Device registry and the ``boilertwin cloud`` CLI, on a real database and Mosquitto files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud import registry
from cloud.db import make_engine, session_factory, transaction
from cloud.dynsec import DynsecFile
from cloud.errors import ConfigError, Conflict, InvalidInput, NotFound
from cloud.keys import device_keys, keygen, load_command_key
from cloud.models import ThreadEvent, Twin
from protocols.cose import generate_private_key, public_key_to_pem, public_key_to_raw

T0 = 1_790_000_000_000


@pytest.fixture
def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def raw_keys(sessions, device_id: str, now: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return [public_key_to_raw(k) for k in device_keys(session, device_id, now)]


def test_add_rotate_revoke(sessions) -> None:  # type: ignore[no-untyped-def]
    first, second = generate_private_key().public_key(), generate_private_key().public_key()
    with transaction(sessions) as session:
        registry.add_device(
            session,
            "boiler-0001",
            first,
            now_ms=T0,
            model="Condens 7000",
            serial="SN-1",
            install_date="2024-03-01",
            location=registry.Location.parse("51.5,-0.1"),
        )
    with transaction(sessions) as session, pytest.raises(Conflict):
        registry.add_device(session, "boiler-0001", first, now_ms=T0)
    assert raw_keys(sessions, "boiler-0001", T0) == [public_key_to_raw(first)]
    with transaction(sessions) as session:
        registry.rotate_key(session, "boiler-0001", second, now_ms=T0, grace_s=60)
    # Both keys during the grace period (newest first), only the new one after it.
    assert raw_keys(sessions, "boiler-0001", T0 + 59_000) == [
        public_key_to_raw(second),
        public_key_to_raw(first),
    ]
    assert raw_keys(sessions, "boiler-0001", T0 + 60_000) == [public_key_to_raw(second)]
    with transaction(sessions) as session:
        registry.revoke_device(session, "boiler-0001", now_ms=T0 + 1)
    assert raw_keys(sessions, "boiler-0001", T0 + 2) == []
    with transaction(sessions) as session, pytest.raises(Conflict):
        registry.rotate_key(session, "boiler-0001", generate_private_key().public_key(), now_ms=T0)
    with sessions() as session:
        changes = [
            e.data["change"] for e in session.scalars(select(ThreadEvent).order_by(ThreadEvent.id))
        ]
        twin = session.get(Twin, "boiler-0001")
    assert changes == ["registered", "key_rotated", "revoked"]
    assert twin is not None and twin.connection == "unknown"


@pytest.mark.parametrize(
    ("device_id", "install", "where"),
    [
        ("Boiler-1", None, None),
        ("cloud", None, None),
        ("ab", None, None),
        ("boiler-0009", "2024-13-01", None),
        ("boiler-0009", None, "91,0"),
    ],
)
def test_bad_registrations_are_refused(sessions, device_id, install, where) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session, pytest.raises(InvalidInput):
        registry.add_device(
            session,
            device_id,
            generate_private_key().public_key(),
            now_ms=T0,
            install_date=install,
            location=registry.Location.parse(where) if where else None,
        )


def test_unknown_device(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session, pytest.raises(NotFound):
        registry.revoke_device(session, "boiler-0404", now_ms=T0)


def test_dynsec_file_holds_bound_device_logins(tmp_path: Path) -> None:
    path = tmp_path / "dynamic-security.json"
    document = DynsecFile.new("broker-admin", "admin-password")
    document.set_cloud("cloud", "cloud-password")
    document.set_device("boiler-0001", "first")
    document.set_device("boiler-0001", "second")  # replaced, not duplicated
    document.save(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    clients = {c["username"]: c for c in data["clients"]}
    assert set(clients) == {"broker-admin", "cloud", "boiler-0001"}
    device = clients["boiler-0001"]
    assert device["clientid"] == "boiler-0001" and "clientid" not in clients["cloud"]
    assert device["roles"] == [{"rolename": "device:boiler-0001"}]
    assert data["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    # The plugin's own hash: PBKDF2-SHA512 over the base64-decoded 12-byte salt.
    salt = base64.b64decode(device["salt"])
    digest = hashlib.pbkdf2_hmac("sha512", b"second", salt, device["iterations"])
    assert len(salt) == 12 and base64.b64encode(digest).decode() == device["password"]
    reloaded = DynsecFile.load(path)
    assert reloaded.remove_device("boiler-0001") and not reloaded.remove_device("boiler-0001")
    assert sorted(reloaded.usernames()) == ["broker-admin", "cloud"]
    assert "device:boiler-0001" not in {r["rolename"] for r in reloaded.data["roles"]}


@pytest.mark.parametrize("device_id", ["cloud", "broker-admin", "bt-cloud-host1", "bt-admin-x1"])
def test_ids_of_the_cloud_and_its_tools_are_reserved(device_id: str) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        registry.check_device_id(device_id)


def test_command_keys_have_ids_and_private_files(tmp_path: Path) -> None:
    older = keygen(tmp_path, "cloud-2026")
    os.utime(tmp_path / "cloud-2026.key", (1, 1))
    newer = keygen(tmp_path, "cloud-2027")
    assert oct((tmp_path / "cloud-2027.key").stat().st_mode & 0o777) == "0o600"
    assert load_command_key(tmp_path).kid == "cloud-2027"
    assert load_command_key(tmp_path, "cloud-2026").public_pem == older.public_pem
    assert newer.public_pem == (tmp_path / "cloud-2027.pem").read_bytes()
    with pytest.raises(ConfigError):
        keygen(tmp_path, "cloud-2027")  # never overwrites
    with pytest.raises(ConfigError):
        keygen(tmp_path, "../escape")
    (tmp_path / "cloud-2026.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_command_key(tmp_path, "cloud-2026")


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boilertwin", "cloud", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
def test_cli_registry_round_trip(db_url: str, tmp_path: Path) -> None:
    key = tmp_path / "device.pem"
    key.write_bytes(public_key_to_pem(generate_private_key().public_key()))
    dynsec = tmp_path / "dynamic-security.json"
    (tmp_path / "admin.pw").write_text("admin-password-1\n")
    (tmp_path / "cloud.pw").write_text("cloud-password-1\n")
    init = ["broker", "init", "--dynsec", str(dynsec)]
    init += ["--admin-password-file", str(tmp_path / "admin.pw")]
    init += ["--cloud-password-file", str(tmp_path / "cloud.pw")]
    assert cli(*init).returncode == 0
    again_init = cli(*init)
    assert again_init.returncode == 1 and "--force" in again_init.stderr
    added = cli(
        "devices",
        "add",
        "--db",
        db_url,
        "--id",
        "boiler-0042",
        "--public-key",
        str(key),
        "--model",
        "Condens 7000",
        "--location",
        "51.5,-0.12",
        "--install-date",
        "2023-11-30",
        "--dynsec",
        str(dynsec),
        "--password-out",
        str(tmp_path / "pw"),
    )
    assert added.returncode == 0, added.stderr
    assert "boiler-0042" in set(DynsecFile.load(dynsec).usernames())
    assert len((tmp_path / "pw").read_text().strip()) >= 24
    listed = cli("devices", "list", "--db", db_url, "--json")
    record = json.loads(listed.stdout)
    assert record["id"] == "boiler-0042" and not record["revoked"] and len(record["keys"]) == 1
    again = cli("devices", "add", "--db", db_url, "--id", "boiler-0042", "--public-key", str(key))
    assert again.returncode == 1 and "already registered" in again.stderr
    bad = cli("devices", "add", "--db", db_url, "--id", "BAD", "--public-key", str(key))
    assert bad.returncode == 1 and "must match" in bad.stderr
    revoked = cli(
        "devices", "revoke", "--db", db_url, "--id", "boiler-0042", "--dynsec", str(dynsec)
    )
    assert revoked.returncode == 0, revoked.stderr
    assert set(DynsecFile.load(dynsec).usernames()) == {"broker-admin", "cloud"}
    assert json.loads(cli("devices", "list", "--db", db_url, "--json").stdout)["revoked"]
    user = cli(
        "users",
        "add",
        "--db",
        db_url,
        "--id",
        "sue",
        "--role",
        "support",
        stdin="a-long-password\n",
    )
    assert user.returncode == 0, user.stderr
    made = cli("keygen", "--kid", "cloud-t", "--keys-dir", str(tmp_path / "keys"))
    assert made.returncode == 0 and (tmp_path / "keys" / "cloud-t.pem").exists()
