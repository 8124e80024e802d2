"""The product twin read model: connectivity, live values, alarms, delivery, as JSON.

Everything here reads (`cloud.twin.update` writes). A twin's `Twin.version` is its ETag: every
write bumps it, so a client can poll with ``If-None-Match`` and edit with ``If-Match``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select
from sqlalchemy.orm import Session

from cloud.domain import Connectivity
from cloud.lifecycle_models import DeviceConfig
from cloud.models import Alarm, Device, Gap, Twin, TwinValue
from cloud.predict.views import device_predictions, prediction_json
from cloud.settings import CloudSettings
from cloud.twin.figures import derived_figures
from protocols.reference import (
    FAULT_POINT,
    STATUS_POINT,
    fault_name,
    fault_text,
    status_label,
)

RECENT_ALARMS = 20


def connectivity(twin: Twin | None, now_ms: int, stale_after_ms: int) -> Connectivity:
    """Online / offline / stale / unknown, as the twin shows it now."""
    if twin is None or (twin.connection == "unknown" and twin.last_seen_ms is None):
        return Connectivity.UNKNOWN
    if twin.connection == "offline":
        return Connectivity.OFFLINE
    if twin.last_seen_ms is None or now_ms - twin.last_seen_ms > stale_after_ms:
        return Connectivity.STALE
    return Connectivity.ONLINE


def connectivity_clause(
    state: Connectivity, now_ms: int, stale_after_ms: int
) -> ColumnElement[bool]:
    """SQL twin of `connectivity` for a query outer-joined to `Twin` (for list filters)."""
    unknown = or_(
        Twin.device_id.is_(None), and_(Twin.connection == "unknown", Twin.last_seen_ms.is_(None))
    )
    offline = and_(not_(unknown), Twin.connection == "offline")
    fresh = and_(Twin.last_seen_ms.is_not(None), Twin.last_seen_ms >= now_ms - stale_after_ms)
    if state is Connectivity.UNKNOWN:
        return unknown
    if state is Connectivity.OFFLINE:
        return offline
    live = and_(not_(unknown), Twin.connection != "offline")
    return and_(live, fresh) if state is Connectivity.ONLINE else and_(live, not_(fresh))


def etag(version: int, state: Connectivity | None = None) -> str:
    """Strong ETag for a twin version as seen now: ``"<version>-<connectivity>"``.

    Connectivity is part of it because ``stale`` comes from the clock, not from a write: a
    client polling with ``If-None-Match`` must not keep a 304 that still says ``online``.
    """
    return f'"{version}"' if state is None else f'"{version}-{state.value}"'


def attributes_json(device: Device) -> dict[str, Any]:
    """The twin's registry attributes."""
    location = None
    if device.lat is not None and device.lon is not None:
        location = {"lat": device.lat, "lon": device.lon}
    return {
        "model": device.model,
        "serial": device.serial,
        "install_date": device.install_date,
        "location": location,
        "address": device.address,
        "owner": device.owner_id,
        "tenant": device.tenant_id,
        "revoked": device.revoked,
    }


def boiler_summary(
    device: Device, twin: Twin | None, now_ms: int, settings: CloudSettings
) -> dict[str, Any]:
    """One row of the boiler list: identity, where, who, connectivity, status."""
    status = twin.status if twin else None
    fault = twin.fault_code if twin else None
    return {
        "id": device.id,
        "model": device.model,
        "serial": device.serial,
        "address": device.address,
        "owner": device.owner_id,
        "tenant": device.tenant_id,
        "connectivity": connectivity(twin, now_ms, stale_ms(settings)).value,
        "last_seen": twin.last_seen_ms if twin else None,
        "status": status,
        "status_label": status_label(status),
        "fault": fault_name(fault),
        "version": twin.version if twin else 0,
    }


def stale_ms(settings: CloudSettings) -> int:
    """`CloudSettings.stale_after_s` in milliseconds."""
    return int(settings.stale_after_s * 1000)


