"""A real Mosquitto for tests, configured from the project's own `deploy/mosquitto/` files.

`Broker` runs one `mosquitto` process on free loopback ports. Its configuration is the
production `mosquitto.conf` rendered for a temporary directory: every general option
(authentication through the dynamic-security plugin, persistence, limits) is kept as shipped;
only file paths, logging and listeners are rewritten. Its logins are written by the
project's own `cloud.dynsec` (device ids bound to their logins, deny by default), so the
tests run against the accounts and roles production uses.

Listeners: a plain MQTT listener on `port` (test-only, loopback) and, with `tls=True`, the
production TLS listener on `tls_port` with a throw-away CA whose certificate is `ca_file`.
Both ports are chosen once and kept, so `restart()` comes back where clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud import broker_admin
from cloud.dynsec import DynsecFile
from cloud.mosquitto import ADMIN_USER, CLOUD_USER, DYNSEC_FILE, render_config
from cloud.settings import CloudSettings

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
"""Where the shipped `mosquitto.conf` and `acl` live."""

CLOUD_PASSWORD = "cloud-password"
"""Password the fixtures give the cloud account."""
ADMIN_PASSWORD = "broker-admin-password"
"""Password of the dynamic-security admin login of every test broker."""

DEVICE_IDS = ("boiler-0001", "boiler-0002", "boiler-0003")
"""Device accounts the fixtures create (username == device id)."""

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class BrokerError(Exception):
    """The test broker did not start or stop as asked; `log` holds its output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n--- mosquitto log ---\n{log}")
        self.log = log


