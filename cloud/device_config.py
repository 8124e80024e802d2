"""Remote configuration, cloud side: layers, each device's desired version, and what it runs.

Support sets settings (those `protocols.remote_config` allows) on three layers: the whole
fleet (``fleet``, target ``*``), a boiler model (``model``), one device (``device``). A
device's configuration is the three merged in that order (the device's own wins). When a
layer changes, every device it touches whose merged configuration differs from the one it
was last sent gets the next version (per device, increasing) in a cloud-signed ``configure``
command (`cloud.commands.issue`), which the dispatcher sends like any other.

What a device runs is what it says: the version in its last ``succeeded`` configure ack, or
in its health report (``config_version``), whichever is newer. A configure it rejected keeps
its reason (the twin shows it; nothing is re-sent until support changes something). A device
offline past the command's expiry gets the same version again in a new command once it is
back (`resend_stale`), so stragglers catch up without anyone acting.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.commands import Issuer
from cloud.domain import CommandState
from cloud.errors import InvalidInput, NotFound
from cloud.lifecycle_models import ConfigLayer, DeviceConfig
from cloud.models import Command, Device, Twin
from protocols.errors import MalformedMessage
from protocols.messages import CommandName
from protocols.remote_config import check_document, encode, merge

log = logging.getLogger(__name__)

SCOPES = ("fleet", "model", "device")
FLEET_TARGET = "*"
RESEND_STATES = (CommandState.EXPIRED.value, CommandState.TIMED_OUT.value)
"""A configure that ended in these was never applied: send the version again."""


def set_layer(
    session: Session,
    scope: str,
    target: str,
    settings: dict[str, Any] | None,
    *,
    now_ms: int,
    issuer: Issuer,
) -> list[str]:
    """Replace a layer (None or empty removes it) and issue the devices it touches their
    new configuration; returns the ids of the devices issued one."""
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "fleet":
        target = FLEET_TARGET
    elif scope == "device" and session.get(Device, target) is None:
        raise NotFound(f"no boiler {target}", device_id=target)
    try:
        document = check_document(settings or {})
        encode(document)  # within the size a command may carry
    except MalformedMessage as exc:
        raise InvalidInput(str(exc), field="settings") from None
    layer = session.get(ConfigLayer, (scope, target))
    if not document:
        if layer is not None:
            session.delete(layer)
    elif layer is None:
        session.add(
            ConfigLayer(
                scope=scope,
                target=target,
                settings=document,
                updated_ms=now_ms,
                updated_by=issuer.actor,
            )
        )
    else:
        layer.settings = document
        layer.updated_ms = now_ms
        layer.updated_by = issuer.actor
    session.flush()
    devices = select(Device.id).where(Device.revoked.is_(False))
    if scope == "model":
        devices = devices.where(Device.model == target)
    elif scope == "device":
        devices = devices.where(Device.id == target)
    issued = reconcile(session, list(session.scalars(devices.order_by(Device.id))), now_ms, issuer)
    log.info(
        "config layer %s/%s set by %s: %d device(s) issued",
        scope,
        target,
        issuer.actor,
        len(issued),
    )
    return issued


def layers(session: Session) -> list[ConfigLayer]:
    """Every layer, fleet first."""
    rows = list(session.scalars(select(ConfigLayer)))
    return sorted(rows, key=lambda r: (SCOPES.index(r.scope), r.target))


def desired_settings(session: Session, device: Device) -> dict[str, dict[str, Any]]:
    """The device's merged configuration (fleet, then its model, then its own)."""
    keys = [("fleet", FLEET_TARGET), ("model", device.model or ""), ("device", device.id)]
    found = [session.get(ConfigLayer, key) for key in keys]
    return merge(*(layer.settings for layer in found if layer is not None))


