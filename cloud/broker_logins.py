"""A device's broker login, issued or removed where the operator says: in the plugin's file
(broker stopped) or on the running broker (the admin login). Used by the CLI."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

from cloud import broker_admin
from cloud.dynsec import DynsecError, DynsecFile
from cloud.registry import check_device_id
from cloud.settings import CloudSettings

PASSWORD_BYTES = 24


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """Where logins go: the plugin's JSON file, or the running broker (`broker_admin`)."""

    dynsec_file: Path | None = None
    online: bool = False

    def __post_init__(self) -> None:
        if self.dynsec_file is not None and self.online:
            raise DynsecError("give either a dynamic-security file or the running broker")

    @property
    def wanted(self) -> bool:
        """Whether the operator asked for a broker login at all."""
        return self.dynsec_file is not None or self.online

    def describe(self, settings: CloudSettings) -> str:
        """Where, in words."""
        if self.dynsec_file is not None:
            return f"{self.dynsec_file} (start or restart Mosquitto to load it)"
        return f"the broker at {settings.broker_host}:{settings.broker_port}"


def new_password() -> str:
    """A fresh random broker password for a device."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def issue(
    settings: CloudSettings, target: BrokerTarget, device_id: str, password: str | None = None
) -> str:
    """Create the device's login, or give it a new password; returns the password."""
    check_device_id(device_id)
    password = password or new_password()
    if target.dynsec_file is not None:
        document = DynsecFile.load(target.dynsec_file)
        document.set_device(device_id, password)
        document.save(target.dynsec_file)
    elif target.online:
        asyncio.run(_issue_online(settings, device_id, password))
    return password


async def _issue_online(settings: CloudSettings, device_id: str, password: str) -> None:
    try:
        await broker_admin.set_password(settings, device_id, password)
    except DynsecError as exc:
        if "Client not found" not in exc.reason:
            raise
        await broker_admin.add_device(settings, device_id, password)


def remove(settings: CloudSettings, target: BrokerTarget, device_id: str) -> bool:
    """Delete the device's login (a connected device is disconnected); False if it had none
    (known only for the file)."""
    if target.dynsec_file is not None:
        document = DynsecFile.load(target.dynsec_file)
        removed = document.remove_device(device_id)
        document.save(target.dynsec_file)
        return removed
    if target.online:
        asyncio.run(broker_admin.remove_device(settings, device_id))
        return True
    return False


def init_file(
    path: Path,
    *,
    admin_user: str,
    admin_password: str,
    cloud_user: str,
    cloud_password: str,
    force: bool = False,
) -> None:
    """A new plugin file with the admin and the cloud logins (never overwrites unless asked)."""
    if path.exists() and not force:
        raise DynsecError(f"{path} exists; pass --force to replace it (every login in it)")
    document = DynsecFile.new(admin_user, admin_password)
    document.set_cloud(cloud_user, cloud_password)
    document.save(path)
