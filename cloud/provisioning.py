"""Zero-touch provisioning: claim tokens, and registering the gateway that presents one.

An operator (or a factory's batch job) makes claim tokens with ``boilertwin cloud claims
create``: each is single-use or good for `max_uses` gateways, expires, and may be scoped to a
boiler model and bound to an owner. Only each token's SHA-256 is stored.

A gateway sends a signed `protocols.provisioning.ClaimRequest`. `claim` decides, in the
caller's transaction:

* the token must exist, be unrevoked, unexpired and have a use left, and the boiler's model
  (from its identity registers) must be the one the token is scoped to;
* the device id must be new, and the key must not belong to any device: **no claim takes
  over an existing device**. The one exception is the same gateway asking again (same id,
  same key, as proven by the signature) because the answer to its first request was lost:
  it is answered again (a fresh broker password), using no further claim.

Every refusal is a `ClaimRefused` with a machine-readable reason, counted in
``boilertwin_claims_total{outcome}``. What was done is recorded in the boiler's thread.
The broker login is created afterwards by the caller (`cloud.broker_admin`), outside the
transaction: if the broker cannot be reached the gateway asks again and is answered again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cloud import thread
from cloud.db import transaction
from cloud.domain import Role
from cloud.errors import CloudError, InvalidInput, NotFound
from cloud.lifecycle_models import Claim
from cloud.metrics import CLAIMS
from cloud.models import Device, DeviceKey, ThreadEvent, User
from cloud.registry import Location, add_device, check_device_id, fingerprint
from protocols.cose import public_key_from_raw
from protocols.provisioning import TOKEN_PREFIX, ClaimRequest

log = logging.getLogger(__name__)

MAX_TOKENS = 100_000
"""Most tokens one ``claims create`` makes."""
MAX_USES = 1_000_000


class ClaimRefused(CloudError):
    """A claim request the cloud will not honour; `reason` says why (machine-readable)."""

    status = 403
    title = "Claim refused"

    def __init__(self, reason: str, detail: str, *, status: int = 403) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason
        self.status = status


def new_token() -> str:
    """A fresh claim token: 192 random bits, URL-safe, short enough for a QR code."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    """Tokens just made (shown once) and the claim rows they belong to."""

    tokens: tuple[str, ...]
    batch: str
    max_uses: int
    expires_ms: int


def create_claims(
    session: Session,
    *,
    count: int,
    batch: str,
    expires_ms: int,
    now_ms: int,
    max_uses: int = 1,
    model: str | None = None,
    owner_id: str | None = None,
    tenant_id: str | None = None,
    actor: str = "cli",
) -> Issued:
    """`count` tokens for `batch`, each good for `max_uses` gateways until `expires_ms`."""
    if not 1 <= count <= MAX_TOKENS:
        raise InvalidInput(f"count must be 1 to {MAX_TOKENS}, got {count}", field="count")
    if not 1 <= max_uses <= MAX_USES:
        raise InvalidInput(f"uses must be 1 to {MAX_USES}, got {max_uses}", field="uses")
    if expires_ms <= now_ms:
        raise InvalidInput("a claim must expire in the future", field="expires")
    batch = batch.strip()
    if not batch or len(batch) > 100:
        raise InvalidInput("batch must be 1 to 100 characters", field="batch")
    _check_person(session, owner_id, Role.OWNER)
    _check_person(session, tenant_id, Role.TENANT)
    tokens = tuple(new_token() for _ in range(count))
    session.add_all(
        Claim(
            token_hash=token_hash(token),
            batch=batch,
            model=model,
            owner_id=owner_id,
            tenant_id=tenant_id,
            max_uses=max_uses,
            uses=0,
            expires_ms=expires_ms,
            revoked=False,
            created_ms=now_ms,
            created_by=actor,
        )
        for token in tokens
    )
    log.info("%d claim token(s) issued for batch %r by %s", count, batch, actor)
    return Issued(tokens, batch, max_uses, expires_ms)


def _check_person(session: Session, user_id: str | None, role: Role) -> None:
    """A claim binds only an existing user of the right role (or no one)."""
    if user_id is None:
        return
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}", field=role.value)
    if user.role != role.value:
        article = Role(user.role).article
        raise InvalidInput(f"{user_id} is {article}, not {role.article}", field=role.value)


def revoke_batch(session: Session, batch: str) -> int:
    """Revoke every token of `batch`; returns how many were still usable."""
    claims = session.scalars(select(Claim).where(Claim.batch == batch, Claim.revoked.is_(False)))
    count = 0
    for claim in claims:
        claim.revoked = True
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Claimed:
    """A gateway registered (or registered before and answered again)."""

    device: Device
    again: bool


def claim(session: Session, request: ClaimRequest, *, now_ms: int) -> Claimed:
    """Register the gateway `request` (verified) describes, or `ClaimRefused`."""
    try:
        return _claim(session, request, now_ms)
    except ClaimRefused as refused:
        CLAIMS.labels(refused.reason).inc()
        log.warning("claim for %s refused: %s (%s)", request.dev, refused.reason, refused.detail)
        raise


def register(
    sessions: sessionmaker[Session], request: ClaimRequest, *, now_ms: int
) -> tuple[str, bool]:
    """`claim` in a transaction of its own: (device id, answered again).

    Two claims for the same new device id (or key) with different tokens lock different claim
    rows, so on PostgreSQL both may find no device and both insert; the loser's insert breaks
    the unique key. It is then judged again, in a new transaction that sees the winner's
    device: answered again (the same gateway asking twice) or refused, never an error."""
    for attempt in (1, 2):
        try:
            with transaction(sessions) as session:
                claimed = claim(session, request, now_ms=now_ms)
                return claimed.device.id, claimed.again
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("claim for %s raced another claim: judged again", request.dev)
    raise AssertionError("unreachable")


def _claim(session: Session, request: ClaimRequest, now_ms: int) -> Claimed:
    row = session.scalars(
        select(Claim).where(Claim.token_hash == token_hash(request.claim)).with_for_update()
    ).first()
    if row is None:
        raise ClaimRefused("unknown_token", "no such claim token")
    try:
        check_device_id(request.dev)
    except InvalidInput as exc:
        raise ClaimRefused("bad_device_id", exc.detail, status=400) from None
    existing = session.get(Device, request.dev)
    owner_of_key = session.scalars(
        select(DeviceKey.device_id).where(DeviceKey.public_key == request.key)
    ).first()
    if existing is not None:
        same = owner_of_key == existing.id and not existing.revoked
        if same and _claimed_with(session, row, existing):
            CLAIMS.labels("again").inc()
            log.info("%s: claim answered again (same key)", existing.id)
            return Claimed(existing, again=True)
        raise ClaimRefused(
            "device_exists",
            f"device {request.dev} is already registered; a claim cannot take it over",
            status=409,
        )
    if owner_of_key is not None:
        raise ClaimRefused(
            "key_in_use", "this public key belongs to another device; make a new key", status=409
        )
    if row.revoked:
        raise ClaimRefused("revoked", "this claim token has been revoked")
    if row.expires_ms <= now_ms:
        raise ClaimRefused("expired", "this claim token has expired")
    if row.uses >= row.max_uses:
        raise ClaimRefused("used_up", "this claim token has been used already")
    if row.model is not None and request.model.strip() != row.model:
        raise ClaimRefused(
            "wrong_model",
            f"this claim token is for model {row.model!r}, the boiler says {request.model!r}",
        )
    location = None
    if request.location is not None:
        try:
            location = Location.parse(request.location)
        except InvalidInput as exc:
            raise ClaimRefused("bad_location", exc.detail, status=400) from None
    actor = f"claim:{row.id}"
    device = add_device(
        session,
        request.dev,
        public_key_from_raw(request.key),
        now_ms=now_ms,
        actor=actor,
        model=request.model.strip(),
        serial=request.serial.strip(),
        location=location,
        address=request.address,
        known_new=True,
    )
    device.owner_id = row.owner_id
    device.tenant_id = row.tenant_id
    row.uses += 1
    thread.record(
        session,
        device_id=device.id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=actor,
        data={
            "change": "claimed",
            "batch": row.batch,
            "claim": row.id,
            "key": fingerprint(request.key),
            "serial": device.serial,
            "model": device.model,
            "agent": request.agent,
            "owner": row.owner_id,
            "tenant": row.tenant_id,
        },
    )
    CLAIMS.labels("accepted").inc()
    log.info("%s: claimed with claim %d (batch %r)", device.id, row.id, row.batch)
    return Claimed(device, again=False)


def _claimed_with(session: Session, row: Claim, device: Device) -> bool:
    """Whether `device` joined with the claim `row` (only then may it be answered again)."""
    event = session.scalars(
        select(ThreadEvent.id).where(
            ThreadEvent.device_id == device.id,
            ThreadEvent.kind == thread.ThreadKind.DEVICE,
            ThreadEvent.actor == f"claim:{row.id}",
        )
    ).first()
    return event is not None


def record_broker_login(session: Session, device_id: str, *, now_ms: int, again: bool) -> None:
    """The thread's note that the device's broker login (and ACL role) was made."""
    thread.record(
        session,
        device_id=device_id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor="provisioning",
        data={"change": "broker_login", "renewed": again},
    )


def cloud_public_keys(keys_dir: Path) -> dict[str, str]:
    """Every command key a gateway should pin: ``{kid: PEM}`` from ``<kid>.pem`` files."""
    return {path.stem: path.read_text() for path in sorted(keys_dir.glob("*.pem"))}
