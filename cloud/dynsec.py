"""Broker accounts in Mosquitto's dynamic-security plugin: who may connect, as which client
id, and publish or subscribe to what.

Mosquitto 2.0's ``password_file`` + ``acl_file`` cannot stop a device from taking over another
client's session (client ids are not tied to logins) or from joining the cloud's shared
subscription (the ACL is checked only after a group member is picked, so the device
silently swallows its share of the fleet's messages). The dynamic-security plugin that ships
with Debian's Mosquitto 2.0.11 checks both, so the project uses it:

* every device is a client whose **client id is bound to its login** (``clientid`` = device
  id): it cannot connect under any other id, so it can neither take over the cloud's
  persistent session nor another device's;
* a device's role lets it publish only its own uplink topics, **subscribe only to its own
  ``cmd``** (literally: ``$share/...`` and wildcards are refused with SUBACK 0x87) and receive
  only its own ``cmd``;
* the cloud's login (any client id: each worker has its own, ``bt-cloud-...``, a prefix no
  device id may take) may subscribe to the uplink topics, plainly or through any shared
  group, receive only those, and publish ``cmd``;
* an admin login may use the plugin's control topic, and nothing else.

Defaults deny everything not granted. The same roles are written two ways: into the
plugin's JSON file before the broker starts (`DynsecFile`: first installation, a factory
batch, tests, the demo), and through the plugin's control topic on a running broker
(`control_commands`, sent by `cloud.broker_admin`). Passwords are hashed as the plugin does
(PBKDF2-SHA512, 101 iterations, 12-byte salt), so no external tool is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocols.topics import PREFIX, TopicKind, subscription, topic

CLOUD_ROLE = "cloud"
ADMIN_ROLE = "broker-admin"
DEVICE_ROLE_PREFIX = "device:"
"""A device's role is ``device:<id>`` (Mosquitto 2.0.11 has no per-user topic patterns)."""
CLOUD_CLIENT_PREFIX = "bt-cloud-"
"""Client ids of cloud processes start with this; no device id may."""
ITERATIONS = 101
SALT_BYTES = 12
UPLINK_KINDS = (
    TopicKind.BIRTH,
    TopicKind.DATA,
    TopicKind.EVENT,
    TopicKind.HEALTH,
    TopicKind.ACK,
    TopicKind.STATE,
)
DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
"""Deny by default: publish, receive and subscribe only what a role grants."""
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"


