"""Cloud fixtures: a freshly migrated database per test, on SQLite and on PostgreSQL.

Every test that takes `db_url` runs once per backend. PostgreSQL is the server named by
``TEST_DATABASE_URL`` (`.ci/run` sets it); each test gets its own database cloned from a
migrated template, so tests never see each other's rows. Without ``TEST_DATABASE_URL`` the
PostgreSQL run is skipped with a visible reason; with it, an unreachable server fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.db import make_engine, normalise_url, upgrade

BACKENDS = ["sqlite", "postgresql"]


def _admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


class _Templates:
    """One migrated template per backend per test session; clones are cheap."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite_file: Path | None = None
        self.pg_template: str | None = None

    def sqlite(self, target: Path) -> str:
        if self.sqlite_file is None:
            self.sqlite_file = self.directory / "template.db"
            engine = make_engine(f"sqlite:///{self.sqlite_file}")
            upgrade(engine)
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            engine.dispose()
        shutil.copyfile(self.sqlite_file, target)
        return f"sqlite:///{target}"

    def postgresql(self, admin: str) -> tuple[str, str]:
        url = sa.engine.make_url(normalise_url(admin))
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                if self.pg_template is None:
                    name = f"bt_template_{uuid.uuid4().hex[:10]}"
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
                    template_engine = make_engine(url.set(database=name).render_as_string(False))
                    upgrade(template_engine)
                    template_engine.dispose()
                    self.pg_template = name
                db = f"bt_test_{uuid.uuid4().hex[:12]}"
                connection.exec_driver_sql(f'CREATE DATABASE "{db}" TEMPLATE "{self.pg_template}"')
        finally:
            engine.dispose()
        return url.set(database=db).render_as_string(False), db

    def drop(self, admin: str, name: str) -> None:
        url = sa.engine.make_url(normalise_url(admin))
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("db-template"))
    yield templates
    admin = _admin_url()
    if templates.pg_template and admin:
        templates.drop(admin, templates.pg_template)


def _reachable(admin: str) -> None:
    try:
        engine = sa.create_engine(normalise_url(admin))
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as exc:
        pytest.fail(f"TEST_DATABASE_URL={admin} is unreachable: {exc}")


def _postgresql(db_templates: _Templates) -> Iterator[str]:
    """An empty, migrated PostgreSQL database; fails in CI without one, else skips."""
    admin = _admin_url()
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail("CI must set TEST_DATABASE_URL: PostgreSQL tests may not be skipped")
        pytest.skip("PostgreSQL run needs TEST_DATABASE_URL (.ci/run sets it)")
    _reachable(admin)
    url, name = db_templates.postgresql(admin)
    yield url
    db_templates.drop(admin, name)


@pytest.fixture(params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, db_templates: _Templates, tmp_path: Path
) -> Iterator[str]:
    """URL of an empty, migrated database on the parametrised backend."""
    if request.param == "sqlite":
        yield db_templates.sqlite(tmp_path / "cloud.db")
        return
    yield from _postgresql(db_templates)


@pytest.fixture
def pg_url(db_templates: _Templates) -> Iterator[str]:
    """URL of an empty, migrated PostgreSQL database (for PostgreSQL-only features)."""
    yield from _postgresql(db_templates)


@pytest.fixture
def sqlite_url(db_templates: _Templates, tmp_path: Path) -> str:
    """URL of an empty, migrated SQLite database (for SQLite-only behaviour)."""
    return db_templates.sqlite(tmp_path / "cloud.db")
