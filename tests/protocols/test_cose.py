"""COSE_Sign1 envelopes (protocols.cose): golden vectors, interop, tampering, fuzzing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cwt import COSE, COSEKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID as PycoseKID
from pycose.headers import Algorithm as PycoseAlgorithm
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from protocols.cose import (
    MAX_ENVELOPE_BYTES,
    Algorithm,
    generate_private_key,
    open_command,
    open_uplink,
    open_watermark,
    private_key_from_pem,
    private_key_from_raw,
    private_key_to_pem,
    private_key_to_raw,
    public_key_from_pem,
    public_key_from_raw,
    public_key_to_pem,
    public_key_to_raw,
    seal,
    sign,
    verify,
)
from protocols.errors import (
    BadSignature,
    ClockUntrusted,
    LocalProtocolError,
    MalformedMessage,
    OversizedMessage,
    RemoteProtocolError,
    StaleMessage,
    UnknownKey,
    WrongDevice,
)
from protocols.messages import (
    Command,
    Message,
    RejectReason,
    TelemetryBatch,
    UplinkMessage,
    Watermark,
)
from protocols.topics import TopicKind, topic
from protocols.wire import encode_payload
from tests.protocols import strategies
from tests.vectors.samples import CLOUD_KEY, CLOUD_KID, DEVICE_ID, DEVICE_KEY, SAMPLES, T0

COSE_VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "cose.json").read_text())
VECTORS = COSE_VECTORS["vectors"]
DEVICE_KEYS = {DEVICE_ID: DEVICE_KEY.public_key()}
CLOUD_KEYS = {CLOUD_KID: CLOUD_KEY.public_key()}
OTHER_ID = "boiler-0002"
OTHER_KEY = private_key_from_raw(bytes(range(32)))
ALL_DEVICE_KEYS = DEVICE_KEYS | {OTHER_ID: OTHER_KEY.public_key()}
DATA_TOPIC = topic(DEVICE_ID, TopicKind.DATA)
# RFC 8032 section 7.1 TEST 1 / TEST 2 public keys: the fixed keys are the published ones.
RFC8032_PUBLIC = {
    DEVICE_ID: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    CLOUD_KID: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
}


def _signer(name: str) -> tuple[Ed25519PrivateKey, str]:
    from_cloud = isinstance(SAMPLES[name], Command | Watermark)
    return (CLOUD_KEY, CLOUD_KID) if from_cloud else (DEVICE_KEY, DEVICE_ID)


def _envelope(
    payload: bytes,
    *,
    protected: dict[int, Any] | None = None,
    unprotected: dict[int, Any] | None = None,
    key: Ed25519PrivateKey = DEVICE_KEY,
    tag: int | None = 18,
    trailer: bytes = b"",
) -> bytes:
    """A validly signed Sign1 built by hand, with whatever headers and tag a test needs."""
    headers = {1: -19, 4: DEVICE_ID.encode()} if protected is None else protected
    protected_bytes = cbor2.dumps(headers) if headers else b""
    signature = key.sign(cbor2.dumps(["Signature1", protected_bytes, b"", payload]))
    body = [protected_bytes, unprotected or {}, payload, signature]
    return cbor2.dumps(body if tag is None else cbor2.CBORTag(tag, body)) + trailer


def _cwt_key(
    public: Ed25519PublicKey, alg: int, kid: str, private: Ed25519PrivateKey | None = None
) -> Any:
    """A cwt OKP key (kty 1, crv 6 = Ed25519); cwt picks keys by kid, so it needs one."""
    params: dict[int, Any] = {1: 1, -1: 6, -2: public_key_to_raw(public), 3: alg, 2: kid.encode()}
    if private is not None:
        params[-4] = private_key_to_raw(private)
    return COSEKey.new(params)


# -- golden vectors ---------------------------------------------------------------------------


def test_vector_keys_are_rfc8032() -> None:
    for kid, key in COSE_VECTORS["keys"].items():
        assert key["public_hex"] == RFC8032_PUBLIC[kid]
    assert public_key_to_raw(DEVICE_KEY.public_key()).hex() == RFC8032_PUBLIC[DEVICE_ID]


def test_vectors_cover_samples_and_both_algs() -> None:
    assert {v["name"] for v in VECTORS} == set(SAMPLES)
    assert {v["alg"] for v in VECTORS} == {-19, -8}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['name']}{v['alg']}")
def test_golden_envelope(vector: dict[str, Any]) -> None:
    message = SAMPLES[vector["name"]]
    key, kid = _signer(vector["name"])
    envelope = bytes.fromhex(vector["envelope_hex"])
    alg = Algorithm(vector["alg"])
    assert vector["kid"] == kid
    assert encode_payload(message).hex() == vector["payload_hex"]
    assert seal(message, key, kid, alg) == envelope
    verified = verify(envelope, DEVICE_KEYS | CLOUD_KEYS)
    assert (verified.kid, verified.payload.hex(), verified.alg) == (kid, vector["payload_hex"], alg)
    if isinstance(message, Command):
        assert open_command(envelope, DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True) == message
    elif isinstance(message, Watermark):
        assert open_watermark(envelope, DEVICE_ID, CLOUD_KEYS) == message
    else:
        assert open_uplink(envelope, vector["topic"], DEVICE_KEYS) == message


def test_default_alg_and_header_layout() -> None:
    envelope = seal(SAMPLES["data"], DEVICE_KEY)
    tag = cbor2.loads(envelope)
    assert tag.tag == 18
    protected, unprotected, _, signature = tag.value
    assert cbor2.loads(protected) == {1: -19, 4: DEVICE_ID.encode()}
    assert protected.startswith(b"\xa2\x01\x32")  # canonical: alg first, -19
    assert unprotected == {}
    assert len(signature) == 64


# -- interop with independent COSE implementations --------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['name']}{v['alg']}")
def test_cwt_verifies_our_envelopes(vector: dict[str, Any]) -> None:
    key, kid = _signer(vector["name"])
    cose_key = _cwt_key(key.public_key(), vector["alg"], kid)
    envelope = bytes.fromhex(vector["envelope_hex"])
    assert COSE.new().decode(envelope, cose_key) == bytes.fromhex(vector["payload_hex"])


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["alg"] == -8], ids=lambda v: str(v["name"])
)
def test_pycose_verifies_our_eddsa_envelopes(vector: dict[str, Any]) -> None:
    key, kid = _signer(vector["name"])
    message = Sign1Message.decode(bytes.fromhex(vector["envelope_hex"]))
    assert isinstance(message, Sign1Message)
    message.key = OKPKey(crv=Ed25519, x=public_key_to_raw(key.public_key()))
    assert message.verify_signature()
    assert message.phdr[PycoseKID] == kid.encode()
    assert message.payload == bytes.fromhex(vector["payload_hex"])


@pytest.mark.parametrize("kid_protected", [True, False])
@pytest.mark.parametrize("alg", [-19, -8])
def test_cwt_envelopes_verify_with_ours(alg: int, kid_protected: bool) -> None:
    payload = encode_payload(SAMPLES["data"])
    cose_key = _cwt_key(DEVICE_KEY.public_key(), alg, DEVICE_ID, DEVICE_KEY)
    kid = DEVICE_ID.encode()
    if kid_protected:
        envelope = COSE.new().encode_and_sign(payload, cose_key, protected={1: alg, 4: kid})
    else:  # cwt's default: alg protected, kid unprotected
        envelope = COSE.new(alg_auto_inclusion=True).encode_and_sign(
            payload, cose_key, unprotected={4: kid}
        )
    assert verify(envelope, DEVICE_KEYS).alg == alg
    assert open_uplink(envelope, DATA_TOPIC, DEVICE_KEYS) == SAMPLES["data"]


def test_pycose_envelope_verifies_with_ours() -> None:
    command = SAMPLES["cmd_restart"]
    message = Sign1Message(
        phdr={PycoseAlgorithm: EdDSA, PycoseKID: CLOUD_KID.encode()},
        payload=encode_payload(command),
    )
    message.key = OKPKey(
        crv=Ed25519,
        d=private_key_to_raw(CLOUD_KEY),
        x=public_key_to_raw(CLOUD_KEY.public_key()),
    )
    envelope = message.encode()
    assert envelope == seal(command, CLOUD_KEY, CLOUD_KID, Algorithm.EDDSA)
    assert open_command(envelope, DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True) == command


# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(Algorithm), strategies.device_ids)
def test_sign_verify_round_trip(payload: bytes, alg: Algorithm, kid: str) -> None:
    verified = verify(sign(payload, DEVICE_KEY, kid, alg), lambda k: DEVICE_KEY.public_key())
    assert (verified.kid, verified.payload, verified.alg) == (kid, payload, alg)


@settings(max_examples=50, deadline=None)
@given(strategies.uplink_messages)
def test_seal_open_uplink_round_trip(message: UplinkMessage) -> None:
    envelope = seal(message, DEVICE_KEY)
    name = topic(message.dev, message.topic_kind)
    assert open_uplink(envelope, name, {message.dev: DEVICE_KEY.public_key()}) == message


@settings(max_examples=50, deadline=None)
@given(strategies.commands())
def test_seal_open_command_round_trip(command: Command) -> None:
    envelope = seal(command, CLOUD_KEY, CLOUD_KID)
    now = command.exp - 1
    assert open_command(envelope, command.dev, CLOUD_KEYS, now, clock_trusted=True) == command


# -- tampering --------------------------------------------------------------------------------


def test_wrong_key_is_bad_signature() -> None:
    envelope = seal(SAMPLES["data"], OTHER_KEY, DEVICE_ID)
    with pytest.raises(BadSignature) as info:
        open_uplink(envelope, DATA_TOPIC, ALL_DEVICE_KEYS)
    assert (info.value.kid, info.value.topic, info.value.device_id) == (
        DEVICE_ID,
        DATA_TOPIC,
        DEVICE_ID,
    )


def test_unknown_kid() -> None:
    envelope = seal(SAMPLES["data"], DEVICE_KEY)
    with pytest.raises(UnknownKey) as info:
        verify(envelope, {})
    assert info.value.kid == DEVICE_ID
    with pytest.raises(UnknownKey):
        verify(envelope, lambda kid: None)


def test_other_device_signing_for_this_topic() -> None:
    """Device B, with its own valid key, publishes its message on device A's topic."""
    other = dataclasses.replace(SAMPLES["data"], dev=OTHER_ID)
    envelope = seal(other, OTHER_KEY)
    with pytest.raises(WrongDevice) as info:
        open_uplink(envelope, DATA_TOPIC, ALL_DEVICE_KEYS)
    assert (info.value.kid, info.value.device_id) == (OTHER_ID, DEVICE_ID)