def reconcile(session: Session, device_ids: list[str], now_ms: int, issuer: Issuer) -> list[str]:
    """Issue a new version to each device whose merged configuration changed."""
    issued = []
    for device_id in device_ids:
        device = session.get(Device, device_id)
        if device is None or device.revoked:
            continue
        wanted = desired_settings(session, device)
        row = session.get(DeviceConfig, device_id)
        if row is None and not wanted:
            continue
        if row is not None and row.settings == wanted:
            continue
        version = (row.version if row is not None else 0) + 1
        if row is None:
            row = DeviceConfig(device_id=device_id, version=version, settings=wanted)
            session.add(row)
        row.version, row.settings, row.updated_ms = version, wanted, now_ms
        row.command_id = _send(session, device_id, version, wanted, now_ms, issuer)
        issued.append(device_id)
    return issued


def _send(
    session: Session,
    device_id: str,
    version: int,
    wanted: dict[str, dict[str, Any]],
    now_ms: int,
    issuer: Issuer,
) -> str:
    command = issuer.issue(
        session,
        device_id,
        CommandName.CONFIGURE,
        {"version": version, "config": encode(wanted)},
        now_ms=now_ms,
        reason=f"configuration v{version}",
        role="config",
    )
    thread.record(
        session,
        device_id=device_id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=issuer.actor,
        subject=command.id,
        data={"change": "config_desired", "version": version, "settings": wanted},
    )
    return command.id


def resend_stale(session: Session, now_ms: int, issuer: Issuer) -> list[str]:
    """Devices behind their desired version whose last configure expired undelivered (or
    timed out) and that are online now: the same version again, in a new command."""
    rows = session.execute(
        select(DeviceConfig, Command.state, Twin.connection)
        .join(Command, Command.id == DeviceConfig.command_id)
        .join(Twin, Twin.device_id == DeviceConfig.device_id)
        .where(Command.state.in_(RESEND_STATES), Twin.connection == "online")
    ).all()
    resent = []
    for row, _state, _connection in rows:
        if reported(session, row.device_id)["version"] >= row.version:
            continue
        row.command_id = _send(session, row.device_id, row.version, row.settings, now_ms, issuer)
        resent.append(row.device_id)
    if resent:
        log.info("configuration sent again to %d device(s) back online", len(resent))
    return resent


def reported(session: Session, device_id: str) -> dict[str, Any]:
    """What the device runs and the fate of its last configure: version (0: edge.toml
    alone), and the last rejection's reason if the newest configure was rejected."""
    version = 0
    twin = session.get(Twin, device_id)
    if twin is not None and twin.health:
        agent = twin.health.get("agent", {})
        if isinstance(agent.get("config_version"), int | float):
            version = int(agent["config_version"])
    last = session.scalars(
        select(Command)
        .where(Command.device_id == device_id, Command.name == CommandName.CONFIGURE.value)
        .order_by(Command.created_ms.desc(), Command.id)
        .limit(20)
    ).all()
    for command in last:
        if command.state == CommandState.SUCCEEDED.value:
            version = max(version, int(command.args.get("version", 0)))
    newest = last[0] if last else None
    rejected = None
    if newest is not None and newest.state == CommandState.REJECTED.value:
        rejected = {
            "version": newest.args.get("version"),
            "reason": newest.result_reason,
            "error": (newest.observed or {}).get("error"),
        }
    return {
        "version": version,
        "last_command": newest.id if newest else None,
        "last_state": newest.state if newest else None,
        "rejected": rejected,
    }


def config_view(session: Session, device_id: str) -> dict[str, Any]:
    """Desired vs reported, for the twin and the API."""
    row = session.get(DeviceConfig, device_id)
    now = reported(session, device_id)
    desired = row.version if row is not None else 0
    state = "in_sync" if now["version"] >= desired else "pending"
    if now["rejected"] is not None and now["version"] < desired:
        state = "rejected"
    return {
        "desired": {"version": desired, "settings": row.settings if row is not None else {}},
        "reported": now,
        "state": state,
    }
