"""The claim request: signed with the key it carries, under the device id it asks for."""

from __future__ import annotations

import cbor2
import pytest
from cwt import COSE, COSEKey

from cloud.provisioning import new_token
from protocols.cose import generate_private_key, public_key_to_raw, sign
from protocols.errors import BadSignature, MalformedMessage, UnknownKey
from protocols.provisioning import ClaimRequest, make_request, open_request

TOKEN = new_token()


def request_for(**overrides: object) -> bytes:
    key = generate_private_key()
    values: dict[str, object] = {
        "claim": TOKEN,
        "dev": "gw-0123456789ab",
        "serial": "BT24C-000001",
        "model": "BT-24C",
        "agent": "0.1.0",
        "iat": 1_790_000_000_000,
        "nonce": "0f1e",
    }
    values.update(overrides)
    return make_request(key, **values)  # type: ignore[arg-type]


def test_a_request_opens_with_the_key_it_carries() -> None:
    request = open_request(request_for(location="51.5,-0.1", address="1 High St"))
    assert request.dev == "gw-0123456789ab"
    assert request.serial == "BT24C-000001"
    assert request.location == "51.5,-0.1"
    assert request.address == "1 High St"
    assert len(request.key) == 32


def test_an_independent_cose_implementation_verifies_the_request() -> None:
    envelope = request_for()
    request = open_request(envelope)
    # cwt (kty 1 OKP, crv 6 Ed25519, alg -19) picks the key by kid
    key = COSEKey.new({1: 1, -1: 6, -2: request.key, 3: -19, 2: request.dev.encode()})
    assert COSE.new().decode(envelope, key) == cbor2.loads(envelope).value[2]


def test_a_request_signed_by_another_key_is_refused() -> None:
    envelope = request_for()
    body = cbor2.loads(envelope).value
    other = generate_private_key()
    forged = sign(body[2], other, kid="gw-0123456789ab")
    with pytest.raises(BadSignature):
        open_request(forged)


def test_the_signer_must_be_the_device_it_asks_for() -> None:
    key = generate_private_key()
    request = ClaimRequest(
        claim=TOKEN,
        dev="gw-0123456789ab",
        key=public_key_to_raw(key.public_key()),
        serial="S",
        model="M",
        agent="0.1.0",
        iat=1,
        nonce="n",
    )
    with pytest.raises(UnknownKey):
        open_request(sign(request.to_cbor(), key, kid="boiler-0001"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"claim": "not-a-token"}, "claim token"),
        ({"dev": "Bad Id"}, "dev"),
        ({"serial": ""}, "serial"),
        ({"model": "x" * 201}, "model"),
        ({"serial": "a\x00b"}, "NUL"),
    ],
)
def test_bad_fields_are_refused_with_their_name(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedMessage, match=message):
        request_for(**overrides)


def test_unknown_and_missing_fields_are_refused() -> None:
    key = generate_private_key()
    raw = public_key_to_raw(key.public_key())
    base = {
        "claim": TOKEN,
        "dev": "gw-0123456789ab",
        "key": raw,
        "serial": "S",
        "model": "M",
        "agent": "1",
        "iat": 1,
        "nonce": "n",
    }
    extra = sign(cbor2.dumps({**base, "admin": True}), key, kid="gw-0123456789ab")
    with pytest.raises(MalformedMessage, match="unknown claim field"):
        open_request(extra)
    del base["serial"]
    missing = sign(cbor2.dumps(base), key, kid="gw-0123456789ab")
    with pytest.raises(MalformedMessage, match="missing: serial"):
        open_request(missing)


@pytest.mark.parametrize("junk", [b"", b"\xa0", b"\xd2\x84", b"x" * 5000])
def test_junk_is_malformed(junk: bytes) -> None:
    with pytest.raises(MalformedMessage):
        open_request(junk)
