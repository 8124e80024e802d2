"""Password hashing and tokens (`cloud.auth`) on a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.auth import (
    PasswordHasher,
    authenticate,
    caller_for_token,
    create_user,
    issue_token,
    revoke_token,
    token_hash,
    verify_password,
)
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Caller, Role
from cloud.errors import Conflict, InvalidInput
from cloud.models import Token, User
from tests.cloud.api_helpers import CHEAP, T0

HOUR = 3_600_000


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        yield session
    engine.dispose()


def test_hash_carries_its_parameters_and_a_random_salt() -> None:
    hasher = PasswordHasher(n=1 << 10, r=8, p=1)
    first, second = hasher.hash("hunter2hunter2"), hasher.hash("hunter2hunter2")
    assert first != second
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert (len(salt), len(key)) == (22, 43)  # 16 and 32 bytes, unpadded base64
    assert verify_password("hunter2hunter2", first)
    assert verify_password("hunter2hunter2", second)
    assert not verify_password("hunter2hunter3", first)
    assert "hunter2" not in first


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain-text-password",
        "bcrypt$1024$8$1$c2FsdA$a2V5",
        "scrypt$1000$8$1$c2FsdA$a2V5",  # n not a power of two
        "scrypt$1073741824$8$1$c2FsdA$a2V5",  # absurd cost
        "scrypt$1024$8$1$c2FsdA$",
        "scrypt$1024$8$1$!!!$a2V5",
        "scrypt$x$8$1$c2FsdA$a2V5",
    ],
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything at all", stored)


def test_create_user_checks_its_input(session: Session) -> None:
    with pytest.raises(InvalidInput) as short:
        create_user(session, "olga", "seven77", Role.OWNER, now_ms=T0, hasher=CHEAP)
    assert short.value.context == {"field": "password"}
    for bad in ("ab", "Olga", "-olga", "olga smith", "x" * 65):
        with pytest.raises(InvalidInput):
            create_user(session, bad, "long enough", Role.OWNER, now_ms=T0, hasher=CHEAP)
    create_user(session, "olga", "long enough", Role.OWNER, now_ms=T0, hasher=CHEAP)
    with pytest.raises(Conflict):
        create_user(session, "olga", "long enough", Role.TENANT, now_ms=T0, hasher=CHEAP)


def test_authenticate(session: Session) -> None:
    create_user(session, "olga", "long enough", Role.OWNER, now_ms=T0, hasher=CHEAP)
    user = authenticate(session, "olga", "long enough")
    assert user is not None and user.id == "olga"
    assert authenticate(session, "olga", "long enougH") is None
    assert authenticate(session, "nobody", "long enough") is None
    assert authenticate(session, "Not A Valid Id", "long enough") is None
    user.disabled = True
    assert authenticate(session, "olga", "long enough") is None


def test_tokens_are_stored_hashed_expire_and_can_be_revoked(session: Session) -> None:
    user = create_user(session, "sue", "long enough", Role.SUPPORT, now_ms=T0, hasher=CHEAP)
    issued = issue_token(session, user, now_ms=T0, ttl_ms=HOUR)
    assert issued.expires_ms == T0 + HOUR
    assert session.scalars(select(Token.token_hash)).all() == [token_hash(issued.token)]
    assert caller_for_token(session, issued.token, T0 + HOUR - 1) == Caller("sue", Role.SUPPORT)
    assert caller_for_token(session, issued.token, T0 + HOUR) is None
    assert caller_for_token(session, "forged", T0) is None
    later = issue_token(session, user, now_ms=T0 + 2 * HOUR, ttl_ms=HOUR)
    assert session.scalars(select(Token.token_hash)).all() == [token_hash(later.token)]
    assert revoke_token(session, later.token)
    assert not revoke_token(session, later.token)
    assert caller_for_token(session, later.token, T0 + 2 * HOUR) is None
    assert session.get(User, "sue") is not None