def test_kid_topic_mismatch() -> None:
    envelope = seal(SAMPLES["data"], DEVICE_KEY)
    with pytest.raises(WrongDevice):
        open_uplink(envelope, topic(OTHER_ID, TopicKind.DATA), ALL_DEVICE_KEYS)


def test_dev_topic_mismatch() -> None:
    """Signed by A under kid A on A's topic, but the payload names B."""
    other = dataclasses.replace(SAMPLES["data"], dev=OTHER_ID)
    assert isinstance(other, TelemetryBatch)
    envelope = seal(other, DEVICE_KEY, DEVICE_ID)
    with pytest.raises(WrongDevice) as info:
        open_uplink(envelope, DATA_TOPIC, ALL_DEVICE_KEYS)
    assert info.value.seq == other.seq


@pytest.mark.parametrize("kind", [TopicKind.ACK, TopicKind.EVENT, TopicKind.BIRTH])
def test_kind_topic_mismatch(kind: TopicKind) -> None:
    envelope = seal(SAMPLES["data"], DEVICE_KEY)
    with pytest.raises(MalformedMessage, match="kind"):
        open_uplink(envelope, topic(DEVICE_ID, kind), DEVICE_KEYS)


@pytest.mark.parametrize("kind", [TopicKind.CMD, TopicKind.STATE])
def test_open_uplink_rejects_non_uplink_topics(kind: TopicKind) -> None:
    with pytest.raises(MalformedMessage):
        open_uplink(seal(SAMPLES["data"], DEVICE_KEY), topic(DEVICE_ID, kind), DEVICE_KEYS)


