"""Who may see which boiler: the one place the visibility rule lives.

A boiler the caller may not see answers 404, exactly like one that does not exist, so ids do
not leak. The rule, by role:

* admin, support: every boiler;
* owner: boilers whose ``owner_id`` is them;
* tenant: boilers whose ``tenant_id`` is them;
* engineer: none yet (the service platform will add boilers they are invited to or
  contracted on: extend both functions below, they must agree).

Nothing here imports FastAPI: the API and the command service use the same rule.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, true
from sqlalchemy.orm import Session

from cloud.domain import Caller, Role
from cloud.errors import Forbidden, NotFound
from cloud.models import Device


def visible_devices(caller: Caller) -> ColumnElement[bool]:
    """SQL condition on `Device` selecting the boilers `caller` may see."""
    if caller.is_staff:
        return true()
    if caller.role is Role.OWNER:
        return Device.owner_id == caller.user_id
    if caller.role is Role.TENANT:
        return Device.tenant_id == caller.user_id
    return false()


def can_see(caller: Caller, device: Device) -> bool:
    """Whether `caller` may see `device` (the same rule as `visible_devices`)."""
    if caller.is_staff:
        return True
    if caller.role is Role.OWNER:
        return device.owner_id == caller.user_id
    if caller.role is Role.TENANT:
        return device.tenant_id == caller.user_id
    return False


def visible_device(session: Session, caller: Caller, device_id: str) -> Device:
    """The boiler `device_id` if `caller` may see it; `NotFound` otherwise (either way)."""
    device = session.get(Device, device_id)
    if device is None or not can_see(caller, device):
        raise NotFound(f"no boiler {device_id}", device_id=device_id)
    return device


def require_role(caller: Caller, allowed: frozenset[Role], action: str) -> None:
    """`Forbidden` unless `caller` has one of the `allowed` roles."""
    if caller.role not in allowed:
        raise Forbidden(f"a {caller.role} may not {action}", role=caller.role.value)
