"""The agent's settings: one frozen `EdgeSettings`, loaded from ``edge.toml``.

Every section is a frozen dataclass; `load_settings` builds them from the TOML tables and
rejects anything it does not understand with a `ConfigError` that names the key
(``modbus.baudrate: must be one of 1200, ..., got 12345``). `deploy/edge.toml` documents every
key; the defaults here are what a gateway on a cellular link should run with.
"""

from __future__ import annotations

import json
import logging
import math
import tomllib
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from edge_agent.errors import ConfigError, ConfigErrors
from protocols.errors import ProtocolError
from protocols.reference import REFERENCE_MAP
from protocols.registers import RegisterMap
from protocols.remote_config import merge
from protocols.topics import is_device_id

log = logging.getLogger(__name__)

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
REFERENCE_PROFILE = "reference"


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Who this gateway is and where it keeps its state."""

    id: str = ""
    """Device id: MQTT client id and user name, COSE ``kid``, topic level. Leave it unset on
    a gateway that joins with a claim token (``[provisioning]``): the id it was registered
    under is then read from ``identity.json`` in `state_dir`."""
    key_file: Path = Path("/var/lib/boilertwin/device.key")
    """Ed25519 private key (PEM, mode 0600) made by ``boilertwin edge keygen``."""
    state_dir: Path = Path("/var/lib/boilertwin")
    """Holds the outbox database (messages, epoch, seq, command ledger, reset log)."""


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """How to reach the boiler controller."""

    transport: Literal["rtu", "tcp"] = "rtu"
    port: str = "/dev/ttyUSB0"
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = 1
    host: str = "127.0.0.1"
    tcp_port: int = 502
    unit: int = 1
    timeout_s: float = 1.0
    """Per attempt."""
    retries: int = 2
    """Extra attempts after a timeout (a Modbus exception reply is not retried)."""
    profile: str = REFERENCE_PROFILE
    """``reference`` (the built-in map) or a path to a register-map JSON file."""


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """What is sent when: the cellular data budget and the power-cut exposure."""

    poll_interval_s: float = 10.0
    batch_interval_s: float = 60.0
    """Readings wait in memory this long, then are sealed into one ``data`` message and
    committed in one transaction: the group-commit interval, so also the most a power cut
    can lose. Alarms, events and acks are committed at once."""
    heartbeat_s: float = 3600.0
    """Every point is re-sent at least this often, changed or not."""
    deadband: Mapping[str, float] = field(default_factory=dict)
    """Per point; a numeric value is reported when it moved at least this far. Points not
    named get a default from their unit (0.5 degC, 0.05 bar, 5 %, 100 rpm, ...)."""
    comms_lost_after: int = 1
    """Consecutive poll cycles without any answer before ``comms_lost`` is raised."""


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """The durable queue between the poller and the uplink."""

    max_bytes: int = 64 * 1024 * 1024
    """Byte cap on stored envelopes; beyond it the oldest telemetry is evicted (with a
    ``gap`` event)."""
    checkpoint_bytes: int = 1024 * 1024
    """WAL size at which it is folded back into the database."""
    resend_after_s: float = 120.0
    """Once the cloud confirms storage: a published message its watermark has not reached
    this long after the PUBACK is sent again (`edge_agent.delivery`)."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The uplink to the cloud's broker."""

    host: str = "127.0.0.1"
    port: int = 8883
    tls: bool = True
    ca_file: Path | None = None
    """CA bundle that signs the broker's certificate; system CAs when unset."""
    cert_file: Path | None = None
    """Client certificate, if the broker authenticates devices by certificate."""
    client_key_file: Path | None = None
    username: str | None = None
    """Defaults to the device id (the broker's ACL is keyed on it)."""
    password_file: Path | None = None
    """File holding the broker password; never logged."""
    keepalive_s: int = 240
    """Below the shortest NAT idle timeout on the cellular path."""
    session_expiry_s: int = 7 * 86_400
    """How long the broker keeps the session (and queued commands) while offline."""
    inflight: int = 16
    """Unacknowledged QoS 1 publishes at once."""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    connect_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Commands from the cloud and their interlocks."""

    cloud_keys_dir: Path = Path("/etc/boilertwin/cloud-keys")
    """Pinned cloud public keys, one PEM file per key id: ``<kid>.pem``."""
    max_resets: int = 5
    reset_window_s: float = 900.0
    """At most `max_resets` lockout resets in any window this long (EN 298 / EN 14459)."""
    readback_s: float = 10.0
    """How long to watch the boiler leave lockout after writing the reset."""


@dataclass(frozen=True, slots=True)
class ClockSettings:
    """When the wall clock is trusted (to judge command expiry, and flagged as ``sync``)."""

    trust: Literal["ntp", "system"] = "ntp"
    """``ntp``: only while the kernel reports the clock synchronised (a Pi has no RTC);
    ``system``: whenever the clock is past the agent's build date."""


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Gateway and modem health reports."""

    interval_s: float = 900.0
    modem_port: str | None = None
    """Serial port of the modem's AT interface; no modem figures when unset."""
    modem_baudrate: int = 115200


