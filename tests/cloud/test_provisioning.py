"""Claim tokens and the claim decision, on a real database (both backends): every refusal has
its reason and count, nothing takes over a registered device, a lost answer can be asked for
again, a single-use token is used once even by two gateways at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import create_user
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Role
from cloud.errors import InvalidInput, NotFound
from cloud.lifecycle_models import Claim
from cloud.metrics import CLAIMS
from cloud.models import Device, ThreadEvent
from cloud.provisioning import (
    ClaimRefused,
    claim,
    create_claims,
    register,
    revoke_batch,
    token_hash,
)
from cloud.registry import add_device
from protocols.cose import generate_private_key
from protocols.provisioning import ClaimRequest, make_request, open_request

T0 = 1_790_000_000_000
DAY = 86_400_000


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def issue(sessions: sessionmaker[Session], **options: object) -> str:
    options.setdefault("count", 1)
    options.setdefault("batch", "line-3")
    options.setdefault("expires_ms", T0 + DAY)
    with transaction(sessions) as session:
        return create_claims(session, now_ms=T0, **options).tokens[0]  # type: ignore[arg-type]


def request(
    token: str, key: Ed25519PrivateKey | None = None, dev: str = "gw-000000000001", **more: str
) -> ClaimRequest:
    fields = {"serial": "BT24C-000042", "model": "BT-24C", **more}
    envelope = make_request(
        key or generate_private_key(),
        claim=token,
        dev=dev,
        agent="0.1.0",
        iat=T0,
        nonce="n",
        **fields,
    )
    return open_request(envelope)


def do_claim(sessions: sessionmaker[Session], req: ClaimRequest, now: int = T0 + 1) -> str:
    with transaction(sessions) as session:
        return claim(session, req, now_ms=now).device.id


def refused(sessions: sessionmaker[Session], req: ClaimRequest, now: int = T0 + 1) -> str:
    with pytest.raises(ClaimRefused) as caught, transaction(sessions) as session:
        claim(session, req, now_ms=now)
    return caught.value.reason


def count(outcome: str) -> float:
    return CLAIMS.labels(outcome)._value.get()


def test_a_claim_registers_the_gateway_with_the_boilers_identity(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        create_user(session, "olive", "correct-horse-battery", Role.OWNER, now_ms=T0)
        create_user(session, "tam", "correct-horse-battery", Role.TENANT, now_ms=T0)
    token = issue(sessions, model="BT-24C", owner_id="olive", tenant_id="tam")
    accepted = count("accepted")
    device_id = do_claim(sessions, request(token, location="51.5,-0.12", address="1 High St"))
    assert count("accepted") == accepted + 1
    with sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None
        assert (device.serial, device.model, device.owner_id) == ("BT24C-000042", "BT-24C", "olive")
        assert device.tenant_id == "tam"
        assert (device.lat, device.lon, device.address) == (51.5, -0.12, "1 High St")
        row = session.scalars(select(Claim)).one()
        assert row.uses == 1 and row.token_hash == token_hash(token)
        changes = [
            e.data["change"]
            for e in session.scalars(select(ThreadEvent).where(ThreadEvent.device_id == device_id))
        ]
    assert changes == ["registered", "claimed"]


def test_only_the_hash_of_a_token_is_stored(sessions: sessionmaker[Session]) -> None:
    token = issue(sessions)
    with sessions() as session:
        stored = [str(v) for v in session.execute(select(Claim)).one()[0].__dict__.values()]
    assert all(token not in value for value in stored)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"expires_ms": T0 + 1}, "expired"),
        ({"model": "BT-30C"}, "wrong_model"),
    ],
)
def test_a_token_out_of_its_scope_is_refused(
    sessions: sessionmaker[Session], setup: dict[str, object], reason: str
) -> None:
    token = issue(sessions, **setup)
    before = count(reason)
    assert refused(sessions, request(token), now=T0 + 2) == reason
    assert count(reason) == before + 1
    with sessions() as session:
        assert session.scalars(select(Device)).first() is None


def test_unknown_and_revoked_tokens_are_refused(sessions: sessionmaker[Session]) -> None:
    assert refused(sessions, request("btc_" + "A" * 32)) == "unknown_token"
    token = issue(sessions, batch="stolen-van")
    with transaction(sessions) as session:
        assert revoke_batch(session, "stolen-van") == 1
    assert refused(sessions, request(token)) == "revoked"


def test_a_single_use_token_is_used_once_and_a_replay_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    token = issue(sessions)
    do_claim(sessions, request(token, dev="gw-000000000001"))
    assert refused(sessions, request(token, dev="gw-000000000002")) == "used_up"


def test_a_batch_token_registers_up_to_its_count(sessions: sessionmaker[Session]) -> None:
    token = issue(sessions, max_uses=3)
    ids = [do_claim(sessions, request(token, dev=f"gw-00000000000{i}")) for i in range(3)]
    assert len(set(ids)) == 3
    assert refused(sessions, request(token, dev="gw-000000000009")) == "used_up"


def test_no_claim_takes_over_a_registered_device(sessions: sessionmaker[Session]) -> None:
    victim_key = generate_private_key()
    with transaction(sessions) as session:
        add_device(session, "boiler-0001", victim_key.public_key(), now_ms=T0)
    token = issue(sessions, max_uses=5)
    assert refused(sessions, request(token, dev="boiler-0001")) == "device_exists"
    # the victim's own key under a new id: still not a way in
    assert refused(sessions, request(token, key=victim_key, dev="gw-00000000beef")) == "key_in_use"
    # even with the victim's key and id, a device that did not join with this claim is not
    # answered again (its broker password would be replaced)
    assert refused(sessions, request(token, key=victim_key, dev="boiler-0001")) == "device_exists"
    with sessions() as session:
        assert session.scalars(select(Claim)).one().uses == 0


def test_the_same_gateway_asking_again_is_answered_without_a_second_use(
    sessions: sessionmaker[Session],
) -> None:
    key = generate_private_key()
    token = issue(sessions)
    first = do_claim(sessions, request(token, key=key))
    with transaction(sessions) as session:
        again = claim(session, request(token, key=key), now_ms=T0 + 5)
    assert again.again and again.device.id == first
    with sessions() as session:
        assert session.scalars(select(Claim)).one().uses == 1


def test_two_gateways_racing_for_one_single_use_token(sessions: sessionmaker[Session]) -> None:
    token = issue(sessions)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def race(dev: str) -> None:
        req = request(token, dev=dev)
        barrier.wait()
        for _ in range(20):  # SQLite: a locked database is retried as ingest would
            try:
                do_claim(sessions, req)
                outcomes.append("accepted")
                return
            except ClaimRefused as exc:
                outcomes.append(exc.reason)
                return
            except Exception as exc:
                if "locked" not in str(exc):
                    raise
        outcomes.append("gave up")

    threads = [
        threading.Thread(target=race, args=(d,)) for d in ("gw-00000000000a", "gw-00000000000b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted", "used_up"]


def test_one_new_device_claimed_twice_at_once_with_two_tokens(
    sessions: sessionmaker[Session],
) -> None:
    """Different tokens lock different rows: on PostgreSQL both claims may insert the device,
    and the loser is judged again (`register`), never an error."""
    for round_ in range(5):
        dev = f"gw-0000000001{round_:02d}"
        requests = [request(issue(sessions), dev=dev) for _ in range(2)]
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def race(
            req: ClaimRequest, barrier: threading.Barrier = barrier, outcomes: list[str] = outcomes
        ) -> None:
            barrier.wait()
            try:
                register(sessions, req, now_ms=T0 + 1)
                outcomes.append("accepted")
            except ClaimRefused as exc:
                outcomes.append(exc.reason)

        threads = [threading.Thread(target=race, args=(r,)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["accepted", "device_exists"], (round_, outcomes)


def test_bad_issue_options_are_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(InvalidInput, match="count"):
        issue(sessions, count=0)
    with pytest.raises(InvalidInput, match="future"):
        issue(sessions, expires_ms=T0)
    with pytest.raises(NotFound, match="no user"):
        issue(sessions, owner_id="nobody")
    with pytest.raises(NotFound, match="no user"):
        issue(sessions, tenant_id="nobody")
    with transaction(sessions) as session:
        create_user(session, "otto", "correct-horse-battery", Role.OWNER, now_ms=T0)
        create_user(session, "tina", "correct-horse-battery", Role.TENANT, now_ms=T0)
    with pytest.raises(InvalidInput, match="tina is a tenant, not an owner"):
        issue(sessions, owner_id="tina")
    with pytest.raises(InvalidInput, match="otto is an owner, not a tenant"):
        issue(sessions, tenant_id="otto")
