"""An ingest on a real database with two registered devices: what ingest tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import make_engine, session_factory
from cloud.ingest import Ingest, Outcome
from cloud.models import Alarm, Gap, Sample, ThreadEvent, Twin, TwinValue, Uplink
from cloud.settings import CloudSettings
from protocols.messages import UplinkMessage
from tests.clocks import FakeMsClock as FakeClock
from tests.cloud.helpers import TestDevice, register, topic_of

DEV, OTHER = "boiler-0001", "boiler-0002"


@dataclass
class World:
    sessions: sessionmaker[Session]
    clock: FakeClock
    ingest: Ingest
    dev: TestDevice
    other: TestDevice
    queries: list[str]

    def send(self, message: UplinkMessage, *, key: Any = None, topic: str | None = None) -> Outcome:
        device = self.dev if message.dev == DEV else self.other
        return self.ingest.handle(topic or topic_of(message), device.seal(message, key))

    def twin(self, device_id: str = DEV) -> Twin | None:
        with self.sessions() as session:
            return session.get(Twin, device_id)

    def count(self, model: Any, device_id: str = DEV) -> int:
        with self.sessions() as session:
            return (
                session.scalar(
                    select(func.count()).select_from(model).where(model.device_id == device_id)
                )
                or 0
            )

    def snapshot(self, device_id: str = DEV) -> dict[str, Any]:
        twin = self.twin(device_id)
        columns = {c.key: getattr(twin, c.key) for c in Twin.__table__.columns} if twin else None
        tables = (Uplink, Sample, TwinValue, Alarm, Gap, ThreadEvent)
        return {"twin": columns, **{m.__name__: self.count(m, device_id) for m in tables}}


@contextmanager
def open_world(db_url: str) -> Iterator[World]:
    """Two registered devices and an ingest on a fake clock, over `db_url`."""
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    clock = FakeClock()
    queries: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    ingest = Ingest(sessions, clock, CloudSettings(db_url=db_url), sleep=lambda _: None)
    dev = register(sessions, DEV)
    other = register(sessions, OTHER)
    yield World(sessions, clock, ingest, dev, other, queries)
    engine.dispose()