@dataclass(frozen=True, slots=True)
class ProvisioningSettings:
    """Zero-touch joining: the cloud to claim this gateway from, and the claim token."""

    cloud_url: str = ""
    """The cloud API's base URL (``https://twin.example.com``); empty: no claiming."""
    claim_token_file: Path | None = None
    """File holding the claim token (printed on the boiler, or issued for a batch)."""
    ca_file: Path | None = None
    """CA bundle for the cloud's HTTPS certificate; system CAs when unset."""
    location: str | None = None
    """``"lat,lon"`` of the installation, if the installer gives it."""
    address: str | None = None
    """The installation address, if the installer gives it."""
    timeout_s: float = 30.0
    """Per request."""
    retry_max_s: float = 600.0
    """Longest wait between attempts while the cloud cannot be reached (doubling from 2 s)."""


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """Signed agent updates (`edge_agent.updater`); unset `releases_dir`: none accepted."""

    releases_dir: Path | None = None
    """Where releases are installed, one virtual environment per version (writable by the
    agent, e.g. /var/lib/boilertwin/releases)."""
    current_link: Path | None = None
    """The symlink systemd starts the agent through (e.g. /var/lib/boilertwin/current)."""
    trial_s: float = 300.0
    """A new release must poll the boiler and publish within this long, or it is rolled back."""
    max_starts: int = 3
    """Starts of a new release on trial before the guard rolls it back (crash loops)."""
    install_timeout_s: float = 600.0
    max_bytes: int = 200 * 1024 * 1024
    """Largest artifact accepted."""


