"""Proof bundles, pure: the digital thread's hash chain and the offline check of a bundle.

**The chain.** Every thread event belongs to a chain (its boiler's id; ``fleet`` for events
about no boiler) and carries its place in it (``chain_seq``, from 1), the hash of the event
before it (``prev_hash``; 64 zeros for the first) and its own ``hash``: SHA-256 of the
canonical JSON (sorted keys, no spaces, UTF-8) of `LINKED` fields. Changing, removing or
reordering any event changes every hash after it. A **checkpoint** is a COSE_Sign1 by the
cloud's command key over the CBOR map ``{"chain", "seq", "hash", "ts"}``: the head of a
chain at a moment, which no one without the key can move.

**A bundle** is a canonical zip (`cloud.proof_zip`) of these files (`check_files`):

* ``manifest.cose``: COSE_Sign1 (cloud key) over JSON ``{"job", "created_ms", "files":
  {name: sha256}}`` naming every other file;
* ``thread.json``: a contiguous segment of the boiler's chain, from the job's first event
  to the checkpoint, each event with its chain fields;
* ``checkpoint.cose``: the checkpoint the segment ends at;
* ``envelopes/*.cose``: the device's own signed messages the story rests on (alarms, acks,
  readings around the fault and the verification), ``commands/*.cose``: the cloud's signed
  commands; ``keys/*.pem``: the public keys in force (``device-<kid>.pem``,
  ``cloud-<kid>.pem``); ``README.md`` and ``audit.json`` (who did what, for the job).

`check_files` reports every problem it finds, naming the file and, for the chain, the
first event whose link is broken. Trust comes from outside the bundle: pass the cloud key you
know (its fingerprint is in the manufacturer's documentation) and a bundle signed by any
other key fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.cose import public_key_from_pem, verify
from protocols.errors import ProtocolError

GENESIS = "0" * 64
"""The ``prev_hash`` of a chain's first event."""
FLEET_CHAIN = "fleet"
"""The chain of events about no one boiler (rollouts)."""
LINKED = ("chain", "chain_seq", "prev_hash", "kind", "ts_ms", "recorded_ms", "actor", "subject")
"""The fields an event's hash covers, with its ``data``."""


def canonical(value: Any) -> bytes:
    """The JSON bytes hashed and signed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash of one chained event (a mapping with `LINKED` fields and ``data``)."""
    body = {name: event.get(name) for name in LINKED} | {"data": event.get("data") or {}}
    return hashlib.sha256(canonical(body)).hexdigest()


def first_broken(events: Sequence[Mapping[str, Any]], start_prev: str | None = None) -> str | None:
    """Why the first event whose link does not hold fails, or None if the segment holds.
    `start_prev`: what the first event's ``prev_hash`` must be (None: anything). A
    ``redacted`` event (another job's, in a bundle) is checked as a link only."""
    prev = start_prev
    seq: int | None = None
    for event in events:
        where = f"event {event.get('chain')}#{event.get('chain_seq')}"
        if seq is not None and event.get("chain_seq") != seq + 1:
            return f"{where}: follows #{seq} (an event is missing or out of order)"
        if prev is not None and event.get("prev_hash") != prev:
            return f"{where}: its prev_hash is not the hash of the event before it"
        if not event.get("redacted") and event_hash(event) != event.get("hash"):
            return f"{where}: its content does not match its hash (changed after it was recorded)"
        prev, seq = str(event["hash"]), int(event["chain_seq"])
    return None


def checkpoint_payload(chain: str, seq: int, head: str, ts_ms: int) -> bytes:
    return cbor2.dumps({"chain": chain, "seq": seq, "hash": head, "ts": ts_ms}, canonical=True)


@dataclass
class Report:
    """What a check found: `problems` empty means the bundle holds."""

    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    job: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(self.checked.items()))
        if self.ok:
            return [f"proof bundle for job {self.job}: valid ({counts})"]
        return [f"proof bundle for job {self.job}: INVALID", *(f"  - {p}" for p in self.problems)]


