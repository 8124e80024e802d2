"""The shipped Mosquitto configuration and logins, proven against a real Mosquitto 2.0 broker.

What Mosquitto 2.0.11 with the dynamic-security plugin does, as these tests pin down:

- A wrong password, an unknown user, an anonymous client, and a gateway's login with any
  client id but its own are all refused with CONNACK 0x87 "Not authorized". An empty client
  id is refused with 0x80 (allow_zero_length_clientid false), so every client passes
  `identifier`. No gateway can connect as the cloud and take over its persistent session.
- A publish outside the device's own prefix is dropped; at QoS 1 over MQTT 5 the PUBACK
  carries 0x87 "Not authorized" (aiomqtt does not surface PUBACK reason codes, so that check
  uses paho directly); at QoS 0 nothing at all comes back.
- SUBSCRIBE is checked: a device may subscribe to its own `cmd` and nothing else (another
  device's `cmd`, `#`, wildcards, any `$share/...` get SUBACK 0x87), so no device can join
  the cloud's shared subscription and swallow other devices' messages.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.dynsec import cloud_acls, device_acls
from protocols.topics import Direction, TopicKind, shared_subscription, subscription, topic
from tests.broker import CLOUD_USER, DEVICE_IDS, Broker

pytestmark = pytest.mark.integration

DEV_A, DEV_B, DEV_C = DEVICE_IDS
NOT_AUTHORIZED = 0x87
UPLINK = [kind for kind in TopicKind if kind.direction is Direction.UP]


async def next_message(client: aiomqtt.Client, timeout: float = 2.0) -> aiomqtt.Message:
    """The next message `client` receives, or fail after `timeout` seconds."""
    return await asyncio.wait_for(anext(aiter(client.messages)), timeout)


async def assert_nothing_before_marker(
    sender: aiomqtt.Client, receiver: aiomqtt.Client, marker_topic: str
) -> None:
    """Publish a marker the receiver may read; it must be the very next thing it gets.

    The broker handles one client's publishes in order, so anything that had been (wrongly)
    delivered before would arrive ahead of the marker. No sleeping for "long enough".
    """
    await sender.publish(marker_topic, b"marker", qos=1)
    message = await next_message(receiver)
    assert (str(message.topic), message.payload) == (marker_topic, b"marker")


def puback_reason(
    broker: Broker, username: str, topic_name: str, payload: bytes = b"x", timeout: float = 5.0
) -> ReasonCode | None:
    """Publish once at QoS 1 over MQTT 5 with paho; the PUBACK reason code, or None if paho
    reported no PUBACK within `timeout` seconds."""
    done = threading.Event()
    reasons: list[ReasonCode] = []

    def on_publish(
        _client: mqtt.Client, _userdata: object, _mid: int, reason: ReasonCode, _props: object
    ) -> None:
        reasons.append(reason)
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, broker.users[username])
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic_name, payload, qos=1)
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0] if reasons else None


def granted_qos(codes: Iterable[int | ReasonCode]) -> list[int]:
    """Reason codes as plain numbers (SUBACK: the granted QoS, or >= 0x80 on failure)."""
    return [code.value if isinstance(code, ReasonCode) else code for code in codes]


def session_properties(expiry_s: int = 3600) -> Properties:
    """CONNECT properties asking the broker to keep the session `expiry_s` after disconnect."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = expiry_s
    return properties


def test_roles_cover_every_topic_kind() -> None:
    """Each uplink kind is writable by its device and readable by the cloud; cmd the reverse."""
    device = {(a["acltype"], a["topic"]) for a in device_acls(DEV_A)}
    cloud = {(a["acltype"], a["topic"]) for a in cloud_acls()}
    for kind in UPLINK:
        assert ("publishClientSend", topic(DEV_A, kind)) in device
        assert ("publishClientReceive", subscription(kind)) in cloud
        assert ("subscribePattern", f"$share/+/{subscription(kind)}") in cloud
    for kind in (TopicKind.CMD, TopicKind.STORED):
        downlink = topic(DEV_A, kind)
        assert device >= {("subscribeLiteral", downlink), ("publishClientReceive", downlink)}
        assert ("publishClientSend", subscription(kind)) in cloud
    assert len(device) == len(UPLINK) + 4, "a device may do nothing else"
    assert not any(t == "#" or t.startswith("$CONTROL") for _, t in device | cloud)