def _override(config: str, options: Mapping[str, str]) -> str:
    """`config` with each general option of `options` set (replaced, or added before the
    first listener)."""
    lines = [line for line in config.splitlines() if line.partition(" ")[0] not in options]
    first_listener = next(
        (i for i, line in enumerate(lines) if line.startswith("listener ")), len(lines)
    )
    added = [f"{key} {value}" for key, value in options.items()]
    return "\n".join([*lines[:first_listener], *added, *lines[first_listener:]]) + "\n"


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class CertificateAuthority:
    """A throw-away CA (ECDSA P-256) that issues server and client certificates into a folder."""

    def __init__(self, directory: Path, name: str = "boilertwin test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, common_name: str, *, server: bool, hosts: tuple[str, ...] = ()
    ) -> tuple[Path, Path]:
        """Issue a leaf certificate; returns (certificate file, private key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file = self.directory / f"{common_name}.crt"
        key_file = self.directory / f"{common_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


class Broker:
    """A real mosquitto process on free loopback ports, started with the project's config."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: bool = False,
        cloud_user: str = CLOUD_USER,
        host: str = "127.0.0.1",
        executable: str | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """`overrides` replace (or add) general options of the shipped config, e.g.
        ``{"max_queued_messages": "20"}`` to make a queue overflow in a test."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host)
        self.tls_port: int | None = free_port(host) if tls else None
        self.cloud_user = cloud_user
        found = executable or find_mosquitto()
        if found is None:
            raise BrokerError("mosquitto is not installed", "")
        self.executable = found
        self._users: dict[str, str] = {ADMIN_USER: ADMIN_PASSWORD}
        self._process: asyncio.subprocess.Process | None = None
        self.log_file = directory / "mosquitto.log"
        self.config_file = directory / "mosquitto.conf"
        self.dynsec_file = directory / DYNSEC_FILE
        self.admin_password_file = directory / "broker-admin.password"
        self.admin_password_file.write_text(ADMIN_PASSWORD)
        self.ca: CertificateAuthority | None = None
        self.ca_file: Path | None = None
        tls_files: dict[str, Path] | None = None
        if tls:
            self.ca = CertificateAuthority(directory / "certs")
            cert_file, key_file = self.ca.issue("server", server=True, hosts=(host, "localhost"))
            self.ca_file = self.ca.cert_file
            tls_files = {"cafile": self.ca_file, "certfile": cert_file, "keyfile": key_file}
        config = render_config(
            (DEPLOY_DIR / "mosquitto.conf").read_text(),
            directory=directory,
            host=host,
            port=self.port,
            tls_port=self.tls_port,
            tls_files=tls_files,
        )
        self.config_file.write_text(_override(config, overrides or {}))
        DynsecFile.new(ADMIN_USER, ADMIN_PASSWORD).save(self.dynsec_file)

    @property
    def users(self) -> Mapping[str, str]:
        """Username -> password of every account added so far."""
        return dict(self._users)

    @property
    def pid(self) -> int | None:
        """The mosquitto process's id while it runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._process is not None and self._process.returncode is None

    def add_user(self, username: str, password: str) -> None:
        """Add or replace an account in the plugin's file: the cloud's (`cloud_user`) or a
        device's (username = device id = its only client id). The broker must be stopped;
        on a running one use `add_device_live`."""
        if self.running:
            raise BrokerError("the broker is running: use `await add_device_live(...)`", "")
        document = DynsecFile.load(self.dynsec_file)
        if username == self.cloud_user:
            document.set_cloud(username, password)
        else:
            document.set_device(username, password)
        document.save(self.dynsec_file)
        self._users[username] = password

    async def add_device_live(self, device_id: str, password: str) -> None:
        """Create a device login on the running broker, through the plugin's control topic
        as the admin login (what `boilertwin cloud devices add --broker-admin` does)."""
        await broker_admin.add_device(self.admin_settings(), device_id, password)
        self._users[device_id] = password

    def admin_settings(self) -> CloudSettings:
        """Cloud settings that reach this broker's plain listener as its admin login."""
        return CloudSettings(
            broker_host=self.host,
            broker_port=self.port,
            broker_admin_password_file=self.admin_password_file,
        )

    def issue_client_cert(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate from the test CA: (certificate file, key file). Needs tls=True."""
        if self.ca is None:
            raise ValueError("issue_client_cert needs a Broker(tls=True)")
        return self.ca.issue(common_name, server=False)

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts only this broker's CA. Needs tls=True."""
        if self.ca_file is None:
            raise ValueError("ssl_context needs a Broker(tls=True)")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, username: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        """An MQTT 5 aiomqtt client for this broker, logged in as `username` (plain port).

        The password is the one given to `add_user` unless `password=` is passed; any other
        keyword goes to `aiomqtt.Client` (e.g. `identifier`, `clean_start`, `properties`).
        """
        if username is not None:
            kwargs.setdefault("password", self._users.get(username))
        kwargs.setdefault("protocol", aiomqtt.ProtocolVersion.V5)
        kwargs.setdefault("timeout", 5)
        return aiomqtt.Client(
            kwargs.pop("hostname", self.host),
            kwargs.pop("port", self.port),
            username=username,
            **kwargs,
        )

    async def start(self) -> None:
        """Start mosquitto and wait until every listener accepts connections."""
        if self.running:
            raise BrokerError("broker is already running", self.log_text())
        with self.log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.executable,
                "-c",
                str(self.config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.directory,
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        for port in ports:
            while not await self._accepts(port):
                if self._process.returncode is not None:
                    raise BrokerError(
                        f"mosquitto exited with {self._process.returncode}", self.log_text()
                    )
                if loop.time() > deadline:
                    await self.kill()
                    raise BrokerError(f"mosquitto did not listen on {port}", self.log_text())
                await asyncio.sleep(0.02)

    async def _accepts(self, port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.host, port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def stop(self) -> None:
        """SIGTERM and wait: mosquitto writes its persistence database, so sessions survive."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: a crash; whatever changed since the last autosave is lost."""
        await self._end(signal.SIGKILL)

    async def restart(self) -> None:
        """Stop cleanly and start again on the same ports."""
        await self.stop()
        await self.start()

    async def _end(self, signum: signal.Signals) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signum)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BrokerError(f"mosquitto ignored {signum.name}", self.log_text()) from None

    def log_text(self) -> str:
        """Everything the broker has logged so far (all runs), for failing-test diagnostics."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.asynccontextmanager
async def running_broker(directory: Path, **options: Any) -> AsyncIterator[Broker]:
    """A started `Broker` with the cloud and `DEVICE_IDS` accounts; killed on exit."""
    broker = Broker(directory, **options)
    broker.add_user(broker.cloud_user, CLOUD_PASSWORD)
    for device_id in DEVICE_IDS:
        broker.add_user(device_id, device_password(device_id))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


def device_password(device_id: str) -> str:
    """The password the fixtures give a device account."""
    return f"{device_id}-password"


def _require_mosquitto() -> None:
    if find_mosquitto() is None:
        message = "mosquitto is not installed (make test installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(name="broker")
async def broker_fixture(tmp_path: Path) -> AsyncIterator[Broker]:
    """A started broker (auth + ACL as in production) with `cloud` and `DEVICE_IDS` users."""
    _require_mosquitto()
    async with running_broker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(name="tls_broker")
async def tls_broker_fixture(tmp_path: Path) -> AsyncIterator[Broker]:
    """Like `broker`, plus the production TLS listener on `tls_port` with a test CA."""
    _require_mosquitto()
    async with running_broker(tmp_path / "mosquitto-tls", tls=True) as broker:
        yield broker
