"""Mosquitto for boilertwin's broker: the shipped config rendered for another place.

`deploy/mosquitto/mosquitto.conf` is the production configuration. Tests and `make demo` run a
broker from the same file, rendered by `render_config` for a private folder: every general
option (authentication through the dynamic-security plugin, persistence, limits) is kept as
shipped; only file paths, logging and listeners are rewritten, and the plugin is looked up
where this machine's Mosquitto package put it. Accounts live in the plugin's file
(`cloud.dynsec`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

CLOUD_USER = "cloud"
"""Username of the cloud account."""
ADMIN_USER = "broker-admin"
"""Username of the dynamic-security admin account (the control topic, nothing else)."""
DYNSEC_FILE = "dynamic-security.json"
"""The plugin's file name inside a rendered broker's folder."""
PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
"""Where Mosquitto packages install the plugin (Debian: /usr/lib/<arch triplet>/)."""


def find_dynsec_plugin() -> Path | None:
    """The dynamic-security plugin of this machine's Mosquitto, or None."""
    for pattern in PLUGIN_GLOBS:
        for found in sorted(glob.glob(pattern)):
            return Path(found)
    return None


# Options whose value is a path on the production host or that only make sense there.
DROPPED_OPTIONS = {"pid_file", "log_dest", "log_type", "include_dir", "user"}
# Options that belong to the listener defined above them.
LISTENER_OPTIONS = {
    "listener",
    "protocol",
    "cafile",
    "capath",
    "certfile",
    "keyfile",
    "crlfile",
    "dhparamfile",
    "tls_version",
    "ciphers",
    "ciphers_tls1.3",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "socket_domain",
    "bind_interface",
    "max_connections",
    "mount_point",
    "use_username_as_clientid",
    "http_dir",
    "psk_hint",
}
TLS_FILE_OPTIONS = {"cafile", "capath", "certfile", "keyfile", "crlfile", "dhparamfile"}


def render_config(
    text: str,
    *,
    directory: Path,
    host: str,
    port: int,
    tls_port: int | None = None,
    tls_files: Mapping[str, Path] | None = None,
    plugin: Path | None = None,
) -> str:
    """The shipped `mosquitto.conf` rewritten for a broker living in `directory`.

    General options are kept in order; paths point into `directory` (the dynamic-security
    file is `DYNSEC_FILE` there); the plugin is `plugin` or this machine's
    (`find_dynsec_plugin`); logging goes to stderr at full detail; listeners become a plain
    one on `host:port` and, if `tls_port` is given, the shipped TLS listener (its own
    options kept) on `host:tls_port` with `tls_files` (keys `cafile`, `certfile`,
    `keyfile`) instead of the production certificate paths.
    """
    general: list[str] = []
    tls_options: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in DROPPED_OPTIONS:
            continue
        if key in LISTENER_OPTIONS:
            if key not in TLS_FILE_OPTIONS and key != "listener":
                tls_options.append(line)
            continue
        if key == "plugin" and value.endswith(PLUGIN_NAME):
            found = plugin or find_dynsec_plugin()
            if found is None:
                raise FileNotFoundError(f"Mosquitto's {PLUGIN_NAME} is not installed")
            general.append(f"plugin {found}")
        elif key == "plugin_opt_config_file":
            general.append(f"plugin_opt_config_file {directory / DYNSEC_FILE}")
        elif key == "persistence_location":
            general.append(f"persistence_location {directory}/")
        else:
            general.append(f"{key} {value}".strip())
    # Only root can change user; run as whoever runs the tests.
    if os.geteuid() == 0:
        general.append("user root")
    general += ["log_dest stderr", "log_type all", "log_timestamp_format %H:%M:%S"]
    # Plain listener for tests only: loopback, same security (options above are global).
    general += [f"listener {port} {host}", "protocol mqtt"]
    if tls_port is not None:
        assert tls_files is not None, "a TLS listener needs tls_files"
        general.append(f"listener {tls_port} {host}")
        general += [f"{name} {tls_files[name]}" for name in ("cafile", "certfile", "keyfile")]
        general += tls_options
    return "\n".join(general) + "\n"
