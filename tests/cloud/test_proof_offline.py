"""Proof bundles checked offline (`protocols.proof`, `cloud.proof_zip`), on a bundle made
here from real keys and signatures: a sound bundle holds, an independent COSE implementation
(pycose) verifies every envelope in it, and a changed byte anywhere (in any file, in the zip's
own structure) is reported; so are a rewritten thread, a missing or added file, a signature by
another key. The bundle the cloud exports for a real repair is checked the same way in
`tests/cloud/test_service_stack.py`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pycose.algorithms import CoseAlgorithm, EdDSA
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from cloud.proof_zip import check_bundle, pack
from protocols.cose import (
    generate_private_key,
    public_key_from_pem,
    public_key_to_pem,
    public_key_to_raw,
    sign,
)
from protocols.proof import (
    GENESIS,
    canonical,
    checkpoint_payload,
    event_hash,
)

ROOT = Path(__file__).resolve().parents[2]
DEVICE, CLOUD_KID = "boiler-0001", "cloud-1"
DEVICE_KEY, CLOUD_KEY = generate_private_key(), generate_private_key()


@CoseAlgorithm.register_attribute()
class Ed25519Algorithm(EdDSA):
    """pycose 1.1 predates RFC 9864's fully-specified id -19 for Ed25519 (our default): it is
    taught the id here; the signature check is pycose's own EdDSA."""

    identifier = -19
    fullname = "ED25519"


