"""Tables of the gateway lifecycle: claim tokens (`cloud.provisioning`), remote
configuration (`cloud.device_config`), releases and rollouts (`cloud.rollouts`). Kept apart
from `cloud.models` only for size; same `Base`, same metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId


class Claim(Base):
    """A claim token a new gateway joins the fleet with (`cloud.provisioning`). Only the
    token's SHA-256 is stored; the token itself is shown once, when it is made."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    batch: Mapped[str] = mapped_column(String(100))
    """What the tokens were issued for (a production batch, an installer's week)."""
    model: Mapped[str | None] = mapped_column(String(100))
    """Only boilers of this model (as their identity registers say) may use it; None: any."""
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    """The owner a gateway claimed with it is bound to (an installer's customer)."""
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    """The tenant it is bound to (a landlord's installation in a let home)."""
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))


class ConfigLayer(Base):
    """Remote settings for the whole fleet (``fleet``/``*``), one model, or one device
    (`cloud.device_config`); a device's configuration merges them in that order."""

    __tablename__ = "config_layers"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[str] = mapped_column(String(100), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(64))


class DeviceConfig(Base):
    """A device's desired configuration: the merged layers, versioned per device. What the
    device reports is read from its ``configure`` commands' acks."""

    __tablename__ = "device_configs"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    command_id: Mapped[str | None] = mapped_column(String(36))
    """The ``configure`` command last issued for this version."""


class Release(Base):
    """An agent release the cloud can roll out: its artifact (a wheel) and what it needs."""

    __tablename__ = "releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(200))
    min_agent: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))


class Rollout(Base):
    """A staged rollout of a release (`cloud.rollouts`): waves, and when to halt."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(ForeignKey("releases.version"))
    model: Mapped[str | None] = mapped_column(String(100))
    """Only boilers of this model (None: the whole fleet)."""
    waves: Mapped[list[Any]] = mapped_column(default=list)
    """Cumulative percentages of the eligible fleet, e.g. [1, 10, 50, 100]."""
    wave: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    """running | halted | completed."""
    max_failure_rate: Mapped[float] = mapped_column(Float)
    min_wave_s: Mapped[float] = mapped_column(Float)
    wave_started_ms: Mapped[int] = mapped_column(BigInteger)
    halted_reason: Mapped[str | None] = mapped_column(Text)
    forgiven_failed: Mapped[int] = mapped_column(Integer, default=0)
    forgiven_finished: Mapped[int] = mapped_column(Integer, default=0)
    """Failed and finished gateways at the last resume: the failure rate is judged on what
    finishes after it."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class RolloutTarget(Base):
    """One gateway in a rollout: its wave, its command and how it went."""

    __tablename__ = "rollout_targets"

    rollout_id: Mapped[int] = mapped_column(BigId, ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    from_version: Mapped[str | None] = mapped_column(String(64))
    command_id: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16))
    """sent | succeeded | failed | rolled_back (after a halt)."""
    reason: Mapped[str | None] = mapped_column(String(32))
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Tries at the update: one more for each failed download that was sent again
    (`cloud.rollouts.DOWNLOAD_ATTEMPTS`); re-sends after an expiry do not count."""
