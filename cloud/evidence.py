"""Evidence kept by the cloud: the thread's hash chain, signed checkpoints, and the devices'
own signed envelopes (`protocols.proof` has the rules a bundle is checked by).

* `link` gives each new thread event its place in its chain (the boiler's, or ``fleet``):
  the chain's head row is locked, so events appended by concurrent transactions still form
  one line.
* `checkpoint_all` (run by ``cloud serve`` every `CloudSettings.checkpoint_interval_s`) signs
  the head of every chain that moved with the cloud's command key; `checkpoint` does one on
  demand (a proof bundle ends at a fresh one).
* `check_chain` walks a chain from its start and reports the first broken link, or a
  checkpoint the chain no longer matches (``boilertwin cloud thread check``).
* `prune_envelopes` clears envelopes older than `CloudSettings.evidence_keep_days`; the
  ``uplinks`` rows stay (they are ingest's idempotency keys), only the bytes go.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import cbor2
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.evidence_models import ThreadCheckpoint, ThreadHead
from cloud.keys import CommandKey
from cloud.models import ThreadEvent, Uplink
from cloud.twin.rows import dialect_insert
from protocols.cose import sign, verify
from protocols.errors import ProtocolError
from protocols.proof import FLEET_CHAIN, GENESIS, checkpoint_payload, event_hash, first_broken

log = logging.getLogger(__name__)

PAGE = 2_000


def chain_of(device_id: str | None) -> str:
    return device_id or FLEET_CHAIN


def event_json(event: ThreadEvent) -> dict[str, Any]:
    """An event as `protocols.proof` hashes it (and a bundle's ``thread.json`` holds it)."""
    return {
        "chain": chain_of(event.device_id),
        "chain_seq": event.chain_seq,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "id": event.id,
        "device_id": event.device_id,
        "kind": event.kind,
        "ts_ms": event.ts_ms,
        "recorded_ms": event.recorded_ms,
        "actor": event.actor,
        "subject": event.subject,
        "data": event.data or {},
    }


def link(session: Session, event: ThreadEvent) -> None:
    """Chain `event` (not yet flushed) after its chain's head, in the caller's transaction."""
    chain = chain_of(event.device_id)
    head = _locked_head(session, chain)
    event.chain_seq = head.seq + 1
    event.prev_hash = head.hash
    event.hash = event_hash(event_json(event))
    head.seq, head.hash = event.chain_seq, event.hash


def _locked_head(session: Session, chain: str) -> ThreadHead:
    head = session.scalars(
        select(ThreadHead).where(ThreadHead.chain == chain).with_for_update()
    ).first()
    if head is not None:
        return head
    session.execute(
        dialect_insert(session)(ThreadHead)
        .values(chain=chain, seq=0, hash=GENESIS, checkpointed_seq=0)
        .on_conflict_do_nothing(index_elements=["chain"])
    )
    return session.scalars(
        select(ThreadHead).where(ThreadHead.chain == chain).with_for_update()
    ).one()


def checkpoint(session: Session, key: CommandKey, chain: str, now_ms: int) -> ThreadCheckpoint:
    """Sign the chain's head now (or return the newest checkpoint if it is the head)."""
    head = _locked_head(session, chain)
    if head.checkpointed_seq == head.seq and head.seq > 0:
        newest = session.scalars(
            select(ThreadCheckpoint)
            .where(ThreadCheckpoint.chain == chain, ThreadCheckpoint.seq == head.seq)
            .order_by(ThreadCheckpoint.id.desc())
        ).first()
        if newest is not None and newest.kid == key.kid:
            return newest
    envelope = sign(checkpoint_payload(chain, head.seq, head.hash, now_ms), key.key, key.kid)
    row = ThreadCheckpoint(
        chain=chain,
        seq=head.seq,
        hash=head.hash,
        kid=key.kid,
        envelope=envelope,
        created_ms=now_ms,
    )
    session.add(row)
    head.checkpointed_seq = head.seq
    return row


def checkpoint_all(session: Session, key: CommandKey, now_ms: int, limit: int = 10_000) -> int:
    """Checkpoint every chain that moved since its last checkpoint; how many."""
    chains = session.scalars(
        select(ThreadHead.chain)
        .where(ThreadHead.seq > ThreadHead.checkpointed_seq)
        .order_by(ThreadHead.chain)
        .limit(limit)
    ).all()
    for chain in chains:
        checkpoint(session, key, chain, now_ms)
    if chains:
        log.info("thread checkpoints: %d chain(s) signed", len(chains))
    return len(chains)


def chain_events(session: Session, chain: str, first_seq: int = 1) -> Iterator[ThreadEvent]:
    """The chain's events from `first_seq` on, in order, a page at a time."""
    device = None if chain == FLEET_CHAIN else chain
    after = first_seq - 1
    while True:
        where = (
            ThreadEvent.device_id.is_(None) if device is None else ThreadEvent.device_id == device
        )
        rows = session.scalars(
            select(ThreadEvent)
            .where(where, ThreadEvent.chain_seq > after)
            .order_by(ThreadEvent.chain_seq)
            .limit(PAGE)
        ).all()
        yield from rows
        if len(rows) < PAGE:
            return
        after = int(rows[-1].chain_seq or after)


def check_chain(session: Session, chain: str, keys: dict[str, Any]) -> str | None:
    """The first thing wrong with `chain` (a broken link, a checkpoint it no longer
    matches, a checkpoint whose signature fails), or None. `keys`: cloud kid -> public key."""
    hashes: dict[int, str] = {}
    prev: str | None = GENESIS
    batch: list[dict[str, Any]] = []
    for event in chain_events(session, chain):
        batch.append(event_json(event))
        if len(batch) >= PAGE:
            broken = first_broken(batch, prev)
            if broken:
                return broken
            prev = batch[-1]["hash"]
            hashes.update({e["chain_seq"]: e["hash"] for e in batch})
            batch = []
    broken = first_broken(batch, prev)
    if broken:
        return broken
    hashes.update({e["chain_seq"]: e["hash"] for e in batch})
    for row in session.scalars(
        select(ThreadCheckpoint)
        .where(ThreadCheckpoint.chain == chain)
        .order_by(ThreadCheckpoint.id)
    ):
        where = f"checkpoint {chain}#{row.seq} ({row.created_ms})"
        try:
            signed = cbor2.loads(verify(row.envelope, keys).payload)
        except (ProtocolError, ValueError) as exc:
            return f"{where}: its signature does not verify ({exc})"
        if (signed.get("seq"), signed.get("hash")) != (row.seq, row.hash):
            return f"{where}: its row differs from what was signed"
        if hashes.get(row.seq) != row.hash:
            return f"{where}: the chain's event #{row.seq} is not the one that was signed"
    return None


def chains(session: Session) -> list[str]:
    return list(session.scalars(select(ThreadHead.chain).order_by(ThreadHead.chain)))


def prune_envelopes(session: Session, before_ms: int) -> int:
    """Clear the envelopes of uplinks received before `before_ms`; how many."""
    result = session.execute(
        update(Uplink)
        .where(Uplink.received_ms < before_ms, Uplink.envelope.is_not(None))
        .values(envelope=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
