"""The ``configure`` command: a cloud-signed configuration, checked, kept, then applied.

The command has already passed the executor's checks (pinned signature, this device, clock,
expiry, never run twice). Here: its ``version`` must be newer than the one in force; its
``config`` must be a document of settings the cloud may set (`protocols.remote_config`);
merged into edge.toml it must pass every rule ``edge check-config`` applies. Only then is it
written (atomically, fsynced) to ``remote-config.json`` in the state folder and acked
``succeeded``; the agent then restarts its loops on the new settings (`Agent.request_reload`),
which commits the readings in memory first: nothing buffered is lost.

Anything else is acked ``rejected`` (``invalid_args``) with the reason, and the configuration
in force stays: a bad configuration never reaches the disk, so it cannot brick the gateway.
If a kept configuration stops validating (edge.toml changed under it), the agent runs on
edge.toml alone and says so (`edge_agent.config.settings_from_dict`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from edge_agent.commands import Rejected
from edge_agent.config import REMOTE_FILE, EdgeSettings, with_remote
from edge_agent.errors import ConfigError
from protocols.errors import MalformedMessage
from protocols.messages import Command, RejectReason, Scalar
from protocols.remote_config import decode

log = logging.getLogger(__name__)


def write_remote(state_dir: Path, version: int, document: dict[str, dict[str, object]]) -> None:
    """Keep `document` as the configuration in force (atomically, durably)."""
    path = state_dir / REMOTE_FILE
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps({"version": version, "config": document}, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Configurator:
    """Runs ``configure`` commands against the settings the agent runs with."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings

    async def __call__(self, command: Command) -> dict[str, Scalar]:
        """Check and keep the configuration; the observed state to ack with."""
        current = self.settings.config_version
        version = command.args.get("version")
        if type(version) is not int or version <= current:
            raise Rejected(
                RejectReason.INVALID_ARGS,
                {"error": f"version {version!r} is not newer than {current}"},
            )
        try:
            document = decode(command.args.get("config"))
            candidate = with_remote(self.settings, version, document)
        except (MalformedMessage, ConfigError) as exc:
            log.warning("%s: configuration v%d refused: %s", command.dev, version, exc)
            raise Rejected(
                RejectReason.INVALID_ARGS, {"error": str(exc)[:200], "config_version": current}
            ) from None
        write_remote(self.settings.device.state_dir, version, document)
        self.settings = candidate
        log.info("%s: configuration v%d kept; applying it", command.dev, version)
        return {"config_version": version}
