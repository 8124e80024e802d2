"""The thread's hash chain and checkpoints on SQLite and PostgreSQL (`cloud.evidence`):
every event is linked to the one before it in its boiler's chain, concurrent writers still
make one line, and any change to a stored event, a removed event or a chain rewritten from
the start is found, naming the first broken link."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud import evidence, thread
from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.evidence_models import ThreadCheckpoint
from cloud.keys import keygen
from cloud.models import ThreadEvent, Uplink
from protocols.proof import GENESIS, event_hash

T0 = 1_790_000_000_000


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def record(
    sessions: sessionmaker[Session], device: str | None, n: int, kind: str = "alarm"
) -> None:
    for i in range(n):
        with transaction(sessions) as session:
            thread.record(
                session,
                device_id=device,
                kind=kind,
                ts_ms=T0 + i,
                recorded_ms=T0 + i,
                actor="cloud",
                data={"i": i, "text": "é ü", "value": 1.5},
            )


def keys_of(key: evidence.CommandKey) -> dict[str, object]:
    return {key.kid: key.key.public_key()}


def test_each_chain_links_its_events_in_order(sessions: sessionmaker[Session]) -> None:
    record(sessions, "boiler-a", 3)
    record(sessions, "boiler-b", 2)
    record(sessions, None, 2, kind="rollout")
    with sessions() as session:
        rows = session.scalars(select(ThreadEvent).order_by(ThreadEvent.id)).all()
        by_chain: dict[str, list[ThreadEvent]] = {}
        for row in rows:
            by_chain.setdefault(evidence.chain_of(row.device_id), []).append(row)
        assert {c: [e.chain_seq for e in es] for c, es in by_chain.items()} == {
            "boiler-a": [1, 2, 3],
            "boiler-b": [1, 2],
            "fleet": [1, 2],
        }
        for events in by_chain.values():
            assert events[0].prev_hash == GENESIS
            for before, after in itertools.pairwise(events):
                assert after.prev_hash == before.hash
            for event in events:
                assert event.hash == event_hash(evidence.event_json(event))
        assert evidence.chains(session) == ["boiler-a", "boiler-b", "fleet"]
        for chain in evidence.chains(session):
            assert evidence.check_chain(session, chain, {}) is None


def test_concurrent_writers_make_one_line(sessions: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            record(sessions, "boiler-a", 15)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sessions() as session:
        seqs = sorted(
            session.scalars(
                select(ThreadEvent.chain_seq).where(ThreadEvent.device_id == "boiler-a")
            )
        )
        assert seqs == list(range(1, 61))
        assert evidence.check_chain(session, "boiler-a", {}) is None


def test_a_changed_or_removed_event_is_found(sessions: sessionmaker[Session]) -> None:
    record(sessions, "boiler-a", 5)
    with transaction(sessions) as session:
        session.execute(
            update(ThreadEvent)
            .where(ThreadEvent.device_id == "boiler-a", ThreadEvent.chain_seq == 3)
            .values(data={"i": 2, "text": "é ü", "value": 2.5})
        )
    with sessions() as session:
        assert evidence.check_chain(session, "boiler-a", {}) == (
            "event boiler-a#3: its content does not match its hash (changed after it was recorded)"
        )
    with transaction(sessions) as session:
        session.execute(
            delete(ThreadEvent).where(
                ThreadEvent.device_id == "boiler-a", ThreadEvent.chain_seq == 3
            )
        )
    with sessions() as session:
        assert evidence.check_chain(session, "boiler-a", {}) == (
            "event boiler-a#4: follows #2 (an event is missing or out of order)"
        )


def test_a_rewritten_chain_is_caught_by_its_signed_checkpoint(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    key = keygen(tmp_path / "keys", "cloud-1")
    record(sessions, "boiler-a", 4)
    record(sessions, "boiler-b", 1)
    with transaction(sessions) as session:
        assert evidence.checkpoint_all(session, key, T0) == 2
    with transaction(sessions) as session:
        assert evidence.checkpoint_all(session, key, T0 + 1) == 0  # nothing moved
    record(sessions, "boiler-a", 1)
    with transaction(sessions) as session:
        assert evidence.checkpoint_all(session, key, T0 + 2) == 1
    with sessions() as session:
        assert evidence.check_chain(session, "boiler-a", keys_of(key)) is None
    # someone with database access rewrites event 2 and re-hashes everything after it
    with transaction(sessions) as session:
        events = list(evidence.chain_events(session, "boiler-a"))
        events[1].data = {"i": 99}
        for before, event in itertools.pairwise(events):
            event.prev_hash = before.hash
            event.hash = event_hash(evidence.event_json(event))
    with sessions() as session:
        found = evidence.check_chain(session, "boiler-a", keys_of(key))
        assert found is not None
        assert found.startswith("checkpoint boiler-a#4") and "not the one that was signed" in found
    # a forged checkpoint row does not verify
    with transaction(sessions) as session:
        session.execute(update(ThreadCheckpoint).values(envelope=b"\xd2\x84"))
    with sessions() as session:
        assert "signature does not verify" in str(
            evidence.check_chain(session, "boiler-b", keys_of(key))
        )


def test_old_envelopes_are_pruned_and_the_uplinks_kept(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        for seq, received in ((1, T0), (2, T0 + 10), (3, T0 + 20)):
            session.add(
                Uplink(
                    device_id="boiler-a",
                    seq=seq,
                    epoch=1,
                    kind="data",
                    ts_ms=received,
                    received_ms=received,
                    envelope=b"signed",
                )
            )
    with transaction(sessions) as session:
        assert evidence.prune_envelopes(session, T0 + 15) == 2
    with sessions() as session:
        kept = dict(session.execute(select(Uplink.seq, Uplink.envelope)).all())
    assert kept == {1: None, 2: None, 3: b"signed"}