def test_open_uplink_rejects_bad_topic() -> None:
    with pytest.raises(MalformedMessage):
        open_uplink(seal(SAMPLES["data"], DEVICE_KEY), "bt/v1/+/data", DEVICE_KEYS)


def _open_restart(now: int = T0, trusted: bool = True, device_id: str = DEVICE_ID) -> Command:
    envelope = seal(SAMPLES["cmd_restart"], CLOUD_KEY, CLOUD_KID)
    return open_command(envelope, device_id, CLOUD_KEYS, now, clock_trusted=trusted)


def test_command_expiry() -> None:
    command = SAMPLES["cmd_restart"]
    assert isinstance(command, Command)
    assert _open_restart(command.exp - 1) == command
    for now in (command.exp, command.exp + 1):
        with pytest.raises(StaleMessage) as info:
            _open_restart(now)
        assert not isinstance(info.value, ClockUntrusted)
        assert RejectReason.for_error(info.value) is RejectReason.EXPIRED


def test_command_with_untrusted_clock() -> None:
    with pytest.raises(ClockUntrusted, match="untrusted") as info:
        _open_restart(trusted=False)
    assert isinstance(info.value, StaleMessage)
    assert RejectReason.for_error(info.value) is RejectReason.CLOCK_UNTRUSTED
    assert (info.value.device_id, info.value.kid) == (DEVICE_ID, CLOUD_KID)


