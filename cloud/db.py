"""Database engine, sessions and migrations (SQLite by default, PostgreSQL for fleets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from cloud.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created and WAL switched on."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError for junk URLs
        raise ConfigError("db_url", f"not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit.

    On SQLite, ``SELECT ... FOR UPDATE`` (which SQLite does not have) takes the database's
    write lock first (`take_write_lock`), so every check-then-act rule written with
    ``with_for_update()`` is serialised on both databases.
    """
    sessions = sessionmaker(engine, expire_on_commit=False)
    if engine.dialect.name == "sqlite":
        event.listen(sessions, "do_orm_execute", _lock_before_for_update)
    return sessions


def take_write_lock(session: Session) -> None:
    """Serialise this transaction with every other writer, as ``FOR UPDATE`` would.

    PostgreSQL: nothing to do here (row locks are taken by ``SELECT ... FOR UPDATE``). SQLite:
    ``BEGIN IMMEDIATE`` unless the transaction already writes. pysqlite opens a transaction
    only before the first INSERT/UPDATE/DELETE, so reads before it are not protected at all;
    with the write lock taken first, everything read afterwards stays true until commit
    (waiting up to ``busy_timeout`` for the lock).
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.dbapi_connection
    if raw is not None and not raw.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lock_before_for_update(state: ORMExecuteState) -> None:
    if getattr(state.statement, "_for_update_arg", None) is not None:
        take_write_lock(state.session)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with sessions() as session, session.begin():
        yield session


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    command.upgrade(_alembic_config(engine), "head")


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