class DynsecError(Exception):
    """The dynamic-security file or the plugin refused an operation; `reason` says why."""

    def __init__(self, reason: str, **context: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.context = context


def password_record(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of `password`: ``password`` / ``salt`` (base64), iterations."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


DOWNLINK_KINDS = (TopicKind.CMD, TopicKind.STORED)
"""What the cloud sends a device: commands and watermarks."""


def _acl(kind: str, topic_filter: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic_filter, "priority": 0, "allow": True}


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """Publish its own uplinks, subscribe to and receive its own downlinks (``cmd`` and the
    cloud's ``stored`` watermarks): nothing else."""
    acls = [_acl("publishClientSend", topic(device_id, kind)) for kind in UPLINK_KINDS]
    for kind in DOWNLINK_KINDS:
        downlink = topic(device_id, kind)
        acls += [_acl("subscribeLiteral", downlink), _acl("publishClientReceive", downlink)]
    return acls


def cloud_acls() -> list[dict[str, Any]]:
    """Read every uplink kind (plainly or through any shared group), publish every downlink,
    read the broker's ``$SYS/broker`` figures."""
    acls: list[dict[str, Any]] = []
    for kind in UPLINK_KINDS:
        uplinks = subscription(kind)
        acls += [
            _acl("subscribePattern", uplinks),
            _acl("subscribePattern", f"$share/+/{uplinks}"),
            _acl("publishClientReceive", uplinks),
        ]
    # One device's whole uplink in one subscription (`edge tail`): what is delivered is still
    # only what the role may receive, the uplink kinds.
    acls.append(_acl("subscribePattern", f"{PREFIX}/+/#"))
    acls += [_acl("publishClientSend", subscription(kind)) for kind in DOWNLINK_KINDS]
    # The broker's own figures, read-only (`cloud.broker_stats`).
    acls += [_acl("subscribePattern", "$SYS/broker/#"), _acl("publishClientReceive", "$SYS/#")]
    return acls


def admin_acls() -> list[dict[str, Any]]:
    """The plugin's control topic (and its answers), nothing else."""
    control = f"{CONTROL_TOPIC}/#"
    return [
        _acl("publishClientSend", CONTROL_TOPIC),
        _acl("subscribeLiteral", f"{CONTROL_TOPIC}/response"),
        _acl("publishClientReceive", control),
    ]


def device_role(device_id: str) -> str:
    """The role name of one device."""
    return DEVICE_ROLE_PREFIX + device_id


# -- the plugin's JSON file (broker stopped) -----------------------------------------------------


class DynsecFile:
    """The plugin's configuration file, edited while the broker is stopped.

    The plugin reads the file once at start and rewrites it after every change made through
    its control topic: an edit made while the broker runs would be lost (use
    `cloud.broker_admin` then).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def new(cls, admin_user: str, admin_password: str) -> DynsecFile:
        """An empty configuration with one admin login and the deny-by-default access."""
        document = cls(
            {
                "clients": [],
                "groups": [],
                "roles": [],
                "defaultACLAccess": dict(DEFAULT_ACCESS),
            }
        )
        document._role(ADMIN_ROLE, admin_acls())
        document._client(admin_user, admin_password, ADMIN_ROLE, clientid=None)
        return document

    @classmethod
    def load(cls, path: Path) -> DynsecFile:
        """An existing file; `DynsecError` if it cannot be read as the plugin's JSON."""
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise DynsecError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
        except json.JSONDecodeError as exc:
            raise DynsecError(f"{path} is not JSON: {exc}", path=str(path)) from exc
        if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
            raise DynsecError(f"{path} is not a dynamic-security file", path=str(path))
        data.setdefault("roles", [])
        data.setdefault("groups", [])
        return cls(data)

    def save(self, path: Path) -> None:
        """Write atomically, mode 0600 (it holds password hashes)."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.data, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def set_cloud(self, username: str, password: str) -> None:
        """The cloud's login (created, or its password replaced)."""
        self._role(CLOUD_ROLE, cloud_acls())
        self._client(username, password, CLOUD_ROLE, clientid=None)

    def set_device(self, device_id: str, password: str) -> None:
        """A device's login bound to its client id, and its role (created or replaced)."""
        self._role(device_role(device_id), device_acls(device_id))
        self._client(device_id, password, device_role(device_id), clientid=device_id)

    def remove_device(self, device_id: str) -> bool:
        """Forget a device's login and role; False if it had none."""
        before = len(self.data["clients"])
        self.data["clients"] = [c for c in self.data["clients"] if c["username"] != device_id]
        role = device_role(device_id)
        self.data["roles"] = [r for r in self.data["roles"] if r["rolename"] != role]
        return len(self.data["clients"]) != before

    def refresh_roles(self) -> int:
        """Rebuild the cloud's role and every device's role with today's ACLs (e.g. after a
        release added a topic kind); logins and passwords are untouched. Returns the devices."""
        self._role(CLOUD_ROLE, cloud_acls())
        devices = [
            client["username"]
            for client in self.data["clients"]
            if any(r.get("rolename") == device_role(client["username"]) for r in client["roles"])
        ]
        for device_id in devices:
            self._role(device_role(device_id), device_acls(device_id))
        return len(devices)

    def usernames(self) -> Iterator[str]:
        """Every login in the file."""
        return (client["username"] for client in self.data["clients"])

    def _role(self, name: str, acls: list[dict[str, Any]]) -> None:
        self.data["roles"] = [r for r in self.data["roles"] if r["rolename"] != name]
        self.data["roles"].append({"rolename": name, "acls": acls})

    def _client(self, username: str, password: str, role: str, *, clientid: str | None) -> None:
        self.data["clients"] = [c for c in self.data["clients"] if c["username"] != username]
        client: dict[str, Any] = {"username": username, "roles": [{"rolename": role}]}
        if clientid is not None:
            client["clientid"] = clientid
        client.update(password_record(password))
        self.data["clients"].append(client)


# -- the plugin's control topic (broker running) -------------------------------------------------


def role_refresh_commands(role: str, acls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Control-topic commands adding every ACL of `acls` to an existing `role` on a running
    broker (one that is there already is answered with an error the caller tolerates)."""
    return [
        {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": acl["acltype"],
            "topic": acl["topic"],
            "priority": acl["priority"],
            "allow": acl["allow"],
        }
        for acl in acls
    ]


def control_commands(
    action: str, device_id: str, password: str | None = None
) -> list[dict[str, Any]]:
    """The control-topic commands that do `action` (``add``, ``password``, ``remove``) for a
    device on a running broker, in order.

    ``add`` creates the role and the client bound to its id (an existing one is an error the
    caller sees: use ``password`` to re-issue a login); ``remove`` deletes both, which also
    disconnects the device.
    """
    role = device_role(device_id)
    if action == "add":
        if password is None:
            raise DynsecError("a new device login needs a password", device_id=device_id)
        return [
            {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
            {
                "command": "createClient",
                "username": device_id,
                "password": password,
                "clientid": device_id,
                "roles": [{"rolename": role}],
            },
        ]
    if action == "password":
        if password is None:
            raise DynsecError("a password is needed", device_id=device_id)
        return [{"command": "setClientPassword", "username": device_id, "password": password}]
    if action == "remove":
        return [
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": role},
        ]
    raise DynsecError(f"unknown action {action!r}", device_id=device_id)