def check_files(
    files: Mapping[str, bytes],
    cloud_key: Ed25519PublicKey | None = None,
    report: Report | None = None,
) -> Report:
    """Check a bundle's files offline; see the module docs. `cloud_key`: the key the
    manufacturer's signatures must verify with (None: the bundle's own ``keys/cloud-*.pem``,
    which proves integrity but not origin). The container (the zip) is checked by
    `cloud.proof_zip.check_bundle`, which calls this with what it found so far."""
    report = report if report is not None else Report()
    files = dict(files)
    keys = _keys(files, report)
    cloud = {kid: k for kid, k in keys.items() if kid.startswith("cloud:")}
    if cloud_key is not None:
        cloud = {"cloud:given": cloud_key}
    manifest = _manifest(files, cloud, report)
    if manifest is None:
        return report
    report.job = str(manifest.get("job"))
    listed = manifest.get("files", {})
    for name in sorted(set(files) - {"manifest.cose"}):
        if name not in listed:
            report.problems.append(f"{name}: not listed in the signed manifest (added)")
        elif hashlib.sha256(files[name]).hexdigest() != listed[name]:
            report.problems.append(f"{name}: its bytes differ from the signed manifest's hash")
    for name in sorted(set(listed) - set(files)):
        report.problems.append(f"{name}: listed in the signed manifest but missing")
    report.checked["files"] = len(listed)
    _check_thread(files, cloud, report)
    _check_envelopes(files, keys, cloud, report)
    return report


def _keys(files: dict[str, bytes], report: Report) -> dict[str, Ed25519PublicKey]:
    """``keys/device-<kid>.pem`` as ``device:<kid>``, ``keys/cloud-<kid>.pem`` as
    ``cloud:<kid>``."""
    keys: dict[str, Ed25519PublicKey] = {}
    for name, body in files.items():
        if not (name.startswith("keys/") and name.endswith(".pem")):
            continue
        stem = name[len("keys/") : -len(".pem")]
        owner, _, kid = stem.partition("-")
        try:
            keys[f"{owner}:{kid}"] = public_key_from_pem(body)
        except (ProtocolError, ValueError) as exc:
            report.problems.append(f"{name}: not an Ed25519 public key ({exc})")
    return keys


def _manifest(
    files: dict[str, bytes], cloud: dict[str, Ed25519PublicKey], report: Report
) -> dict[str, Any] | None:
    body = files.get("manifest.cose")
    if body is None:
        report.problems.append("manifest.cose: missing")
        return None
    try:
        opened = verify(body, _any_of(cloud))
        manifest = json.loads(opened.payload)
    except (ProtocolError, ValueError) as exc:
        report.problems.append(f"manifest.cose: does not verify with the cloud key ({exc})")
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        report.problems.append("manifest.cose: not a manifest")
        return None
    return manifest


def _any_of(keys: Mapping[str, Ed25519PublicKey]) -> Any:
    """A kid lookup that tries every given key under its own kid (``cloud:<kid>``) or, when
    the verifier supplied one key, for any kid."""
    if "cloud:given" in keys:
        return lambda kid: keys["cloud:given"]
    return lambda kid: keys.get(f"cloud:{kid}")


def _check_thread(
    files: dict[str, bytes], cloud: dict[str, Ed25519PublicKey], report: Report
) -> None:
    try:
        events = json.loads(files.get("thread.json", b"null"))
        assert isinstance(events, list) and events
    except (ValueError, AssertionError):
        report.problems.append("thread.json: missing, empty or not a list of events")
        return
    broken = first_broken(events)
    if broken:
        report.problems.append(f"thread.json: {broken}")
    report.checked["thread events"] = len(events)
    try:
        opened = verify(files.get("checkpoint.cose", b""), _any_of(cloud))
        point = cbor2.loads(opened.payload)
    except (ProtocolError, ValueError, cbor2.CBORDecodeError) as exc:
        report.problems.append(f"checkpoint.cose: does not verify with the cloud key ({exc})")
        return
    last = events[-1]
    anchored = (point.get("chain"), point.get("seq"), point.get("hash"))
    if anchored != (last.get("chain"), last.get("chain_seq"), last.get("hash")):
        report.problems.append(
            "checkpoint.cose: the signed head is not the segment's last event "
            f"({point.get('chain')}#{point.get('seq')})"
        )


def _check_envelopes(
    files: dict[str, bytes],
    keys: dict[str, Ed25519PublicKey],
    cloud: dict[str, Ed25519PublicKey],
    report: Report,
) -> None:
    devices = [k for kid, k in keys.items() if kid.startswith("device:")]
    envelopes = sorted(n for n in files if n.startswith("envelopes/") and n.endswith(".cose"))
    for name in envelopes:
        if not any(_verifies(files[name], lambda kid, k=key: k) for key in devices):
            report.problems.append(f"{name}: signature does not verify with the device's keys")
    report.checked["device envelopes"] = len(envelopes)
    commands = sorted(n for n in files if n.startswith("commands/") and n.endswith(".cose"))
    for name in commands:
        if not _verifies(files[name], _any_of(cloud)):
            report.problems.append(f"{name}: signature does not verify with the cloud key")
    report.checked["signed commands"] = len(commands)


def _verifies(envelope: bytes, lookup: Any) -> bool:
    try:
        verify(envelope, lookup)
    except ProtocolError:
        return False
    return True
