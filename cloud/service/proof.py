"""A job's proof bundle: what was wrong and what was fixed, checkable by anyone offline
(`protocols.proof` has the format and the check; ``boilertwin verify-proof`` runs it).

The bundle holds the boiler's thread from the job's first event to a checkpoint signed at
export, the device's own signed messages around the fault (the two hours before the request)
and around the repair (from ten minutes before the completion report to the verification),
every alarm and acknowledgement in between, the signed commands sent to the boiler during the
job, and the public keys in force. Events of *other* jobs on the same boiler appear as links
only (chain fields and hash, no content): the chain stays checkable and no one learns about
someone else's job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud import evidence, thread
from cloud.domain import Caller, Role
from cloud.errors import Conflict, Forbidden
from cloud.evidence_models import AuditEntry
from cloud.keys import CommandKey
from cloud.models import Command, DeviceKey, Job, ThreadEvent, Uplink
from cloud.proof_zip import pack
from cloud.service.views import visible_job
from protocols.cose import public_key_from_raw, public_key_to_pem, sign
from protocols.proof import canonical

BEFORE_FAULT_MS = 2 * 3_600_000
BEFORE_REPAIR_MS = 10 * 60_000
SIGNAL_KINDS = ("event", "ack", "birth")
"""Uplink kinds kept for the whole job, not only in the two windows."""
MAX_ENVELOPES = 5_000
README = """# Proof bundle for job {job}

Boiler {device}. Exported {created} (ms since 1970, UTC) by {exporter}.

* `thread.json`: the boiler's digital thread from this job's first event to the checkpoint,
  each event chained to the one before it by SHA-256 (`prev_hash`, `hash`). Events of other
  jobs on this boiler are present as links only (`"redacted": true`).
* `checkpoint.cose`: the chain's head signed by the manufacturer's cloud (COSE_Sign1,
  Ed25519) over the CBOR map {{chain, seq, hash, ts}}.
* `envelopes/<seq>.cose`: the boiler gateway's own signed messages (COSE_Sign1, Ed25519,
  kid = the boiler's id), by sequence number: alarms, acknowledgements, and readings around
  the fault and around the repair.
* `commands/<id>.cose`: the commands the cloud signed and sent to the boiler.
* `keys/`: the public keys in force (`device-...pem`, `cloud-<kid>.pem`).
* `audit.json`: every request that changed this job through the API or the portal: who, as
  what role, when, what, from which address, and how it ended.
* `manifest.cose`: the SHA-256 of every other file, signed by the cloud.

