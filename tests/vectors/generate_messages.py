"""Regenerate the golden vectors ``messages.json`` and ``cose.json``.

Run on purpose, after a deliberate change to the wire format or to ``samples.py``::

    .venv/bin/python -m tests.vectors.generate_messages

Tests only read these files; a diff in them is a wire-format change to review.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from protocols import strict_cbor
from protocols.cose import private_key_to_raw, public_key_to_raw, seal
from protocols.messages import Command, Watermark
from protocols.topics import TopicKind, topic
from protocols.wire import encode_payload
from tests.vectors.samples import (
    CLOUD_KEY,
    CLOUD_KID,
    DEVICE_ID,
    DEVICE_KEY,
    ENVELOPES,
    SAMPLES,
)

HERE = Path(__file__).resolve().parent


def _key(key: Any) -> dict[str, str]:
    return {
        "secret_hex": private_key_to_raw(key).hex(),
        "public_hex": public_key_to_raw(key.public_key()).hex(),
    }


def messages() -> dict[str, Any]:
    """Payload vectors: name -> kind, payload bytes and their decoded (JSON) form."""
    vectors = {}
    for name, message in SAMPLES.items():
        payload = encode_payload(message)
        vectors[name] = {
            "kind": str(message.topic_kind),
            "payload_hex": payload.hex(),
            "decoded": strict_cbor.loads(payload),
        }
    return {
        "description": "boilertwin v1 CBOR payloads (see protocols/wire.py); "
        "'decoded' is the payload as JSON, for implementers",
        "vectors": vectors,
    }


def envelopes() -> dict[str, Any]:
    """COSE_Sign1 vectors for every sample under both algorithm ids."""
    vectors = []
    for name, alg in ENVELOPES:
        message = SAMPLES[name]
        is_command = isinstance(message, Command | Watermark)
        key, kid = (CLOUD_KEY, CLOUD_KID) if is_command else (DEVICE_KEY, DEVICE_ID)
        vectors.append(
            {
                "name": name,
                "alg": int(alg),
                "kid": kid,
                "topic": topic(DEVICE_ID, TopicKind(message.topic_kind)),
                "payload_hex": encode_payload(message).hex(),
                "envelope_hex": seal(message, key, kid, alg).hex(),
            }
        )
    return {
        "description": "boilertwin COSE_Sign1 envelopes (tag 18, Ed25519; see protocols/cose.py)",
        "keys": {DEVICE_ID: _key(DEVICE_KEY), CLOUD_KID: _key(CLOUD_KEY)},
        "vectors": vectors,
    }


def main() -> None:
    """Write both vector files next to this script."""
    for filename, content in (("messages.json", messages()), ("cose.json", envelopes())):
        path = HERE / filename
        path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
