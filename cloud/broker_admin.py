"""Device logins on a running broker, through the dynamic-security plugin's control topic.

The admin login (``broker_admin_username``, password in ``broker_admin_password_file``) may
publish to ``$CONTROL/dynamic-security/v1`` and read its answers, nothing else. Each call
connects, sends its commands in one request, waits for the plugin's answer and fails with
`DynsecError` naming the first command the plugin refused. The plugin saves its file after
every change, so what is done here survives a broker restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import aiomqtt

from cloud.dynsec import (
    CLOUD_ROLE,
    CONTROL_TOPIC,
    DynsecError,
    cloud_acls,
    control_commands,
    device_acls,
    device_role,
    role_refresh_commands,
)
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
TOLERATED = {
    "deleteClient": "Client not found",
    "deleteRole": "Role not found",
    "addRoleACL": "ACL with this topic already exists",
}
"""Answers that mean the wanted state already holds (removing what is not there)."""


async def control(settings: CloudSettings, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send `commands` to the plugin as the admin login; its answers, one per command."""
    password = settings.broker_admin_password()
    if password is None:
        raise DynsecError("broker_admin_password_file is not set: cannot reach the plugin")
    tls = settings.mqtt_tls_context()
    client = aiomqtt.Client(
        settings.broker_host,
        settings.broker_port,
        username=settings.broker_admin_username,
        password=password,
        identifier=f"bt-admin-{uuid.uuid4().hex[:12]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls,
        timeout=TIMEOUT_S,
    )
    # Every admin client reads every answer on the response topic: each command carries
    # this request's correlation id, and only answers that echo it are ours.
    request = uuid.uuid4().hex
    tagged = [
        {**command, "correlationData": f"{request}:{i}"} for i, command in enumerate(commands)
    ]
    try:
        async with asyncio.timeout(TIMEOUT_S), client:
            await client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)
            await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
            async for message in client.messages:
                payload = message.payload
                answer = json.loads(payload if isinstance(payload, bytes | str) else b"{}")
                responses: list[dict[str, Any]] = answer.get("responses", [])
                mine = [
                    r for r in responses if str(r.get("correlationData", "")).startswith(request)
                ]
                if mine:
                    return mine
    except (aiomqtt.MqttError, TimeoutError) as exc:
        where = f"{settings.broker_host}:{settings.broker_port}"
        raise DynsecError(f"no answer from the broker's plugin at {where}: {exc}") from exc
    raise DynsecError("the broker closed the connection before answering")


def _check(commands: list[dict[str, Any]], answers: list[dict[str, Any]], device_id: str) -> None:
    if len(answers) != len(commands):
        raise DynsecError(f"the plugin answered {len(answers)} of {len(commands)} commands")
    for command, answer in zip(commands, answers, strict=True):
        error = answer.get("error")
        if error and TOLERATED.get(command["command"]) != error:
            raise DynsecError(f"{command['command']} for {device_id}: {error}", device_id=device_id)


async def add_device(settings: CloudSettings, device_id: str, password: str) -> None:
    """A new device login bound to its client id, with its own role."""
    commands = control_commands("add", device_id, password)
    _check(commands, await control(settings, commands), device_id)
    log.info("%s: broker login created", device_id)


async def set_password(settings: CloudSettings, device_id: str, password: str) -> None:
    """A new password for an existing device login (the old one stops working)."""
    commands = control_commands("password", device_id, password)
    _check(commands, await control(settings, commands), device_id)
    log.info("%s: broker password replaced", device_id)


async def remove_device(settings: CloudSettings, device_id: str) -> None:
    """Delete a device's login and role; the broker disconnects it at once."""
    commands = control_commands("remove", device_id)
    _check(commands, await control(settings, commands), device_id)
    log.info("%s: broker login removed", device_id)


REFRESH_BATCH = 200
"""Control commands per message when refreshing roles (a message per a few dozen devices)."""


async def refresh_roles(settings: CloudSettings, device_ids: list[str]) -> int:
    """Add today's ACLs to the cloud's role and each device's role on a running broker (what
    is there already stays); a device with no role on the broker is skipped. Returns the
    devices whose role was refreshed."""
    commands = role_refresh_commands(CLOUD_ROLE, cloud_acls())
    owners: list[str] = ["cloud"] * len(commands)
    for device_id in device_ids:
        added = role_refresh_commands(device_role(device_id), device_acls(device_id))
        commands += added
        owners += [device_id] * len(added)
    refreshed: set[str] = set()
    for start in range(0, len(commands), REFRESH_BATCH):
        batch = commands[start : start + REFRESH_BATCH]
        answers = await control(settings, batch)
        if len(answers) != len(batch):
            raise DynsecError(f"the plugin answered {len(answers)} of {len(batch)} commands")
        for owner, command, answer in zip(owners[start:], batch, answers, strict=False):
            error = answer.get("error")
            if error == "Role not found" and owner != "cloud":
                continue  # no login on this broker: nothing to refresh
            if error and TOLERATED.get(command["command"]) != error:
                raise DynsecError(f"addRoleACL for {owner}: {error}", device_id=owner)
            if owner != "cloud":
                refreshed.add(owner)
    log.info("broker roles refreshed: cloud and %d device(s)", len(refreshed))
    return len(refreshed)