async def test_device_publishes_own_uplink_and_cloud_receives(broker: Broker) -> None:
    """A device may publish every uplink kind under its own prefix; the cloud reads them all."""
    async with (
        broker.client(CLOUD_USER, identifier="cloud-ingest") as cloud,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        for kind in UPLINK:
            await cloud.subscribe(subscription(kind), qos=1)
        for kind in UPLINK:
            await device.publish(topic(DEV_A, kind), kind.value.encode(), qos=1)
        for kind in UPLINK:
            message = await next_message(cloud)
            assert (str(message.topic), message.payload) == (topic(DEV_A, kind), kind.encode())


async def test_publish_under_another_devices_prefix_is_dropped(broker: Broker) -> None:
    """QoS 0 and QoS 1 publishes to another device's prefix never reach the cloud."""
    async with (
        broker.client(CLOUD_USER, identifier="cloud-ingest") as cloud,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        await cloud.subscribe(subscription(TopicKind.DATA), qos=1)
        await cloud.subscribe(subscription(TopicKind.STATE), qos=1)
        await device.publish(topic(DEV_B, TopicKind.DATA), b"forged", qos=0)
        await device.publish(topic(DEV_B, TopicKind.DATA), b"forged", qos=1)
        await device.publish(topic(DEV_B, TopicKind.STATE), b"offline", qos=1, retain=True)
        # Nor may it inject commands, even for itself.
        await device.publish(topic(DEV_A, TopicKind.CMD), b"self-command", qos=1)
        await assert_nothing_before_marker(device, cloud, topic(DEV_A, TopicKind.DATA))
    assert "Denied PUBLISH from boiler-0001" in broker.log_text()


async def test_denied_qos1_publish_gets_not_authorized_puback(broker: Broker) -> None:
    """MQTT 5 PUBACK reason codes: 0x87 for a foreign prefix, success for the own prefix."""
    denied = await asyncio.to_thread(puback_reason, broker, DEV_A, topic(DEV_B, TopicKind.DATA))
    allowed = await asyncio.to_thread(puback_reason, broker, DEV_A, topic(DEV_A, TopicKind.DATA))
    assert denied is not None and allowed is not None
    assert denied.value == NOT_AUTHORIZED
    assert not allowed.is_failure  # 0x10 "No matching subscribers": accepted, nobody listening


async def test_payload_size_limit(broker: Broker) -> None:
    """65536 bytes plus envelope overhead pass; a payload past 66 KiB is dropped.

    Mosquitto 2.0.11 answers an oversize MQTT 5 QoS 1 publish with PUBACK 0x95, which is not a
    valid PUBACK reason code (the man page promises 0x83). paho 2.2 drops the connection on it
    and resends on reconnect, so paho never reports a PUBACK: the sender must enforce the cap.
    An MQTT 3.1.1 publisher just gets a plain PUBACK; either way nothing is delivered.
    """
    own = topic(DEV_A, TopicKind.DATA)
    fits = await asyncio.to_thread(puback_reason, broker, DEV_A, own, bytes(65536 + 1024))
    assert fits is not None and not fits.is_failure
    too_big = bytes(67584 + 1)
    assert await asyncio.to_thread(puback_reason, broker, DEV_A, own, too_big, 1.0) is None
    assert re.search(r"Sending PUBACK to boiler-0001 \(m\d+, rc149\)", broker.log_text())
    async with (
        broker.client(CLOUD_USER, identifier="cloud-ingest") as cloud,
        broker.client(DEV_A, identifier=DEV_A, protocol=aiomqtt.ProtocolVersion.V311) as device,
    ):
        await cloud.subscribe(subscription(TopicKind.DATA), qos=1)
        await device.publish(own, too_big, qos=1)
        await assert_nothing_before_marker(device, cloud, own)


async def test_device_may_subscribe_to_its_own_cmd_only(broker: Broker) -> None:
    """SUBACK 0x87 for anything else; nothing from there ever arrives."""
    async with (
        broker.client(CLOUD_USER, identifier="bt-cloud-commands") as cloud,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        refused = [
            topic(DEV_B, TopicKind.CMD),
            "#",
            "bt/v1/+/cmd",
            topic(DEV_B, TopicKind.DATA),
            shared_subscription(TopicKind.DATA),
            f"$share/mine/{topic(DEV_A, TopicKind.CMD)}",
        ]
        for topic_filter in refused:
            granted = granted_qos(await device.subscribe(topic_filter, qos=1))
            assert granted == [NOT_AUTHORIZED], topic_filter
        assert granted_qos(await device.subscribe(topic(DEV_A, TopicKind.CMD), qos=1)) == [1]
        await cloud.publish(topic(DEV_B, TopicKind.CMD), b"for-b", qos=1)
        await cloud.publish(topic(DEV_B, TopicKind.DATA), b"not-readable", qos=1)
        await assert_nothing_before_marker(cloud, device, topic(DEV_A, TopicKind.CMD))


async def test_cloud_command_reaches_its_device(broker: Broker) -> None:
    """The cloud may write any device's `cmd`; that device receives it at QoS 1."""
    async with (
        broker.client(CLOUD_USER, identifier="cloud-commands") as cloud,
        broker.client(DEV_B, identifier=DEV_B) as device,
    ):
        await device.subscribe(topic(DEV_B, TopicKind.CMD), qos=1)
        await cloud.publish(topic(DEV_B, TopicKind.CMD), b"restart", qos=1)
        message = await next_message(device)
        assert (str(message.topic), message.payload, message.qos) == (
            topic(DEV_B, TopicKind.CMD),
            b"restart",
            1,
        )


@pytest.mark.parametrize(
    ("username", "password", "identifier"),
    [
        (DEV_A, "wrong-password", DEV_A),
        (None, None, "intruder"),
        ("unknown-device", "whatever", "unknown-device"),
        (DEV_A, None, DEV_B),
        (DEV_A, None, "bt-cloud-ingest"),
    ],
    ids=["wrong-password", "anonymous", "unknown-user", "other-device-id", "cloud-id"],
)
async def test_bad_credentials_are_refused(
    broker: Broker, username: str | None, password: str | None, identifier: str
) -> None:
    """Mosquitto 2.0.11 answers all of them with CONNACK 0x87 Not authorized; a device's own
    password does not let it connect under another client id."""
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        kwargs = {"password": password} if password is not None else {}
        async with broker.client(username, identifier=identifier, **kwargs):
            pass
    assert granted_qos([refused.value.rc or 0]) == [NOT_AUTHORIZED]


async def test_shared_subscription_splits_data_between_cloud_workers(broker: Broker) -> None:
    """Two cloud workers on `$share/ingest/bt/v1/+/data` each get a share, none twice."""
    group = shared_subscription(TopicKind.DATA)
    assert group == "$share/ingest/bt/v1/+/data"
    sent = [f"{device}:{n}".encode() for n in range(5) for device in (DEV_A, DEV_B)]
    async with (
        broker.client(CLOUD_USER, identifier="ingest-1") as worker1,
        broker.client(CLOUD_USER, identifier="ingest-2") as worker2,
        broker.client(DEV_A, identifier=DEV_A) as device_a,
        broker.client(DEV_B, identifier=DEV_B) as device_b,
    ):
        for worker in (worker1, worker2):
            assert granted_qos(await worker.subscribe(group, qos=1)) == [1]
        for payload in sent:
            device = device_a if payload.startswith(DEV_A.encode()) else device_b
            await device.publish(
                topic(payload.decode().split(":")[0], TopicKind.DATA), payload, qos=1
            )
        received: dict[str, list[bytes]] = {"ingest-1": [], "ingest-2": []}

        async def collect(name: str, worker: aiomqtt.Client) -> None:
            async for message in worker.messages:
                assert isinstance(message.payload, bytes)
                received[name].append(message.payload)
                if sum(map(len, received.values())) == len(sent):
                    return

        async with asyncio.timeout(3):
            done, pending = await asyncio.wait(
                [
                    asyncio.create_task(collect("ingest-1", worker1)),
                    asyncio.create_task(collect("ingest-2", worker2)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
    assert received["ingest-1"] and received["ingest-2"]
    assert sorted(received["ingest-1"] + received["ingest-2"]) == sorted(sent)


async def test_a_device_cannot_join_the_cloud_share_group(broker: Broker) -> None:
    """Refused at SUBSCRIBE, so every message of the group reaches the cloud's worker.

    (With password_file + acl_file, Mosquitto 2.0 granted the subscription, dealt the device
    its turn of the group and dropped it at delivery: about half the fleet's data lost.)"""
    group = shared_subscription(TopicKind.DATA)
    sent = [str(n).encode() for n in range(12)]
    async with (
        broker.client(CLOUD_USER, identifier="bt-cloud-ingest-1") as worker,
        broker.client(DEV_C, identifier=DEV_C) as rogue,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        await worker.subscribe(group, qos=1)
        assert granted_qos(await rogue.subscribe(group, qos=1)) == [NOT_AUTHORIZED]
        assert granted_qos(await rogue.subscribe("$share/x/bt/v1/+/+", qos=1)) == [NOT_AUTHORIZED]
        for payload in sent:
            await device.publish(topic(DEV_A, TopicKind.DATA), payload, qos=1)
        got = [(await next_message(worker, timeout=2.0)).payload for _ in sent]
    assert got == sent


async def test_a_device_cannot_take_over_the_cloud_session(broker: Broker) -> None:
    """The attack as found: a device login reconnecting under the cloud's (guessable) client
    id with clean_start=0, again and again, while gateways publish. Every attempt is refused
    and the cloud's persistent session receives every message."""
    cloud_id = "bt-cloud-host1"
    resume = {"clean_start": False, "properties": session_properties()}
    sent = [f"m{n}".encode() for n in range(60)]
    attempts: list[int] = []

    async def attacker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with broker.client(DEV_C, identifier=cloud_id, **resume):
                    attempts.append(0)
            except aiomqtt.MqttCodeError as refused:
                attempts.append(refused.rc or -1)
            await asyncio.sleep(0.02)

    async with broker.client(CLOUD_USER, identifier=cloud_id, **resume) as cloud:
        await cloud.subscribe(subscription(TopicKind.DATA), qos=1)
        stop = asyncio.Event()
        attack = asyncio.create_task(attacker(stop))
        async with broker.client(DEV_A, identifier=DEV_A) as device:
            for payload in sent:
                await device.publish(topic(DEV_A, TopicKind.DATA), payload, qos=1)
                await asyncio.sleep(0.005)
        got = [(await next_message(cloud, timeout=2.0)).payload for _ in sent]
        stop.set()
        await attack
    assert got == sent
    assert attempts and all(code == NOT_AUTHORIZED for code in attempts), attempts


async def test_tls_listener_with_generated_ca(tls_broker: Broker) -> None:
    """The TLS listener serves a certificate for 127.0.0.1 that the test CA vouches for."""
    assert tls_broker.tls_port is not None
    async with (
        tls_broker.client(
            DEV_A,
            identifier=DEV_A,
            port=tls_broker.tls_port,
            tls_context=tls_broker.ssl_context(),
        ) as device,
        tls_broker.client(
            CLOUD_USER,
            identifier="cloud-tls",
            hostname="localhost",
            port=tls_broker.tls_port,
            tls_context=tls_broker.ssl_context(),
        ) as cloud,
    ):
        await cloud.subscribe(topic(DEV_A, TopicKind.HEALTH), qos=1)
        await device.publish(topic(DEV_A, TopicKind.HEALTH), b"ok", qos=1)
        assert (await next_message(cloud)).payload == b"ok"


async def test_tls_client_that_does_not_trust_the_ca_is_refused(tls_broker: Broker) -> None:
    """A client verifying against the system CAs rejects the broker's certificate."""
    assert tls_broker.tls_port is not None
    with pytest.raises(aiomqtt.MqttError) as failed:
        async with tls_broker.client(
            DEV_A,
            identifier=DEV_A,
            port=tls_broker.tls_port,
            tls_context=ssl.create_default_context(),
        ):
            pass
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value) or isinstance(
        failed.value.__cause__, ssl.SSLCertVerificationError
    )


async def test_plain_mqtt_on_the_tls_port_is_refused(tls_broker: Broker) -> None:
    """Credentials are never sent in clear to the production listener."""
    assert tls_broker.tls_port is not None
    with pytest.raises(aiomqtt.MqttError):
        async with tls_broker.client(DEV_A, identifier=DEV_A, port=tls_broker.tls_port, timeout=1):
            pass


async def _queue_command_while_offline(
    broker: Broker, between: Callable[[], Awaitable[None]]
) -> aiomqtt.Message | None:
    """Device subscribes with a persistent session, goes away, a command is queued for it,
    `between()` is awaited (a broker restart or crash), then the device resumes its session.
    Returns the first message it gets within a second, or None."""
    resume = {"identifier": DEV_A, "clean_start": False, "properties": session_properties()}
    async with broker.client(DEV_A, **resume) as device:
        await device.subscribe(topic(DEV_A, TopicKind.CMD), qos=1)
    async with broker.client(CLOUD_USER, identifier="cloud-commands") as cloud:
        await cloud.publish(topic(DEV_A, TopicKind.CMD), b"restart", qos=1)
    await between()
    async with broker.client(DEV_A, **resume) as device:
        try:
            return await next_message(device, timeout=1.0)
        except TimeoutError:
            return None


async def test_queued_command_survives_broker_restart(broker: Broker) -> None:
    """Persistent session + QoS 1: a command queued for an offline device survives SIGTERM."""
    message = await _queue_command_while_offline(broker, broker.restart)
    assert message is not None, broker.log_text()
    assert (str(message.topic), message.payload) == (topic(DEV_A, TopicKind.CMD), b"restart")
    assert (broker.directory / "mosquitto.db").exists()


async def test_broker_crash_loses_what_was_not_autosaved(broker: Broker) -> None:
    """SIGKILL before an autosave loses the queued command: the window autosave_interval bounds."""

    async def crash_and_start() -> None:
        await broker.kill()
        await broker.start()

    assert await _queue_command_while_offline(broker, crash_and_start) is None


async def test_device_added_while_running_can_log_in(broker: Broker) -> None:
    """A login created through the plugin's control topic works at once, bound to its id."""
    await broker.add_device_live("boiler-0099", "late-password")
    async with broker.client("boiler-0099", identifier="boiler-0099") as device:
        assert granted_qos(await device.subscribe(topic("boiler-0099", TopicKind.CMD), qos=1)) == [
            1
        ]
    with pytest.raises(aiomqtt.MqttCodeError):
        async with broker.client("boiler-0099", identifier="bt-cloud-x"):
            pass


async def test_cli_issues_and_removes_logins_on_the_running_broker(
    broker: Broker, tmp_path: Path
) -> None:
    """``cloud devices broker|revoke --broker-admin``: the operator's path on a live broker."""
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'broker_host = "{broker.host}"\nbroker_port = {broker.port}\n'
        f'broker_admin_password_file = "{broker.admin_password_file}"\n'
        f'db_url = "sqlite:///{tmp_path}/cloud.db"\n'
    )
    password_out = tmp_path / "boiler-0077.password"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "boilertwin", "cloud", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def issue() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            cli, "devices", "broker", "--id", "boiler-0077", "--broker-admin",
            "--password-out", str(password_out),
        )  # fmt: skip

    issued = await issue()
    assert issued.returncode == 0, issued.stderr
    password = password_out.read_text().strip()
    async with broker.client("boiler-0077", password=password, identifier="boiler-0077"):
        pass
    reissued = await issue()
    assert reissued.returncode == 0, reissued.stderr
    with pytest.raises(aiomqtt.MqttCodeError):  # the old password stops working
        async with broker.client("boiler-0077", password=password, identifier="boiler-0077"):
            pass
    reserved = await asyncio.to_thread(
        cli, "devices", "broker", "--id", "bt-cloud-x", "--broker-admin"
    )
    assert reserved.returncode == 1 and "reserved" in reserved.stderr


async def test_the_cloud_watching_one_device_gets_its_uplinks_not_its_commands(
    broker: Broker,
) -> None:
    """``edge tail`` subscribes to ``bt/v1/<id>/#`` as the cloud: uplinks only arrive."""
    async with (
        broker.client(CLOUD_USER, identifier="bt-cloud-tail") as watcher,
        broker.client(CLOUD_USER, identifier="bt-cloud-commands") as commands,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        assert granted_qos(await watcher.subscribe(f"bt/v1/{DEV_A}/#", qos=1)) == [1]
        await commands.publish(topic(DEV_A, TopicKind.CMD), b"restart", qos=1)
        await assert_nothing_before_marker(device, watcher, topic(DEV_A, TopicKind.HEALTH))
