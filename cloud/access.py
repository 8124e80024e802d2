"""Who may see which boiler: the one place the visibility rule lives.

A boiler the caller may not see answers 404, exactly like one that does not exist, so ids do
not leak. The rule, by role:

* admin, support: every boiler;
* owner: boilers whose ``owner_id`` is them;
* tenant: boilers whose ``tenant_id`` is them;
* engineer: boilers of jobs they are invited to (invitation open or accepted, while the
  job is still crowdsourcing or shortlisted) or contracted on (until the job is verified,
  evaluated, cancelled or has failed verification). Only a contracted engineer sees the
  people and the address (`sees_people`), and engineers see the boiler's own events in its
  thread, not the service jobs' (those are in the job's thread, for the contracted one).

Nothing here imports FastAPI: the API, the portal and the command service use the same
rules (boilers, jobs, engineers' profiles, commands).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, or_, select, true
from sqlalchemy.orm import Session

from cloud.domain import CONTRACTED_STATES, INVITED_STATES, Caller, InvitationState, Role
from cloud.errors import Forbidden, NotFound
from cloud.models import Command, Device, Invitation, Job

_ENGAGED_INVITATION = (InvitationState.OPEN.value, InvitationState.ACCEPTED.value)


def engineer_devices(engineer_id: str) -> Select[tuple[str]]:
    """Ids of boilers an engineer is invited to or contracted on now."""
    invited = (
        select(Job.device_id)
        .join(Invitation, Invitation.job_id == Job.id)
        .where(
            Invitation.engineer_id == engineer_id,
            Invitation.state.in_(_ENGAGED_INVITATION),
            Job.state.in_([s.value for s in INVITED_STATES]),
        )
    )
    contracted = select(Job.device_id).where(
        Job.engineer_id == engineer_id, Job.state.in_([s.value for s in CONTRACTED_STATES])
    )
    return invited.union(contracted)  # type: ignore[return-value]


def visible_devices(caller: Caller) -> ColumnElement[bool]:
    """SQL condition on `Device` selecting the boilers `caller` may see."""
    if caller.is_staff:
        return true()
    if caller.role is Role.OWNER:
        return Device.owner_id == caller.user_id
    if caller.role is Role.TENANT:
        return Device.tenant_id == caller.user_id
    if caller.role is Role.ENGINEER:
        return Device.id.in_(engineer_devices(caller.user_id))
    return false()


def can_see(session: Session, caller: Caller, device: Device) -> bool:
    """Whether `caller` may see `device` (the same rule as `visible_devices`)."""
    if caller.is_staff:
        return True
    if caller.role is Role.OWNER:
        return device.owner_id == caller.user_id
    if caller.role is Role.TENANT:
        return device.tenant_id == caller.user_id
    if caller.role is Role.ENGINEER:
        query = select(Device.id).where(Device.id == device.id, visible_devices(caller))
        return session.scalar(query) is not None
    return False


def sees_people(session: Session, caller: Caller, device: Device) -> bool:
    """Whether `caller` may see who owns and lives with `device` and where exactly it is.

    Everyone who may see the boiler, except an engineer who is only invited: they learn the
    people and the address with the contract.
    """
    if caller.role is not Role.ENGINEER:
        return True
    contracted = select(Job.id).where(
        Job.device_id == device.id,
        Job.engineer_id == caller.user_id,
        Job.state.in_([s.value for s in CONTRACTED_STATES]),
    )
    return session.scalar(contracted.limit(1)) is not None


def redact_people(body: dict[str, Any]) -> dict[str, Any]:
    """A boiler's JSON (twin or list row) without people and address, location to ~1 km."""
    target = body.get("attributes", body)
    for key in ("owner", "tenant", "address"):
        if key in target:
            target[key] = None
    location = target.get("location")
    if isinstance(location, dict):
        target["location"] = {k: round(v, 2) for k, v in location.items()}
    return body


def visible_device(session: Session, caller: Caller, device_id: str) -> Device:
    """The boiler `device_id` if `caller` may see it; `NotFound` otherwise (either way)."""
    device = session.get(Device, device_id)
    if device is None or not can_see(session, caller, device):
        raise NotFound(f"no boiler {device_id}", device_id=device_id)
    return device


def require_role(caller: Caller, allowed: frozenset[Role], action: str) -> None:
    """`Forbidden` unless `caller` has one of the `allowed` roles."""
    if caller.role not in allowed:
        raise Forbidden(f"{caller.role.article} may not {action}", role=caller.role.value)


def visible_jobs(caller: Caller) -> ColumnElement[bool]:
    """SQL condition on `Job` selecting the jobs `caller` may see."""
    me = caller.user_id
    if caller.is_staff:
        return true()
    if caller.role is Role.OWNER:
        return or_(Job.owner_id == me, Job.requested_by == me)
    if caller.role is Role.TENANT:
        return or_(Job.tenant_id == me, Job.requested_by == me)
    if caller.role is Role.ENGINEER:
        invited = select(Invitation.job_id).where(
            Invitation.engineer_id == me, Invitation.state.in_(_ENGAGED_INVITATION)
        )
        return or_(
            Job.engineer_id == me,
            and_(Job.id.in_(invited), Job.state.in_([s.value for s in INVITED_STATES])),
        )
    return false()


def may_see_engineer(session: Session, caller: Caller, engineer_id: str) -> bool:
    """Staff and the engineer themselves; an owner or tenant once the engineer was invited
    to one of their jobs (so they can weigh the quotes)."""
    if caller.is_staff or caller.user_id == engineer_id:
        return True
    if caller.role not in (Role.OWNER, Role.TENANT):
        return False
    jobs = select(Job.id).where(visible_jobs(caller))
    found = session.scalar(
        select(Invitation.job_id)
        .where(Invitation.engineer_id == engineer_id, Invitation.job_id.in_(jobs))
        .limit(1)
    )
    return found is not None


def visible_command(session: Session, caller: Caller, command_id: str) -> Command:
    """The command, if the caller may see its boiler; `NotFound` otherwise (as if there were
    none, so ids do not leak)."""
    row = session.get(Command, command_id)
    device = session.get(Device, row.device_id) if row else None
    if row is None or device is None or not can_see(session, caller, device):
        raise NotFound(f"no command {command_id}", command_id=command_id)
    return row
