"""Users, password hashes and API tokens.

Passwords are hashed with scrypt (stdlib ``hashlib.scrypt``) and a random salt; the stored
string carries its own parameters, so the cost can be raised later without breaking old
hashes. Tokens are opaque random strings (``secrets.token_urlsafe``); only their SHA-256 is
stored, so a copy of the database does not hand out sessions. Neither passwords nor tokens
are ever logged or put in an error's context.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.domain import Caller, Role
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.models import Token, User

log = logging.getLogger(__name__)

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
"""Longer inputs are refused rather than hashed: scrypt's cost grows with them."""

USER_ID = re.compile(r"[a-z0-9][a-z0-9._@-]{2,63}")
"""Login names: 3-64 characters, lower-case letters, digits and ``. _ @ -``."""

_SCHEME = "scrypt"
_MAX_N = 1 << 20
"""Refuse to verify against absurd stored parameters (a corrupted row must not hang a login)."""


@dataclass(frozen=True, slots=True)
class PasswordHasher:
    """scrypt with cost `n`, block size `r` and parallelism `p`.

    The default (n=2**15, r=8, p=1) uses 32 MiB and about 80 ms per hash on a server core;
    tests pass a cheaper hasher.
    """

    n: int = 1 << 15
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    key_bytes: int = 32

    def hash(self, password: str) -> str:
        """``scrypt$n$r$p$salt$key`` (base64 without padding) for `password`."""
        salt = secrets.token_bytes(self.salt_bytes)
        key = _scrypt(password, salt, self.n, self.r, self.p, self.key_bytes)
        return "$".join((_SCHEME, str(self.n), str(self.r), str(self.p), _b64(salt), _b64(key)))


DEFAULT_HASHER = PasswordHasher()


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the stored `encoded` hash (constant-time comparison)."""
    try:
        scheme, n_text, r_text, p_text, salt_text, key_text = encoded.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, key = _unb64(salt_text), _unb64(key_text)
    except (ValueError, binascii.Error):
        return False
    if scheme != _SCHEME or not _sane(n, r, p):
        return False
    if not key or len(password) > MAX_PASSWORD:
        return False
    candidate = _scrypt(password, salt, n, r, p, len(key))
    return hmac.compare_digest(candidate, key)


def create_user(
    session: Session,
    user_id: str,
    password: str,
    role: Role,
    display_name: str = "",
    *,
    now_ms: int,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> User:
    """Add a user in the caller's transaction.

    Raises `InvalidInput` for a malformed id or a password shorter than `MIN_PASSWORD`, and
    `Conflict` if the id is taken.
    """
    if not USER_ID.fullmatch(user_id):
        raise InvalidInput(
            "user id must be 3-64 characters: a-z, 0-9 and . _ @ - (starting with a letter "
            "or digit)",
            field="id",
        )
    check_password(password)
    if session.get(User, user_id) is not None:
        raise Conflict(f"user {user_id} already exists", user_id=user_id)
    user = User(
        id=user_id,
        password_hash=hasher.hash(password),
        role=Role(role).value,
        display_name=display_name,
        disabled=False,
        created_ms=now_ms,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # created concurrently since the check above
        raise Conflict(f"user {user_id} already exists", user_id=user_id) from exc
    log.info("user %s created with role %s", user_id, user.role)
    return user


@functools.cache
def _dummy_hash() -> str:
    return DEFAULT_HASHER.hash(secrets.token_urlsafe(16))


def authenticate(session: Session, user_id: str, password: str) -> User | None:
    """The enabled user with this id and password, or None.

    An unknown user costs the same scrypt run as a wrong password, so response times do not
    reveal which user ids exist.
    """
    user = session.get(User, user_id) if USER_ID.fullmatch(user_id) else None
    if user is None:
        verify_password(password, _dummy_hash())
        return None
    if not verify_password(password, user.password_hash) or user.disabled:
        return None
    return user


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued bearer token; `token` is shown to the client once and never stored."""

    token: str
    user_id: str
    role: Role
    expires_ms: int


def token_hash(token: str) -> str:
    """What the `tokens` table stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user: User, *, now_ms: int, ttl_ms: int) -> IssuedToken:
    """A new token for `user`, valid for `ttl_ms`; the user's expired tokens are purged."""
    session.execute(delete(Token).where(Token.user_id == user.id, Token.expires_ms <= now_ms))
    token = secrets.token_urlsafe(32)
    expires_ms = now_ms + ttl_ms
    session.add(
        Token(
            token_hash=token_hash(token), user_id=user.id, created_ms=now_ms, expires_ms=expires_ms
        )
    )
    session.flush()
    return IssuedToken(token, user.id, Role(user.role), expires_ms)


def caller_for_token(session: Session, token: str, now_ms: int) -> Caller | None:
    """The caller a bearer token stands for, or None if it is unknown, expired or disabled."""
    row = session.execute(
        select(User.id, User.role, User.disabled, Token.expires_ms)
        .join(Token, Token.user_id == User.id)
        .where(Token.token_hash == token_hash(token))
    ).one_or_none()
    if row is None or row.disabled or row.expires_ms <= now_ms:
        return None
    return Caller(row.id, Role(row.role))


def revoke_token(session: Session, token: str) -> bool:
    """Forget `token` (log-out); whether it existed."""
    result = session.execute(delete(Token).where(Token.token_hash == token_hash(token)))
    return bool(getattr(result, "rowcount", 0))


def _sane(n: int, r: int, p: int) -> bool:
    power_of_two = n > 1 and n & (n - 1) == 0
    return power_of_two and n <= _MAX_N and 1 <= r <= 64 and 1 <= p <= 16


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * n * 2 + 1024 * 1024
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def check_password(password: str) -> None:
    """`InvalidInput` for a password shorter than `MIN_PASSWORD` or longer than `MAX_PASSWORD`."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD} characters", field="password")


def set_password(
    session: Session,
    user_id: str,
    password: str,
    *,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> None:
    """Give any user a new password and end their sessions (their tokens are deleted).

    `NotFound` for an unknown user; `InvalidInput` for a password `create_user` would refuse.
    """
    check_password(password)
    user = session.get(User, user_id) if USER_ID.fullmatch(user_id) else None
    if user is None:
        raise NotFound(f"user {user_id} not found", user_id=user_id)
    user.password_hash = hasher.hash(password)
    session.execute(delete(Token).where(Token.user_id == user_id))
    session.flush()
    log.info("password of user %s set", user_id)
