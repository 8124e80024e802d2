"""Zero-touch joining: a gateway with only a claim token gets its identity from the cloud.

`provision` makes the device key (or keeps the one a previous attempt made), reads the
boiler's serial number and model from its Modbus identity registers, signs a claim request
with the key (`protocols.provisioning`) and sends it to ``POST /api/v1/provisioning/claims``.
The answer (device id, broker login, cloud keys to pin) is written to the state folder, the
identity file last and atomically: until it is there the gateway is not provisioned, and
asking again with the same key is answered again, so a power cut at any step is harmless.

The cloud is reached through a `ClaimTransport` (`UrllibTransport`: the standard library's
HTTPS, nothing to install on the gateway). A refusal (bad, used, expired or revoked token,
device taken) ends provisioning with its reason; an unreachable or busy cloud is asked again
with a doubling delay.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent import __version__
from edge_agent.config import IDENTITY_KEYS_DIR, IDENTITY_PASSWORD, EdgeSettings, register_map
from edge_agent.errors import CommsError, ConfigError, EdgeError
from edge_agent.keys import keygen, load_device_key, read_secret
from edge_agent.modbus_link import ModbusLink, SerialTarget, TcpTarget
from protocols.cose import public_key_from_pem, public_key_to_raw
from protocols.errors import ProtocolError
from protocols.planner import plan_reads
from protocols.provisioning import CONTENT_TYPE, make_request
from protocols.topics import is_device_id

log = logging.getLogger(__name__)

CLAIM_PATH = "/api/v1/provisioning/claims"
IDENTITY_POINTS = ("serial_number", "model")
RETRY_MIN_S = 2.0


class ProvisioningError(EdgeError):
    """The gateway could not be provisioned; `reason` is the cloud's (or ours)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ProvisioningRefused(ProvisioningError):
    """The cloud said no (asking again will not help)."""


class ClaimTransport(Protocol):
    """How the claim request reaches the cloud: (status, body) or `OSError` if it did not."""

    def post(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]: ...


