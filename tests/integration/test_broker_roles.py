"""``cloud broker refresh-roles``: broker roles made before a release added a topic get it,
in the plugin's file and on a running broker, logins and passwords untouched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from paho.mqtt.reasoncodes import ReasonCode

from cloud import broker_admin
from cloud.dynsec import DynsecFile, device_acls, device_role
from protocols.cose import generate_private_key, public_key_to_pem
from protocols.topics import TopicKind, topic
from tests.broker import Broker

pytestmark = pytest.mark.integration

DEV = "boiler-0066"


def codes(granted: object) -> list[int]:
    assert isinstance(granted, list | tuple)
    return [c.value if isinstance(c, ReasonCode) else int(c) for c in granted]


def old_acls(device_id: str) -> list[dict[str, object]]:
    """A device's ACLs as a release before the ``stored`` topic made them."""
    stored = topic(device_id, TopicKind.STORED)
    return [acl for acl in device_acls(device_id) if acl["topic"] != stored]


def test_the_file_gets_todays_acls(tmp_path: Path) -> None:
    path = tmp_path / "dynsec.json"
    document = DynsecFile.new("admin", "admin-password-1")
    document.set_device(DEV, "device-password-1")
    document._role(device_role(DEV), old_acls(DEV))
    before = [c for c in document.data["clients"] if c["username"] == DEV]
    document.save(path)

    refreshed = DynsecFile.load(path)
    assert refreshed.refresh_roles() == 1
    role = next(r for r in refreshed.data["roles"] if r["rolename"] == device_role(DEV))
    assert role["acls"] == device_acls(DEV)
    assert [c for c in refreshed.data["clients"] if c["username"] == DEV] == before


async def test_a_running_broker_gets_todays_acls(broker: Broker, tmp_path: Path) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'broker_host = "{broker.host}"\nbroker_port = {broker.port}\n'
        f'broker_admin_password_file = "{broker.admin_password_file}"\n'
        f'db_url = "sqlite:///{tmp_path}/cloud.db"\n'
    )
    key = tmp_path / "device.pem"
    key.write_bytes(public_key_to_pem(generate_private_key().public_key()))
    password_out = tmp_path / "device.password"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "boilertwin", "cloud", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = await asyncio.to_thread(
        cli, "devices", "add", "--id", DEV, "--public-key", str(key), "--broker-admin",
        "--password-out", str(password_out),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    settings = broker.admin_settings()
    stored = topic(DEV, TopicKind.STORED)
    removals = [
        {"command": "removeRoleACL", "rolename": device_role(DEV), "acltype": kind, "topic": stored}
        for kind in ("subscribeLiteral", "publishClientReceive")
    ]
    assert [a.get("error") for a in await broker_admin.control(settings, removals)] == [None] * 2
    password = password_out.read_text().strip()
    async with broker.client(DEV, password=password, identifier=DEV) as device:
        assert codes(await device.subscribe(stored, qos=1))[0] >= 0x80, "an old role"

    refreshed = await asyncio.to_thread(cli, "broker", "refresh-roles", "--broker-admin")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "1 device(s)" in refreshed.stdout
    async with broker.client(DEV, password=password, identifier=DEV) as device:
        assert codes(await device.subscribe(stored, qos=1)) == [1]
    again = await asyncio.to_thread(cli, "broker", "refresh-roles", "--broker-admin")
    assert again.returncode == 0, again.stderr  # what is there already is fine