Check it with `boilertwin verify-proof <this file> --cloud-key <the manufacturer's key>`,
or with any COSE library: every `.cose` file is a tagged COSE_Sign1 with an attached payload.
Rules: the project's docs/proof.md.
"""


def export(
    session: Session, caller: Caller, job_id: str, *, key: CommandKey, keys_dir: Path, now_ms: int
) -> bytes:
    """The bundle of a job `caller` may see: staff, its owner, tenant or requester, and its
    contracted engineer (an engineer only invited to quote may not)."""
    job = visible_job(session, caller, job_id)
    if caller.role is Role.ENGINEER and job.engineer_id != caller.user_id:
        raise Forbidden("only the job's contracted engineer may export its proof", job_id=job_id)
    return build_bundle(
        session, job, key=key, keys_dir=keys_dir, now_ms=now_ms, exporter=caller.user_id
    )


def attachment(job_id: str) -> dict[str, str]:
    """The response headers of a bundle download."""
    return {"Content-Disposition": f'attachment; filename="proof-{job_id}.zip"'}


def build_bundle(
    session: Session,
    job: Job,
    *,
    key: CommandKey,
    keys_dir: Path,
    now_ms: int,
    exporter: str,
) -> bytes:
    """The zip; signs a fresh checkpoint of the boiler's chain in the caller's transaction."""
    device_id = job.device_id
    first = session.scalar(
        select(ThreadEvent.chain_seq)
        .where(
            ThreadEvent.device_id == device_id,
            ThreadEvent.subject == job.id,
            ThreadEvent.chain_seq.is_not(None),
        )
        .order_by(ThreadEvent.chain_seq)
        .limit(1)
    )
    if first is None:
        raise Conflict(
            f"job {job.id} was recorded before the thread was chained: no proof can be made",
            job_id=job.id,
        )
    point = evidence.checkpoint(session, key, evidence.chain_of(device_id), now_ms)
    session.flush()
    events = [
        _shown(event, job.id)
        for event in evidence.chain_events(session, evidence.chain_of(device_id), first)
        if event.chain_seq is not None and event.chain_seq <= point.seq
    ]
    files: dict[str, bytes] = {
        "README.md": README.format(
            job=job.id, device=device_id, created=now_ms, exporter=exporter
        ).encode(),
        "thread.json": json.dumps(events, indent=1, ensure_ascii=False).encode(),
        "checkpoint.cose": point.envelope,
    }
    end = job.verified_ms or now_ms
    for seq, envelope in _envelopes(session, job, end):
        files[f"envelopes/{seq:012d}.cose"] = envelope
    for command in session.scalars(
        select(Command).where(
            Command.device_id == device_id,
            Command.created_ms >= job.created_ms,
            Command.created_ms <= end,
        )
    ):
        files[f"commands/{command.id}.cose"] = command.envelope
    for n, row in enumerate(
        session.scalars(
            select(DeviceKey).where(DeviceKey.device_id == device_id).order_by(DeviceKey.id)
        ),
        start=1,
    ):
        files[f"keys/device-{device_id}~{n}.pem"] = public_key_to_pem(
            public_key_from_raw(row.public_key)
        )
    audit = session.scalars(
        select(AuditEntry).where(AuditEntry.job_id == job.id).order_by(AuditEntry.id)
    )
    files["audit.json"] = json.dumps(
        [audit_json(entry) for entry in audit], indent=1, ensure_ascii=False
    ).encode()
    for pem in sorted(keys_dir.glob("*.pem")):
        files[f"keys/cloud-{pem.stem}.pem"] = pem.read_bytes()
    manifest = {
        "job": job.id,
        "device": device_id,
        "created_ms": now_ms,
        "files": {name: _sha256(body) for name, body in sorted(files.items())},
    }
    files["manifest.cose"] = sign(canonical(manifest), key.key, key.kid)
    return pack(files)


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the bundle's ``audit.json`` holds it."""
    return {
        "ts": entry.ts_ms,
        "actor": entry.actor,
        "role": entry.role,
        "action": f"{entry.method} {entry.route}",
        "address": entry.address,
        "status": entry.status,
        "outcome": entry.outcome,
    }


def _shown(event: ThreadEvent, job_id: str) -> dict[str, Any]:
    """An event in full, or as a link only if it belongs to another job."""
    body = evidence.event_json(event)
    other_job = event.subject not in (None, job_id) and event.kind not in thread.BOILER_KINDS
    if not other_job:
        return body
    return {k: body[k] for k in ("chain", "chain_seq", "prev_hash", "hash")} | {"redacted": True}


def _envelopes(session: Session, job: Job, end_ms: int) -> list[tuple[int, bytes]]:
    start = job.created_ms - BEFORE_FAULT_MS
    windows = [Uplink.received_ms.between(start, job.created_ms)]
    if job.completed_ms is not None:
        windows.append(Uplink.received_ms.between(job.completed_ms - BEFORE_REPAIR_MS, end_ms))
    signals = Uplink.kind.in_(SIGNAL_KINDS) & Uplink.received_ms.between(start, end_ms)
    rows = session.execute(
        select(Uplink.seq, Uplink.envelope)
        .where(
            Uplink.device_id == job.device_id,
            Uplink.envelope.is_not(None),
            or_(signals, *windows),
        )
        .order_by(Uplink.seq)
        .limit(MAX_ENVELOPES)
    ).all()
    return [(int(seq), bytes(envelope)) for seq, envelope in rows if envelope is not None]


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
