"""One frozen settings object per cloud process, from ``cloud.toml`` and command-line overrides."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.errors import ConfigError

DEFAULT_DB_URL = "sqlite:///run/cloud/boilertwin.db"


@dataclass(frozen=True, slots=True)
class CloudSettings:
    """Everything a cloud process (API, ingest, command dispatcher, sweeper) is built from."""

    db_url: str = DEFAULT_DB_URL
    """SQLAlchemy URL: ``sqlite:///path`` (default) or ``postgresql://user@host/db``."""

    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    mqtt_username: str = "cloud"
    mqtt_password_file: Path | None = None
    """File holding the broker password (never logged); None connects without one."""
    mqtt_ca_file: Path | None = None
    """CA for a TLS broker listener; None means plain MQTT (loopback only)."""
    mqtt_client_id: str = field(default_factory=lambda: f"bt-cloud-{socket.gethostname()}")
    """Must be stable across restarts: the broker keeps this session's queued acks. Starts
    with ``bt-cloud-``, a prefix no device id may have (`cloud.dynsec`)."""
    broker_admin_username: str = "broker-admin"
    broker_admin_password_file: Path | None = None
    """The broker's dynamic-security admin login, for `cloud devices add --broker-admin` and
    the like (device logins on a running broker); None: not available."""
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    device_broker_host: str | None = None
    """The broker address gateways are told when they claim (`cloud.provisioning`); None:
    `broker_host` (right when gateways reach the broker where the cloud does)."""
    device_broker_port: int | None = None
    """Port gateways are told; None: `broker_port`."""
    device_broker_tls: bool | None = None
    """Whether gateways use MQTT over TLS; None: as the cloud does (`mqtt_ca_file` set)."""
    ingest_group: str = "ingest"
    """Shared-subscription group. Make it unguessable on a shared broker (see deploy README)."""
    ingest_batch_max: int = 200
    """Most messages stored (and acknowledged) per transaction: a batch is what arrived while
    the previous one was being stored, so light load costs no latency. The broker may have
    twice this many unacknowledged messages in flight to a worker (MQTT 5 receive maximum)."""
    ingest_batch_window_s: float = 0.0
    """Wait up to this long after a batch's first message for more (0: never wait)."""
    samples_partition_days: int = 7
    """PostgreSQL: days of readings per partition of ``samples`` (`cloud.partitions`)."""
    samples_retention_days: float | None = None
    """Raw readings older than this are dropped (whole partitions on PostgreSQL); None keeps
    them for ever. Hourly rollups are always kept."""
    rollups_retention_days: float | None = None
    """Per-minute rollups older than this are deleted; None keeps them for ever."""
    broker_stats: bool = True
    """``cloud serve`` follows the broker's ``$SYS/broker`` figures and exposes them as
    ``boilertwin_broker{figure}`` (Mosquitto; turn off for a broker that has no ``$SYS``)."""
    ingest_metrics_port: int | None = None
    """``cloud ingest``: serve Prometheus metrics on `api_host` at this port (worker i of
    ``--workers N`` at port + i); None: none. ``cloud serve`` has them at ``/metrics``."""

    keys_dir: Path = Path("run/cloud/keys")
    """Cloud command keys: ``<kid>.key`` (private, 0600) and ``<kid>.pem`` (public)."""
    command_kid: str | None = None
    """Key id commands are signed with; None picks the newest key in `keys_dir`."""

    command_ttl_s: float = 300.0
    """A command not delivered within this becomes ``expired`` (its signed ``exp``)."""
    config_command_ttl_s: float = 86_400.0
    """The lifetime of the commands the cloud issues on its own (``configure``, ``update``,
    ``rollback``, key rotation). One not delivered within it expires; the device gets the
    same configuration or update in a new command once it is online again
    (`cloud.device_config`, `cloud.rollouts`)."""
    result_timeout_s: float = 120.0
    """A delivered command with no result this long after ``exp`` becomes ``timed_out``."""
    restart_limit: int = 5
    restart_window_s: float = 900.0
    """At most `restart_limit` restarts per boiler in any `restart_window_s` (EN 298)."""

    stale_after_s: float = 1800.0
    """An 'online' boiler not heard from this long is shown ``stale`` (health: every 900 s)."""
    gap_grace_s: float = 60.0
    max_clock_ahead_s: float = 300.0
    """A message or reading stamped further ahead of the cloud's clock than this (or sent
    with ``sync`` false) is ordered by its receipt time (`cloud.timing`)."""
    """A missing seq still missing this long after a later one arrived is an unexplained gap."""
    sweep_interval_s: float = 1.0
    housekeeping_interval_s: float = 5.0
    """How often ingest counters are flushed and unexplained gaps looked for."""
    watermark_interval_s: float = 1800.0
    """How often at most an active device is told what the cloud has stored (besides once
    after each of its connections): its outbox holds about this much published data. 1800 s
    is 48 watermarks a day, about 3% of a boiler's bytes."""
    watermark_check_s: float = 5.0
    """How often the cloud looks for devices due a watermark."""
    checkpoint_interval_s: float = 3600.0
    """How often the head of every thread chain that moved is signed (`cloud.evidence`)."""
    evidence_keep_days: int = 400
    """How long the devices' signed envelopes are kept for proof bundles (the readings
    themselves are kept regardless)."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_url: str | None = None
    """How gateways reach this API (update artifacts are fetched from it); None:
    ``http://<api_host>:<api_port>``."""
    artifacts_dir: Path = Path("run/cloud/artifacts")
    """Agent release artifacts (wheels), named by their SHA-256 (`cloud.rollouts`)."""
    token_ttl_s: float = 12 * 3600.0
    login_account_free_failures: int = 5
    login_account_max_delay_s: float = 60.0
    """Per login name: free failed logins, then a delay doubling from 1 s up to this."""
    login_address_free_failures: int = 20
    login_address_max_delay_s: float = 900.0
    """Per client address: free failed logins, then a delay doubling from 1 s up to this."""
    login_forget_after_s: float = 900.0
    """A count of failed logins is forgotten after this long without one (`cloud.throttle`)."""
    metrics_token_file: Path | None = None
    """File holding a secret that ``/metrics`` then requires, as a bearer token or as the
    password of HTTP basic auth (any user name); None leaves ``/metrics`` open."""
    forwarded_allow_ips: str = ""
    """Proxies trusted to say the client's address (``X-Forwarded-For``), comma-separated, as
    uvicorn takes them; empty trusts none, so the address is the connecting peer's."""
    portal_live_poll_s: float = 1.0
    """SQLite: how often the portal's change feed looks for changes to what open live streams
    (SSE) show, in one query for all of them (PostgreSQL is told: LISTEN/NOTIFY)."""
    portal_live_recheck_s: float = 15.0
    """A live stream also looks this often when the change feed did not wake it (a twin going
    stale with time alone, a viewer losing access)."""
    portal_live_max_s: float = 600.0
    """A live stream ends after this long; the browser reconnects at once (bounds each one)."""
    portal_secure_cookie: bool = True
    """Mark the portal's session cookie ``Secure``: browsers send it over HTTPS only. Turn it
    off only for a portal served over plain HTTP on loopback (the demo)."""
    portal_timezone: str = "Europe/London"
    """IANA zone the portal shows times in."""

    # --- Predictive maintenance (docs/predictive-maintenance.md) ---
    predict: bool = True
    """``cloud serve`` runs the detectors over every closed day (`cloud.predict`)."""
    predict_rules_file: Path | None = None
    """Detector rules (TOML) replacing the packaged ``cloud/predict/rules.toml``."""
    predict_interval_s: float = 300.0
    """How often the predictor looks for a day that has closed."""
    predict_grace_s: float = 3600.0
    """A UTC day is analysed this long after it ends (readings later than that are left out
    of its features: a gateway offline for longer brings them to the next days' trends)."""
    predict_keep_days: int = 400
    """How long the daily features (``boiler_days``) are kept; never less than the detectors
    look back (45 days with the packaged rules, plus a week)."""
    predict_day_s: float = 86_400.0
    """The length of the predictor's "day". Keep 86,400 in service; the end-to-end test (and
    a demo) shorten it, with a simulator that lives a day in as many seconds."""

    # --- Service platform (README "Service platform"; the paper's eqs. 2-17) ---
    service_rules_file: Path | None = None
    """Service-analysis rules (TOML) replacing the packaged ``cloud/service/rules.toml``."""
    q_ar: float = 0.5
    q_cs: float = 0.2
    q_sq: float = 0.3
    """Weights of eq. 9: W = q_ar*AR + q_cs*CS* + q_sq*SQ* (the paper's case study)."""
    price_tolerance: float = 0.3
    """Constraint 2: |average price - estimate| <= this fraction of the estimate."""
    radius_km: float = 30.0
    """Constraint 3: home location within this great-circle distance of the boiler."""
    invite_fraction: float = 0.1
    invite_min: int = 1
    invite_max: int = 10
    """Invite the top `invite_fraction` of the eligible pool by W, at least `invite_min`, at
    most `invite_max` (the paper's phi)."""
    newcomer_slots: int = 1
    """Cold start: extra invitations for eligible engineers with fewer than
    `newcomer_invitations` closed invitations; 0 is the paper's mode exactly."""
    newcomer_invitations: int = 3
    response_window_s: float = 4 * 3600.0
    """Invited engineers answer within this; no answer counts as not accepted."""
    shortlist_size: int = 3
    road_factor: float = 1.3
    """Road distance = great-circle distance x this (travel time and CO2 estimates)."""
    car_speed_kmh: float = 40.0
    car_co2_kg_per_km: float = 0.17
    """Average car, kg CO2e per km (UK DEFRA 2023 conversion factors, rounded)."""
    engineer_restart_window_s: float = 4 * 3600.0
    """The contracted engineer may restart for this long after reporting completion."""
    verify_normal_s: float = 1800.0
    """A completed job is `verified` after the boiler runs normally this long."""
    verify_timeout_s: float = 7 * 24 * 3600.0
    """A completed job whose boiler never runs normally this long is `failed_verification`."""
    evaluation_ttl_s: float = 30 * 24 * 3600.0
    reminder_lead_days: int = 14
    """Annual-check reminder this many days before the installation anniversary."""

    def replace(self, **changes: Any) -> CloudSettings:
        """A copy with `changes` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def metrics_token(self) -> str | None:
        """The secret ``/metrics`` requires, read from its file (None: no authentication)."""
        token = _secret("metrics_token_file", self.metrics_token_file)
        if token is not None and len(token) < 16:
            raise ConfigError("metrics_token_file", "the token must be at least 16 characters")
        return token

    def broker_admin_password(self) -> str | None:
        """The broker admin's password, read from its file."""
        return _secret("broker_admin_password_file", self.broker_admin_password_file)

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        """TLS trusting `mqtt_ca_file` only, or None for plain MQTT (loopback only)."""
        if self.mqtt_ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.mqtt_ca_file))

    def mqtt_password(self) -> str | None:
        """The broker password, read from its file."""
        return _secret("mqtt_password_file", self.mqtt_password_file)


