"""Mosquitto files for boilertwin's broker: password hashes, and the shipped config rendered.

`deploy/mosquitto/mosquitto.conf` and `acl` are the production configuration. Tests and
`make demo` run a broker from the same files, rendered by `render_config` for a private folder:
every general option (authentication, ACL, persistence, limits) is kept as shipped; only file
paths, logging and listeners are rewritten. Passwords are hashed in Mosquitto's own ``$7$``
format, byte-compatible with ``mosquitto_passwd``, so no external tool is needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

CLOUD_USER = "cloud"
"""Username of the cloud account in the shipped ACL file."""

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


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """A `mosquitto_passwd`-compatible hash: `$7$<iterations>$<salt b64>$<pbkdf2-sha512 b64>`."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def render_acl(text: str, *, cloud_user: str = CLOUD_USER) -> str:
    """The shipped ACL file with the cloud account renamed to `cloud_user`."""
    lines = [
        f"user {cloud_user}" if line.strip() == f"user {CLOUD_USER}" else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def render_config(
    text: str,
    *,
    directory: Path,
    host: str,
    port: int,
    tls_port: int | None = None,
    tls_files: Mapping[str, Path] | None = None,
    anonymous: bool = False,
) -> str:
    """The shipped `mosquitto.conf` rewritten for a broker living in `directory`.

    General options are kept in order; paths point into `directory`; logging goes to stderr
    at full detail; listeners become a plain one on `host:port` and, if `tls_port` is given,
    the shipped TLS listener (its own options kept) on `host:tls_port` with `tls_files`
    (keys `cafile`, `certfile`, `keyfile`) instead of the production certificate paths.
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
        if key == "password_file":
            if not anonymous:
                general.append(f"password_file {directory / 'passwd'}")
        elif key == "acl_file":
            if not anonymous:
                general.append(f"acl_file {directory / 'acl'}")
        elif key == "allow_anonymous":
            general.append(f"allow_anonymous {'true' if anonymous else 'false'}")
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