@dataclass(frozen=True, slots=True)
class UrllibTransport:
    """HTTPS with the standard library (the CA bundle pinned if given)."""

    ca_file: Path | None = None
    timeout_s: float = 30.0

    def post(self, url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST `body`; any HTTP status is an answer, a network failure an `OSError`."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@dataclass(frozen=True, slots=True)
class Identity:
    """What a claim gave this gateway."""

    device_id: str
    serial: str
    model: str


def device_id_for(key: Ed25519PrivateKey) -> str:
    """The id a gateway asks for: ``gw-`` and 12 hex digits of its public key's SHA-256
    (unique per key, so a replaced gateway on the same boiler never collides)."""
    raw = public_key_to_raw(key.public_key())
    return "gw-" + hashlib.sha256(raw).hexdigest()[:12]


def device_key(settings: EdgeSettings) -> Ed25519PrivateKey:
    """The key a previous attempt made, or a new one."""
    key_file = settings.device.key_file
    if not key_file.exists():
        keygen(key_file)
        log.info("device key created: %s", key_file)
    return load_device_key(key_file)


async def read_boiler_identity(settings: EdgeSettings, attempts: int = 5) -> tuple[str, str]:
    """Serial number and model from the controller's identity registers."""
    regmap = register_map(settings.modbus)
    points = [p for p in regmap.readable() if p.name in IDENTITY_POINTS]
    if len(points) != len(IDENTITY_POINTS):
        raise ProvisioningError(
            "no_identity", f"register map {regmap.id} has no serial_number and model points"
        )
    m = settings.modbus
    target = (
        SerialTarget(m.port, m.baudrate, m.parity, m.stopbits)
        if m.transport == "rtu"
        else TcpTarget(m.host, m.tcp_port)
    )
    last = ""
    async with ModbusLink(target, unit=m.unit, timeout_s=m.timeout_s, retries=m.retries) as link:
        for attempt in range(attempts):
            try:
                values: dict[str, object] = {}
                for request in plan_reads(points):
                    raw = await link.read(request)
                    values.update(request.decode(raw, regmap.word_order))
                serial, model = (str(values[name]).strip() for name in IDENTITY_POINTS)
                if serial and model:
                    return serial, model
                last = "the controller reports an empty serial number or model"
            except (CommsError, ProtocolError) as exc:
                last = str(exc)
            await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
    raise ProvisioningError("no_identity", f"cannot read the boiler's identity: {last}")


def _answer(status: int, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    if status in (200, 201):
        return document
    reason = str(document.get("reason") or document.get("title") or f"http_{status}")
    detail = str(document.get("detail") or f"the cloud answered {status}")
    if status == 429 or status >= 500:
        raise ProvisioningError(reason, detail)
    raise ProvisioningRefused(reason, detail)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically, durably."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def store_identity(settings: EdgeSettings, answer: dict[str, Any], identity: Identity) -> None:
    """Keep what the cloud answered: broker password (0600), pinned cloud keys, and last the
    identity file that makes the gateway provisioned."""
    try:
        device_id = answer["device_id"]
        broker = answer["broker"]
        password = broker["password"]
        keys = answer["cloud_keys"]
        wanted = {"host": broker["host"], "port": broker["port"], "tls": broker["tls"]}
    except (KeyError, TypeError) as exc:
        raise ProvisioningError("bad_answer", f"the cloud's answer lacks {exc}") from exc
    if device_id != identity.device_id or not is_device_id(device_id):
        raise ProvisioningError("bad_answer", f"the cloud answered for {device_id!r}")
    if not isinstance(keys, dict) or not keys:
        raise ProvisioningError("bad_answer", "the cloud named no command keys to pin")
    for kid, pem in keys.items():
        try:
            public_key_from_pem(str(pem).encode())
        except ProtocolError as exc:
            raise ProvisioningError("bad_answer", f"cloud key {kid!r}: {exc}") from exc
        if not kid or "/" in kid or kid.startswith("."):
            raise ProvisioningError("bad_answer", f"cloud key id {kid!r} is not a file name")
    state = settings.device.state_dir
    keys_dir = state / IDENTITY_KEYS_DIR
    keys_dir.mkdir(parents=True, exist_ok=True)
    for old in keys_dir.glob("*.pem"):
        if old.stem not in keys:
            old.unlink()
    for kid, pem in keys.items():
        _write(keys_dir / f"{kid}.pem", str(pem).encode())
    _write(state / IDENTITY_PASSWORD, str(password).encode(), mode=0o600)
    document = {
        "device_id": device_id,
        "serial": identity.serial,
        "model": identity.model,
        "broker": wanted,
        "cloud_url": settings.provisioning.cloud_url,
    }
    _write(settings.identity_path, json.dumps(document, indent=2).encode())


Sleep = Callable[[float], Awaitable[None]]


async def provision(
    settings: EdgeSettings,
    *,
    transport: ClaimTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    attempts: int | None = None,
) -> Identity:
    """Claim this gateway (see the module docs); `attempts` None keeps asking while the cloud
    cannot be reached. `ProvisioningRefused` when the cloud says no."""
    p = settings.provisioning
    if not p.cloud_url or p.claim_token_file is None:
        raise ConfigError("provisioning.cloud_url", "is needed to claim this gateway")
    token = read_secret(p.claim_token_file, "provisioning.claim_token_file") or ""
    settings.device.state_dir.mkdir(parents=True, exist_ok=True)
    key = device_key(settings)
    device_id = settings.device.id or device_id_for(key)
    serial, model = await read_boiler_identity(settings)
    identity = Identity(device_id, serial, model)
    transport = transport or UrllibTransport(p.ca_file, p.timeout_s)
    url = p.cloud_url.rstrip("/") + CLAIM_PATH
    delay = RETRY_MIN_S
    tried = 0
    while True:
        tried += 1
        try:
            body = make_request(
                key,
                claim=token,
                dev=device_id,
                serial=serial,
                model=model,
                agent=__version__,
                iat=_now_ms(),
                nonce=uuid.uuid4().hex,
                location=p.location,
                address=p.address,
            )
        except ProtocolError as exc:
            raise ProvisioningRefused("bad_request", str(exc)) from exc
        try:
            status, answer_body = await asyncio.to_thread(transport.post, url, body, CONTENT_TYPE)
            answer = _answer(status, answer_body)
            store_identity(settings, answer, identity)
            log.info("claimed as %s (boiler %s, serial %s)", device_id, model, serial)
            return identity
        except ProvisioningRefused:
            raise
        except (OSError, ProvisioningError) as exc:
            if attempts is not None and tried >= attempts:
                if isinstance(exc, ProvisioningError):
                    raise
                raise ProvisioningError("unreachable", f"{url}: {exc}") from exc
            log.warning("claim not done (%s); asking again in %.0f s", exc, delay)
        await sleep(delay)
        delay = min(delay * 2, p.retry_max_s)


def _now_ms() -> int:
    return int(time.time() * 1000)