def chained(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prev = GENESIS
    out = []
    for seq, event in enumerate(events, start=1):
        linked = {"chain": DEVICE, "chain_seq": seq, "prev_hash": prev} | event
        linked["hash"] = event_hash(linked)
        prev = linked["hash"]
        out.append(linked)
    return out


def make_files(cloud_key: Ed25519PrivateKey = CLOUD_KEY) -> dict[str, bytes]:
    events = chained(
        [
            {
                "kind": "alarm",
                "ts_ms": 1,
                "recorded_ms": 2,
                "actor": "device:x",
                "subject": None,
                "data": {"fault": "F28", "seq": 7},
            },
            {
                "kind": "service_request",
                "ts_ms": 3,
                "recorded_ms": 3,
                "actor": "tina",
                "subject": "job-1",
                "data": {"problem": "no heat", "cost": 85.5},
            },
            {
                "kind": "command",
                "ts_ms": 4,
                "recorded_ms": 4,
                "actor": "eve",
                "subject": "cmd-1",
                "data": {"name": "restart"},
            },
        ]
    )
    last = events[-1]
    files = {
        "README.md": b"# Proof bundle\n",
        "thread.json": json.dumps(events).encode(),
        "checkpoint.cose": sign(
            checkpoint_payload(DEVICE, last["chain_seq"], last["hash"], 5), cloud_key, CLOUD_KID
        ),
        "envelopes/000000000007.cose": sign(b"\xa1\x63seq\x07", DEVICE_KEY, DEVICE),
        "envelopes/000000000008.cose": sign(b"\xa1\x63ack\x01", DEVICE_KEY, DEVICE),
        "commands/cmd-1.cose": sign(b"\xa1\x64name\x67restart", cloud_key, CLOUD_KID),
        f"keys/device-{DEVICE}~1.pem": public_key_to_pem(DEVICE_KEY.public_key()),
        f"keys/cloud-{CLOUD_KID}.pem": public_key_to_pem(cloud_key.public_key()),
    }
    return files


def bundle_of(files: dict[str, bytes], cloud_key: Ed25519PrivateKey = CLOUD_KEY) -> bytes:
    manifest = {
        "job": "job-1",
        "created_ms": 5,
        "files": {
            name: __import__("hashlib").sha256(body).hexdigest() for name, body in files.items()
        },
    }
    return pack(files | {"manifest.cose": sign(canonical(manifest), cloud_key, CLOUD_KID)})


def pycose_verifies_every_envelope(bundle: bytes) -> int:
    """Every ``.cose`` file of `bundle` verified by pycose with the bundle's keys; how many."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    cloud = [public_key_from_pem(b) for n, b in files.items() if n.startswith("keys/cloud-")]
    device = [public_key_from_pem(b) for n, b in files.items() if n.startswith("keys/device-")]
    checked = 0
    for name, body in sorted(files.items()):
        if not name.endswith(".cose"):
            continue
        keys = device if name.startswith("envelopes/") else cloud
        assert any(_pycose_verifies(body, key) for key in keys), f"pycose rejects {name}"
        checked += 1
    return checked


def _pycose_verifies(envelope: bytes, key: Ed25519PublicKey) -> bool:
    message = Sign1Message.decode(envelope)
    message.key = OKPKey(crv=Ed25519, x=public_key_to_raw(key))
    return bool(message.verify_signature())


def test_a_sound_bundle_holds_and_pycose_verifies_each_envelope() -> None:
    bundle = bundle_of(make_files())
    report = check_bundle(bundle, CLOUD_KEY.public_key())
    assert report.ok, report.problems
    assert report.job == "job-1"
    assert report.checked == {
        "files": 8,
        "thread events": 3,
        "device envelopes": 2,
        "signed commands": 1,
    }
    assert pycose_verifies_every_envelope(bundle) == 5  # 2 device, 1 command, checkpoint, manifest


def test_a_changed_byte_anywhere_is_reported() -> None:
    bundle = bundle_of(make_files())
    key = CLOUD_KEY.public_key()
    step = max(1, len(bundle) // 400)
    positions = sorted({*range(0, len(bundle), step), *range(len(bundle) - 120, len(bundle))})
    missed = []
    for at in positions:
        changed = bytearray(bundle)
        changed[at] ^= 0x01
        if check_bundle(bytes(changed), key).ok:
            missed.append(at)
    assert missed == [], f"changed bytes not reported at {missed[:10]}"


def test_each_kind_of_tampering_is_named() -> None:
    key = CLOUD_KEY.public_key()
    files = make_files()
    # a file changed after signing
    changed = dict(files, **{"README.md": b"# Proof bundle (edited)\n"})
    manifest = _unpacked(bundle_of(files))["manifest.cose"]
    report = check_bundle(pack(changed | {"manifest.cose": manifest}), key)
    assert report.problems == ["README.md: its bytes differ from the signed manifest's hash"]
    # a file removed, a file added
    gone = {k: v for k, v in _unpacked(bundle_of(files)).items() if k != "commands/cmd-1.cose"}
    assert "commands/cmd-1.cose: listed in the signed manifest but missing" in (
        check_bundle(pack(gone), key).problems
    )
    extra = _unpacked(bundle_of(files)) | {"envelopes/000000000099.cose": b"x"}
    problems = check_bundle(pack(extra), key).problems
    assert "envelopes/000000000099.cose: not listed in the signed manifest (added)" in problems
    # the thread rewritten by someone holding the cloud key: the chain still tells
    events = json.loads(files["thread.json"])
    events[1]["data"]["cost"] = 0.0
    rewritten = dict(files, **{"thread.json": json.dumps(events).encode()})
    report = check_bundle(bundle_of(rewritten), key)
    assert report.problems == [
        "thread.json: event boiler-0001#2: its content does not match its hash "
        "(changed after it was recorded)"
    ]
    # signed by someone else: the manufacturer's key does not verify it
    other = generate_private_key()
    forged = bundle_of(make_files(other), other)
    assert check_bundle(forged).ok  # consistent with itself...
    problems = check_bundle(forged, key).problems  # ...but not the manufacturer's
    assert problems and problems[0].startswith("manifest.cose: does not verify")
    # a checkpoint that is not the segment's end
    stale = dict(
        files,
        **{
            "checkpoint.cose": sign(
                checkpoint_payload(DEVICE, 2, "0" * 64, 5), CLOUD_KEY, CLOUD_KID
            )
        },
    )
    assert check_bundle(bundle_of(stale), key).problems == [
        "checkpoint.cose: the signed head is not the segment's last event (boiler-0001#2)"
    ]
    assert not check_bundle(b"not a zip").ok


def test_verify_proof_command(tmp_path: Path) -> None:
    bundle = tmp_path / "proof.zip"
    bundle.write_bytes(bundle_of(make_files()))
    pem = tmp_path / "cloud.pem"
    pem.write_bytes(public_key_to_pem(CLOUD_KEY.public_key()))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import boilertwin; boilertwin.main()", "verify-proof", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    good = run(str(bundle), "--cloud-key", str(pem))
    assert good.returncode == 0, good.stderr
    assert "proof bundle for job job-1: valid" in good.stdout
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    bundle.write_bytes(bytes(data))
    bad = run(str(bundle), "--cloud-key", str(pem))
    assert bad.returncode == 1 and "INVALID" in bad.stdout, bad.stdout
    missing = run(str(tmp_path / "nope.zip"))
    assert missing.returncode == 2 and "error:" in missing.stderr


def _unpacked(bundle: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_checkpoint_payload_is_canonical_cbor() -> None:
    assert cbor2.loads(checkpoint_payload("b", 3, "ab", 9)) == {
        "chain": "b",
        "seq": 3,
        "hash": "ab",
        "ts": 9,
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_the_chain_refuses_values_json_cannot_carry(value: float) -> None:
    with pytest.raises(ValueError):
        event_hash({"data": {"x": value}})