def test_command_for_other_device() -> None:
    with pytest.raises(WrongDevice) as info:
        _open_restart(device_id=OTHER_ID)
    assert info.value.device_id == OTHER_ID


def test_command_signed_by_a_device_key() -> None:
    envelope = seal(SAMPLES["cmd_restart"], DEVICE_KEY, DEVICE_ID)
    with pytest.raises(UnknownKey):
        open_command(envelope, DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True)
    forged = seal(SAMPLES["cmd_restart"], DEVICE_KEY, CLOUD_KID)
    with pytest.raises(BadSignature):
        open_command(forged, DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True)


def test_uplink_payload_is_not_a_command() -> None:
    envelope = seal(SAMPLES["ack_succeeded"], CLOUD_KEY, CLOUD_KID)
    with pytest.raises(MalformedMessage, match="kind"):
        open_command(envelope, DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True)


PAYLOAD = encode_payload(SAMPLES["data"])
KID_BYTES = DEVICE_ID.encode()


@pytest.mark.parametrize(
    ("envelope", "error"),
    [
        (_envelope(PAYLOAD, protected={1: -7, 4: KID_BYTES}), MalformedMessage),  # ES256
        (_envelope(PAYLOAD, protected={1: -35, 4: KID_BYTES}), MalformedMessage),
        (_envelope(PAYLOAD, protected={1: "EdDSA", 4: KID_BYTES}), MalformedMessage),
        (_envelope(PAYLOAD, protected={4: KID_BYTES}), MalformedMessage),  # no alg
        (_envelope(PAYLOAD, protected={4: KID_BYTES}, unprotected={1: -19}), MalformedMessage),
        (_envelope(PAYLOAD, protected={1: -19}), MalformedMessage),  # no kid
        (
            _envelope(PAYLOAD, protected={1: -19, 4: KID_BYTES}, unprotected={4: KID_BYTES}),
            MalformedMessage,
        ),
        (_envelope(PAYLOAD, protected={1: -19, 4: DEVICE_ID}), MalformedMessage),  # text kid
        (_envelope(PAYLOAD, protected={1: -19, 4: b"\xff"}), MalformedMessage),  # not UTF-8
        (_envelope(PAYLOAD, protected={1: -19, 2: [99], 4: KID_BYTES}), MalformedMessage),  # crit
        (_envelope(PAYLOAD, tag=17), MalformedMessage),  # COSE_Mac0
        (_envelope(PAYLOAD, tag=98), MalformedMessage),  # COSE_Sign
        (_envelope(PAYLOAD, tag=None), MalformedMessage),  # untagged
        (_envelope(PAYLOAD, trailer=b"\x00"), MalformedMessage),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b"\x00" * 64])), MalformedMessage),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, PAYLOAD])), MalformedMessage),
        (cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, []))), MalformedMessage),
        (_envelope(b"\x00" * (MAX_ENVELOPE_BYTES + 1)), OversizedMessage),
    ],
)
def test_structural_tampering(envelope: bytes, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(error):
        verify(envelope, DEVICE_KEYS)


def test_hand_built_envelope_verifies() -> None:
    """The hand builder is right, so the rejections above are about what they change."""
    assert verify(_envelope(PAYLOAD), DEVICE_KEYS).payload == PAYLOAD


def test_short_signature() -> None:
    tag = cbor2.loads(seal(SAMPLES["data"], DEVICE_KEY))
    tag.value[3] = tag.value[3][:63]
    with pytest.raises(BadSignature):
        verify(cbor2.dumps(tag), DEVICE_KEYS)


# -- fuzzing ----------------------------------------------------------------------------------

ENVELOPE_BYTES = [bytes.fromhex(v["envelope_hex"]) for v in VECTORS]
ANY_KEYS = DEVICE_KEYS | CLOUD_KEYS


@pytest.mark.parametrize("name", ["data", "cmd_restart"])
def test_every_truncation_and_bit_flip(name: str) -> None:
    key, kid = _signer(name)
    envelope = seal(SAMPLES[name], key, kid)
    for end in range(len(envelope)):
        with pytest.raises(RemoteProtocolError):
            verify(envelope[:end], ANY_KEYS)
    for position in range(len(envelope)):
        for bit in range(8):
            flipped = bytearray(envelope)
            flipped[position] ^= 1 << bit
            with pytest.raises(RemoteProtocolError):
                verify(bytes(flipped), ANY_KEYS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ENVELOPE_BYTES), st.data())
