"""The real cloud as the evaluation's twin under test (``boilertwin sim evaluate``).

`LocalTwin` registers the evaluation fleet's boilers, hands every signed message to the real
`Ingest` (verify, decode, store, twin, alarms, in batches as the MQTT session does) and runs
the real `Predictor` on the same database, on the simulated clock. It has the shape the
simulator's `TwinUnderTest` asks for; nothing here knows the simulator.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cloud.db import make_engine, session_factory, transaction, upgrade
from cloud.ingest import Ingest, Message
from cloud.models import Prediction
from cloud.predict.rules import DetectorRules, packaged_rules
from cloud.predict.runner import Predictor
from cloud.registry import add_device
from cloud.settings import CloudSettings
from protocols.cose import public_key_from_raw

BATCH = 200
"""Messages per ingest transaction (the MQTT session's group commit under load)."""


@dataclass(frozen=True, slots=True)
class Raised:
    """A warning as the evaluation scores it."""

    device_id: str
    mode: str
    raised_ms: int


class LocalTwin:
    """Ingest and predictor on one database (SQLite by default), on simulated time."""

    def __init__(self, db_url: str, rules: DetectorRules | None = None) -> None:
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self.sessions = session_factory(self.engine)
        self.now_ms = 0
        self.ingest = Ingest(self.sessions, lambda: self.now_ms, CloudSettings(db_url=db_url))
        self.predictor = Predictor(self.sessions, rules or packaged_rules(), lambda: self.now_ms)
        self.ingest_cpu_s = 0.0
        self.messages = 0
        self.outcomes: dict[str, int] = {}

    @classmethod
    def in_directory(cls, directory: Path, rules: DetectorRules | None = None) -> LocalTwin:
        """A fresh SQLite database in `directory`."""
        return cls(f"sqlite:///{directory / 'evaluation.db'}", rules)

    def register(self, devices: Sequence[tuple[str, bytes, str]]) -> None:
        """Add every boiler with its raw Ed25519 public key and model."""
        with transaction(self.sessions) as session:
            for device_id, raw, model in devices:
                add_device(
                    session,
                    device_id,
                    public_key_from_raw(raw),
                    now_ms=self.now_ms,
                    model=model,
                    known_new=True,
                )

    def deliver(self, uplinks: Any) -> None:
        """Ingest ``uplinks.messages`` ((topic, envelope) pairs) at ``uplinks.now_ms``."""
        self.now_ms = uplinks.now_ms
        messages = [Message(name, payload) for name, payload in uplinks.messages]
        cpu = time.process_time()
        for i in range(0, len(messages), BATCH):
            for result in self.ingest.handle_many(messages[i : i + BATCH]):
                self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        self.ingest_cpu_s += time.process_time() - cpu
        self.messages += len(messages)

    def warnings(self, now_ms: int) -> list[Raised]:
        """Run the predictor for every day closed by `now_ms`; every warning raised so far."""
        self.now_ms = max(self.now_ms, now_ms)
        self.predictor.run_due()
        with self.sessions() as session:
            rows = session.execute(
                select(Prediction.device_id, Prediction.mode, Prediction.raised_ms)
            )
            return [Raised(*row) for row in rows]

    def close(self) -> None:
        self.engine.dispose()