IDENTITY_FILE = "identity.json"
"""In `DeviceSettings.state_dir`: what a claim gave this gateway (`edge_agent.provision`)."""


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """Everything one agent process is started with."""

    device: DeviceSettings
    modbus: ModbusSettings = field(default_factory=ModbusSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    provisioning: ProvisioningSettings = field(default_factory=ProvisioningSettings)
    update: UpdateSettings = field(default_factory=UpdateSettings)
    config_version: int = field(default=0, metadata={"internal": True})
    """The remote configuration in force (0: edge.toml alone); not a TOML key."""
    source: Mapping[str, Any] = field(default_factory=dict, metadata={"internal": True})
    """The parsed edge.toml these settings came from (remote configurations merge into it)."""
    source_dir: Path = field(default=Path(), metadata={"internal": True})
    """The folder relative paths in it are taken from."""

    @property
    def provisioned(self) -> bool:
        """Whether this gateway has an identity (set in edge.toml, or from a claim)."""
        return bool(self.device.id)

    @property
    def can_claim(self) -> bool:
        """Whether an unprovisioned gateway knows where and with what to claim."""
        p = self.provisioning
        return bool(p.cloud_url) and p.claim_token_file is not None

    @property
    def identity_path(self) -> Path:
        """Where a claim's outcome is kept."""
        return self.device.state_dir / IDENTITY_FILE

    @property
    def outbox_path(self) -> Path:
        """The SQLite outbox database."""
        return self.device.state_dir / "outbox.db"

    @property
    def mqtt_username(self) -> str:
        """The broker user name (the device id unless set)."""
        return self.mqtt.username or self.device.id


# -- loading -----------------------------------------------------------------------------------

_T = TypeVar("_T")


def load_settings(path: Path | str) -> EdgeSettings:
    """Read and validate an ``edge.toml``; relative paths in it are taken from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return settings_from_dict(data, base=path.parent)


def settings_from_dict(data: Mapping[str, Any], base: Path = Path()) -> EdgeSettings:
    """Build settings from parsed TOML (a dict of tables), with the remote configuration
    the cloud last sent (`edge_agent.remote_config`) merged in if it still validates."""
    settings = _settings(data, base)
    remote = read_remote(settings.device.state_dir)
    if remote is None:
        return settings
    version, document = remote
    try:
        return with_remote(settings, version, document)
    except ConfigError as exc:
        log.error(
            "remote configuration v%d does not validate with this edge.toml (%s): "
            "running on edge.toml alone",
            version,
            exc,
        )
        return settings


def with_remote(
    settings: EdgeSettings, version: int, document: Mapping[str, Mapping[str, Any]]
) -> EdgeSettings:
    """`settings` with a remote configuration merged into the edge.toml they came from, and
    validated as a whole by the same rules; `ConfigError` if it does not validate."""
    merged = merge(settings.source, document)
    return replace(_settings(merged, settings.source_dir), config_version=version)


def read_remote(state_dir: Path) -> tuple[int, dict[str, dict[str, Any]]] | None:
    """The remote configuration kept in `state_dir` (version, document), if any."""
    path = state_dir / REMOTE_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return int(kept["version"]), kept["config"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("%s is unreadable (%s): running on edge.toml alone", path, exc)
        return None


REMOTE_FILE = "remote-config.json"
"""In `DeviceSettings.state_dir`: the last remote configuration that validated."""


def _settings(data: Mapping[str, Any], base: Path) -> EdgeSettings:
    settings = _build(EdgeSettings, data, "", base)
    profile = settings.modbus.profile
    if profile != REFERENCE_PROFILE:  # a str, so `_value` did not resolve it like a Path
        modbus = replace(settings.modbus, profile=str(base / Path(profile).expanduser()))
        settings = replace(settings, modbus=modbus)
    if not settings.device.id:
        settings = with_identity(settings)
    _check(settings)
    return replace(settings, source=data, source_dir=base)


def with_identity(settings: EdgeSettings) -> EdgeSettings:
    """`settings` with the identity a claim gave (device id, broker login, pinned cloud
    keys), if there is one; unchanged otherwise (the gateway still has to claim)."""
    path = settings.identity_path
    try:
        identity = json.loads(path.read_text(encoding="utf-8"))
        device_id = identity["device_id"]
        broker = identity["broker"]
        host, port, tls = broker["host"], broker["port"], broker["tls"]
    except FileNotFoundError:
        return settings
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(path), f"unreadable identity ({exc}); claim again") from exc
    if not isinstance(device_id, str) or not is_device_id(device_id):
        raise ConfigError(str(path), f"device_id {device_id!r} is not a device id")
    if not isinstance(host, str) or type(port) is not int or not isinstance(tls, bool):
        raise ConfigError(str(path), "broker must have host (text), port (number), tls (bool)")
    state = settings.device.state_dir
    mqtt = replace(
        settings.mqtt,
        host=host,
        port=port,
        tls=tls,
        username=None,
        password_file=state / IDENTITY_PASSWORD,
    )
    if not tls:
        mqtt = replace(mqtt, ca_file=None, cert_file=None, client_key_file=None)
    return replace(
        settings,
        device=replace(settings.device, id=device_id),
        mqtt=mqtt,
        commands=replace(settings.commands, cloud_keys_dir=state / IDENTITY_KEYS_DIR),
    )


IDENTITY_PASSWORD = "mqtt.password"
IDENTITY_KEYS_DIR = "cloud-keys"


def _build(cls: type[_T], table: object, prefix: str, base: Path) -> _T:
    """`cls` from a TOML table; every problem in it (and in the tables within) at once, as
    `ConfigErrors`."""
    if not isinstance(table, Mapping):
        raise ConfigError(prefix.rstrip(".") or "(top level)", "must be a table")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    problems: list[ConfigError] = []
    for key in table:
        if key not in known:
            problems.append(
                ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(known)})")
            )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        key = f"{prefix}{name}"
        if name in table:
            try:
                values[name] = _value(hints[name], table[name], key, base)
            except ConfigErrors as found:
                problems.extend(found.problems)
            except ConfigError as found:
                problems.append(found)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            problems.append(ConfigError(key, "is required"))
    if problems:
        raise ConfigErrors(problems)
    return cls(**values)


def _value(hint: Any, raw: object, key: str, base: Path) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if raw == "" and len(options) < len(get_args(hint)):
            return None  # an empty string unsets an optional value
        return _value(options[0], raw, key, base)
    if origin is Literal:
        if raw not in get_args(hint):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise ConfigError(key, f"must be one of {choices}, got {raw!r}")
        return raw
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _build(hint, raw, f"{key}.", base)
    if origin is Mapping:
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a table")
        values, problems = {}, []
        for k, v in raw.items():
            try:
                values[str(k)] = _value(float, v, f"{key}.{k}", base)
            except ConfigError as found:
                problems.append(found)
        if problems:
            raise ConfigErrors(problems)
        return values
    if hint is Path:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(key, f"must be a path, got {raw!r}")
        return base / Path(raw).expanduser()
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(key, f"must be true or false, got {raw!r}")
        return raw
    if hint is int:
        if type(raw) is not int:
            raise ConfigError(key, f"must be a whole number, got {raw!r}")
        return raw
    if hint is float:
        if type(raw) not in (int, float) or not math.isfinite(raw):  # type: ignore[arg-type]
            raise ConfigError(key, f"must be a number, got {raw!r}")
        return float(raw)  # type: ignore[arg-type]
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(key, f"must be a string, got {raw!r}")
        return raw
    raise ConfigError(key, f"unsupported setting type {hint!r}")  # a bug in this module


def _check(s: EdgeSettings) -> None:
    """Cross-field and range checks the types cannot express; every failing one at once
    (`ConfigErrors`)."""
    problems: list[ConfigError] = []

    def fail(key: str, reason: str) -> None:
        problems.append(ConfigError(key, reason))

    def positive(key: str, value: float) -> None:
        if not value > 0:
            fail(key, f"must be more than 0, got {value}")

    p = s.provisioning
    if p.cloud_url and not p.cloud_url.startswith(("https://", "http://")):
        fail("provisioning.cloud_url", f"must be an http(s) URL, got {p.cloud_url!r}")
    # An unprovisioned gateway (no device.id) is valid: `edge run` claims its identity, or
    # says how to give it one (`EdgeSettings.can_claim`).
    if s.provisioned and not is_device_id(s.device.id):
        fail("device.id", f"must match [a-z0-9][a-z0-9-]{{2,62}}, got {s.device.id!r}")
    m = s.modbus
    if m.baudrate not in BAUDRATES:
        fail(
            "modbus.baudrate", f"must be one of {', '.join(map(str, BAUDRATES))}, got {m.baudrate}"
        )
    if m.stopbits not in (1, 2):
        fail("modbus.stopbits", f"must be 1 or 2, got {m.stopbits}")
    if not 1 <= m.unit <= 247:
        fail("modbus.unit", f"must be 1..247, got {m.unit}")
    if not 0 < m.tcp_port < 65536:
        fail("modbus.tcp_port", f"must be 1..65535, got {m.tcp_port}")
    positive("modbus.timeout_s", m.timeout_s)
    if not 0 <= m.retries <= 10:
        fail("modbus.retries", f"must be 0..10, got {m.retries}")
    r = s.report
    positive("report.poll_interval_s", r.poll_interval_s)
    if r.batch_interval_s < r.poll_interval_s:
        fail(
            "report.batch_interval_s",
            f"must be at least report.poll_interval_s ({r.poll_interval_s}), "
            f"got {r.batch_interval_s}",
        )
    if r.heartbeat_s < r.batch_interval_s:
        fail("report.heartbeat_s", "must be at least report.batch_interval_s")
    if r.comms_lost_after < 1:
        fail("report.comms_lost_after", f"must be 1 or more, got {r.comms_lost_after}")
    try:
        points = {p.name for p in register_map(s.modbus).readable()}
    except ConfigError as found:
        fail(found.key, found.reason)
        points = set(r.deadband)  # the profile's problem is said; do not add one per band
    for name, band in r.deadband.items():
        if name not in points:
            fail(f"report.deadband.{name}", "not a readable point of the profile")
        if band < 0:
            fail(f"report.deadband.{name}", f"must be 0 or more, got {band}")
    if s.outbox.max_bytes < 1024 * 1024:
        got = human_bytes(s.outbox.max_bytes)
        fail("outbox.max_bytes", f"must be at least 1 MiB (1,048,576 bytes), got {got}")
    positive("outbox.checkpoint_bytes", s.outbox.checkpoint_bytes)
    positive("outbox.resend_after_s", s.outbox.resend_after_s)
    q = s.mqtt
    if not 0 < q.port < 65536:
        fail("mqtt.port", f"must be 1..65535, got {q.port}")
    if not 10 <= q.keepalive_s <= 65535:
        fail("mqtt.keepalive_s", f"must be 10..65535, got {q.keepalive_s}")
    if not 1 <= q.inflight <= 1000:
        fail("mqtt.inflight", f"must be 1..1000, got {q.inflight}")
    if q.session_expiry_s < 0:
        fail("mqtt.session_expiry_s", "must be 0 or more")
    positive("mqtt.reconnect_min_s", q.reconnect_min_s)
    if q.reconnect_max_s < q.reconnect_min_s:
        fail("mqtt.reconnect_max_s", "must be at least mqtt.reconnect_min_s")
    positive("mqtt.connect_timeout_s", q.connect_timeout_s)
    if q.cert_file is not None and q.client_key_file is None:
        fail("mqtt.cert_file", "a client certificate needs mqtt.client_key_file too")
    if q.client_key_file is not None and q.cert_file is None:
        fail("mqtt.client_key_file", "a client key needs mqtt.cert_file too")
    if not q.tls and (q.ca_file or q.cert_file):
        fail("mqtt.tls", "is false, but TLS files are set")
    c = s.commands
    if c.max_resets < 1:
        fail("commands.max_resets", f"must be 1 or more, got {c.max_resets}")
    positive("commands.reset_window_s", c.reset_window_s)
    positive("commands.readback_s", c.readback_s)
    positive("health.interval_s", s.health.interval_s)
    u = s.update
    if (u.releases_dir is None) != (u.current_link is None):
        fail("update.current_link", "set both update.releases_dir and it, or neither")
    positive("update.trial_s", u.trial_s)
    if u.max_starts < 1:
        fail("update.max_starts", f"must be 1 or more, got {u.max_starts}")
    positive("provisioning.timeout_s", s.provisioning.timeout_s)
    positive("provisioning.retry_max_s", s.provisioning.retry_max_s)
    if problems:
        raise ConfigErrors(problems)


def human_bytes(count: int) -> str:
    """``1.5 GiB``, ``512 KiB``, ``900 bytes``: a size as people read it."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{count:,} bytes" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def register_map(modbus: ModbusSettings) -> RegisterMap:
    """The register map named by ``modbus.profile``."""
    if modbus.profile == REFERENCE_PROFILE:
        return REFERENCE_MAP
    path = Path(modbus.profile)
    try:
        return RegisterMap.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError("modbus.profile", f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, ProtocolError) as exc:
        raise ConfigError("modbus.profile", f"{path} is not a valid register map: {exc}") from exc