def _secret(key: str, path: Path | None) -> str | None:
    """The secret in the file a setting names (None when the setting is unset)."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read: {exc.strerror}") from exc


_PATHS = {
    "mqtt_password_file",
    "broker_admin_password_file",
    "mqtt_ca_file",
    "keys_dir",
    "artifacts_dir",
    "service_rules_file",
    "predict_rules_file",
    "metrics_token_file",
}


def load_settings(path: Path | None = None, **overrides: Any) -> CloudSettings:
    """Settings from a TOML file (flat keys named as the fields), then `overrides`.

    ``BOILERTWIN_DB`` in the environment overrides the file's ``db_url``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    known = {f.name: f for f in dataclasses.fields(CloudSettings)}
    for key in values:
        if key not in known:
            raise ConfigError(key, "unknown setting")
    if os.environ.get("BOILERTWIN_DB"):
        values["db_url"] = os.environ["BOILERTWIN_DB"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in _PATHS & values.keys():
        values[key] = Path(values[key]) if values[key] is not None else None
    settings = CloudSettings(**values)
    _check(settings)
    return settings


def _check(s: CloudSettings) -> None:
    try:
        ZoneInfo(s.portal_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("portal_timezone", f"unknown time zone {s.portal_timezone!r}") from None
    if not s.db_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("db_url", f"must be sqlite:///... or postgresql://..., got {s.db_url!r}")
    if not 0 < s.broker_port < 65536:
        raise ConfigError("broker_port", f"must be 1-65535, got {s.broker_port}")
    for name in (
        "command_ttl_s",
        "config_command_ttl_s",
        "result_timeout_s",
        "restart_window_s",
        "stale_after_s",
        "max_clock_ahead_s",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(name, "must be positive")
    if s.restart_limit < 1:
        raise ConfigError("restart_limit", "must be at least 1")
    if not s.mqtt_client_id.startswith("bt-cloud-") or len(s.mqtt_client_id) > 64:
        raise ConfigError(
            "mqtt_client_id",
            f"must start with bt-cloud- (no device may) and be at most 64 characters, "
            f"got {s.mqtt_client_id!r}",
        )
    if not 1 <= s.ingest_batch_max <= 10_000:
        raise ConfigError("ingest_batch_max", "must be between 1 and 10000")
    if not 0 <= s.ingest_batch_window_s <= 1:
        raise ConfigError("ingest_batch_window_s", "must be between 0 and 1 second")
    if not s.ingest_group or "/" in s.ingest_group or "+" in s.ingest_group:
        raise ConfigError("ingest_group", "must be a non-empty name without / or wildcards")
    positive = (
        "radius_km",
        "response_window_s",
        "car_speed_kmh",
        "engineer_restart_window_s",
        "verify_normal_s",
        "verify_timeout_s",
        "evaluation_ttl_s",
        "road_factor",
        "portal_live_poll_s",
        "portal_live_max_s",
        "portal_live_recheck_s",
        "sweep_interval_s",
        "housekeeping_interval_s",
        "watermark_interval_s",
        "watermark_check_s",
        "predict_interval_s",
        "checkpoint_interval_s",
    )
    if s.predict_grace_s < 0:
        raise ConfigError("predict_grace_s", "must not be negative")
    evidence = s.evidence_keep_days
    if isinstance(evidence, bool) or not isinstance(evidence, int) or evidence < 1:
        raise ConfigError("evidence_keep_days", "must be a whole number of days >= 1")
    keep = s.predict_keep_days
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError("predict_keep_days", "must be a whole number of days >= 1")
    if not 1.0 <= s.predict_day_s <= 86_400.0:
        raise ConfigError("predict_day_s", "must be 1 to 86,400 seconds")
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(name, "must be positive")
    days = s.samples_partition_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
        raise ConfigError("samples_partition_days", "must be a whole number of days, 1 to 366")
    for name in ("samples_retention_days", "rollups_retention_days"):
        kept = getattr(s, name)
        if kept is None:
            continue
        if isinstance(kept, bool) or not isinstance(kept, int | float) or kept < 1:
            raise ConfigError(name, "must be at least 1 day (or left out: keep for ever)")
    for name in ("q_ar", "q_cs", "q_sq", "price_tolerance", "car_co2_kg_per_km"):
        if getattr(s, name) < 0:
            raise ConfigError(name, "must not be negative")
    if abs(s.q_ar + s.q_cs + s.q_sq - 1.0) > 1e-9:
        raise ConfigError("q_ar", "the weights q_ar + q_cs + q_sq must add up to 1")
    if not 0 < s.invite_fraction <= 1:
        raise ConfigError("invite_fraction", "must be in (0, 1]")
    if not 1 <= s.invite_min <= s.invite_max:
        raise ConfigError("invite_min", "need 1 <= invite_min <= invite_max")
    for name in ("newcomer_slots", "newcomer_invitations", "reminder_lead_days"):
        if getattr(s, name) < 0:
            raise ConfigError(name, "must not be negative")
    for name in ("login_account_free_failures", "login_address_free_failures"):
        if getattr(s, name) < 1:
            raise ConfigError(name, "must be at least 1")
    for name in ("login_account_max_delay_s", "login_address_max_delay_s", "login_forget_after_s"):
        if getattr(s, name) < 1:
            raise ConfigError(name, "must be at least 1 second")
    if s.shortlist_size < 1:
        raise ConfigError("shortlist_size", "must be at least 1")