def twin_json(
    session: Session, device: Device, now_ms: int, settings: CloudSettings
) -> dict[str, Any]:
    """The whole product twin of `device` as the API shows it at `now_ms`.

    ``version`` is 0 for a registered boiler that ingest has not yet created a twin for.
    """
    twin = session.get(Twin, device.id)
    values = session.scalars(
        select(TwinValue).where(TwinValue.device_id == device.id).order_by(TwinValue.point)
    )
    return {
        "id": device.id,
        "version": twin.version if twin else 0,
        "attributes": attributes_json(device),
        "connectivity": _connectivity_json(twin, now_ms, settings),
        "reported": {value.point: _value_json(value) for value in values},
        "health": {**(twin.health if twin else {}), "ts": twin.health_ms if twin else None},
        "alarms": [_alarm_json(alarm, now_ms) for alarm in recent_alarms(session, device.id)],
        "predictions": [
            prediction_json(p, evidence=False) for p in device_predictions(session, device.id)
        ],
        "derived": derived_figures(session, device, now_ms),
        "delivery": _delivery_json(session, device.id, twin),
        "config": _config_json(session, device.id, twin),
    }


def _config_json(session: Session, device_id: str, twin: Twin | None) -> dict[str, Any]:
    """Desired vs reported remote configuration version (`cloud.device_config` has the
    detail: settings, the last rejection)."""
    row = session.get(DeviceConfig, device_id)
    agent = (twin.health or {}).get("agent", {}) if twin else {}
    reported = agent.get("config_version")
    return {
        "desired": row.version if row is not None else 0,
        "reported": int(reported) if isinstance(reported, int | float) else None,
    }


def _connectivity_json(twin: Twin | None, now_ms: int, settings: CloudSettings) -> dict[str, Any]:
    return {
        "state": connectivity(twin, now_ms, stale_ms(settings)).value,
        "since": twin.connection_ms if twin else None,
        "last_seen": twin.last_seen_ms if twin else None,
        "stale_after_s": settings.stale_after_s,
        "epoch": twin.epoch if twin else None,
        "birth": twin.birth_ms if twin else None,
        "agent_version": twin.agent_version if twin else None,
        "map_id": twin.map_id if twin else None,
        "map_hash": twin.map_hash if twin else None,
        "capabilities": twin.capabilities if twin else [],
    }


def _value_json(value: TwinValue) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "value": value.num if value.num is not None else value.text,
        "ts": value.ts_ms,
        "quality": value.quality,
    }
    if value.device_ts_ms is not None:
        reading["device_ts"] = value.device_ts_ms  # the device's clock was not trusted
    if value.point in (STATUS_POINT, FAULT_POINT) and value.num is not None:
        code = int(value.num)
        reading["value"] = code
        if value.point == STATUS_POINT:
            reading["label"] = status_label(code)
        else:
            reading["name"] = fault_name(code)
            reading["text"] = fault_text(code)
    return reading


def recent_alarms(session: Session, device_id: str, limit: int = RECENT_ALARMS) -> list[Alarm]:
    """The `limit` most recent alarm episodes plus every open one, newest first."""
    recent = select(Alarm).where(Alarm.device_id == device_id)
    rows = {a.id: a for a in session.scalars(recent.order_by(Alarm.start_ms.desc()).limit(limit))}
    for alarm in session.scalars(recent.where(Alarm.end_ms.is_(None))):
        rows.setdefault(alarm.id, alarm)
    return sorted(rows.values(), key=lambda a: (a.start_ms, a.id), reverse=True)


def _alarm_json(alarm: Alarm, now_ms: int) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "kind": alarm.kind,
        "code": alarm.code,
        "name": alarm.name or fault_name(alarm.code),
        "text": fault_text(alarm.code),
        "start": alarm.start_ms,
        "end": alarm.end_ms,
        "open": alarm.end_ms is None,
        "duration_ms": (alarm.end_ms if alarm.end_ms is not None else now_ms) - alarm.start_ms,
    }


def _delivery_json(session: Session, device_id: str, twin: Twin | None) -> dict[str, Any]:
    unexplained = session.scalar(
        select(func.count())
        .select_from(Gap)
        .where(Gap.device_id == device_id, Gap.kind == "unexplained", Gap.resolved_ms.is_(None))
    )
    return {
        "max_seq": twin.max_seq if twin else None,
        "contiguous_seq": twin.contiguous_seq if twin else None,
        "received": twin.received if twin else 0,
        "duplicates": twin.duplicates if twin else 0,
        "lost_accounted": twin.lost_accounted if twin else 0,
        "unexplained_gaps": unexplained or 0,
    }


# --- derived figures ---------------------------------------------------------------------