def test_single_byte_flip_never_verifies(envelope: bytes, data: st.DataObject) -> None:
    flipped = bytearray(envelope)
    flipped[data.draw(st.integers(0, len(envelope) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RemoteProtocolError):
        verify(bytes(flipped), ANY_KEYS)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ENVELOPE_BYTES), st.data())
def test_truncation_never_verifies(envelope: bytes, data: st.DataObject) -> None:
    with pytest.raises(RemoteProtocolError):
        verify(envelope[: data.draw(st.integers(0, len(envelope) - 1))], ANY_KEYS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"\xd2\x84" + b))
def test_garbage_envelopes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        verify(data, ANY_KEYS)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ENVELOPE_BYTES), st.data())
def test_flipped_envelopes_never_open(envelope: bytes, data: st.DataObject) -> None:
    flipped = bytearray(envelope)
    flipped[data.draw(st.integers(0, len(envelope) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RemoteProtocolError):
        open_uplink(bytes(flipped), DATA_TOPIC, DEVICE_KEYS)
    with pytest.raises(RemoteProtocolError):
        open_command(bytes(flipped), DEVICE_ID, CLOUD_KEYS, T0, clock_trusted=True)


# -- keys and misuse --------------------------------------------------------------------------


def test_raw_and_pem_round_trips() -> None:
    key = generate_private_key()
    public = key.public_key()
    assert private_key_to_raw(private_key_from_raw(private_key_to_raw(key))) == private_key_to_raw(
        key
    )
    assert public_key_to_raw(public_key_from_raw(public_key_to_raw(public))) == public_key_to_raw(
        public
    )
    assert private_key_to_raw(private_key_from_pem(private_key_to_pem(key))) == private_key_to_raw(
        key
    )
    assert public_key_to_raw(public_key_from_pem(public_key_to_pem(public))) == public_key_to_raw(
        public
    )
    assert private_key_to_pem(key).startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_to_pem(public).startswith(b"-----BEGIN PUBLIC KEY-----")


def test_bad_key_material() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pem = ec_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    ec_public_pem = ec_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    bad_pem = b"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"
    for call in (
        lambda: private_key_from_raw(b"\x00" * 31),
        lambda: public_key_from_raw(b"\x00" * 33),
        lambda: private_key_from_pem(b"not pem"),
        lambda: private_key_from_pem(ec_pem),
        lambda: public_key_from_pem(bad_pem),
        lambda: public_key_from_pem(ec_public_pem),
    ):
        with pytest.raises(LocalProtocolError):
            call()


def test_sign_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        sign(b"x", DEVICE_KEY, "")
    with pytest.raises(LocalProtocolError):
        sign(b"x", DEVICE_KEY, "kid", alg=-7)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        sign("x", DEVICE_KEY, "kid")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="kid"):
        seal(SAMPLES["cmd_restart"], CLOUD_KEY)
    with pytest.raises(LocalProtocolError):
        open_command(b"", "BAD", CLOUD_KEYS, T0, clock_trusted=True)


def test_samples_cover_every_message_type() -> None:
    assert all(isinstance(m, Message) for m in SAMPLES.values())
    assert len({type(m) for m in SAMPLES.values()}) == 7


# -- watermarks (the cloud's end-to-end acknowledgement) ----------------------------------------


def test_a_watermark_for_another_device_or_from_a_device_key_is_refused() -> None:
    other = Watermark(dev="boiler-0002", upto=5, iat=T0)
    with pytest.raises(WrongDevice):
        open_watermark(seal(other, CLOUD_KEY, CLOUD_KID), DEVICE_ID, CLOUD_KEYS)
    forged = Watermark(dev=DEVICE_ID, upto=10**6, iat=T0)
    with pytest.raises(UnknownKey):
        open_watermark(seal(forged, DEVICE_KEY, DEVICE_ID), DEVICE_ID, CLOUD_KEYS)
    with pytest.raises(MalformedMessage):  # a command is not a watermark (kind mismatch)
        open_watermark(seal(SAMPLES["cmd_restart"], CLOUD_KEY, CLOUD_KID), DEVICE_ID, CLOUD_KEYS)
    with pytest.raises(LocalProtocolError):
        seal(forged, CLOUD_KEY)  # the cloud's kid must be given
