"""The shipped Mosquitto configuration and ACL, proven against a real Mosquitto 2.0 broker.

What Mosquitto 2.0.11 actually does, as these tests pin down:

- A wrong password and an anonymous client are both refused with CONNACK 0x87 "Not
  authorized" (not 0x86). An empty client id is refused with 0x80 (allow_zero_length_clientid
  false), so every client here passes `identifier`.
- A publish outside the device's own prefix is dropped; at QoS 1 over MQTT 5 the PUBACK
  carries 0x87 "Not authorized" (aiomqtt does not surface PUBACK reason codes, so that check
  uses paho directly); at QoS 0 nothing at all comes back.
- SUBSCRIBE is not checked by the acl_file: the SUBACK grants any filter, even another
  device's `cmd` or `#`. The `read` check happens per message at delivery, so nothing the
  subscriber may not read ever reaches it.
- A shared subscription is delivered round-robin and each message is then checked for `read`
  against the chosen member only. A device that joins the cloud's group is therefore picked in
  turn and its share is dropped: see `test_device_in_cloud_share_group_swallows_messages`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocols.topics import TopicKind, shared_subscription, subscription, topic
from tests.broker import (
    CLOUD_USER,
    DEPLOY_DIR,
    DEVICE_IDS,
    Broker,
)

pytestmark = pytest.mark.integration

DEV_A, DEV_B, DEV_C = DEVICE_IDS
NOT_AUTHORIZED = 0x87
UPLINK = [kind for kind in TopicKind if kind is not TopicKind.CMD]


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

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{username}-paho", protocol=mqtt.MQTTv5
    )
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


def test_acl_file_covers_every_topic_kind() -> None:
    """Each uplink kind is writable by its device and readable by the cloud; cmd the reverse."""
    rules = (DEPLOY_DIR / "acl").read_text()
    cloud_section = rules.split(f"user {CLOUD_USER}\n", 1)[1].split("\npattern", 1)[0]
    for kind in UPLINK:
        assert f"pattern write bt/v1/%u/{kind}\n" in rules
        assert f"topic read {subscription(kind)}\n" in cloud_section
    assert "pattern read bt/v1/%u/cmd\n" in rules
    assert f"topic write {subscription(TopicKind.CMD)}\n" in cloud_section
    assert not re.search(r"^(topic|pattern) (readwrite )?.*#", rules, re.MULTILINE)


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
    assert re.search(r"Sending PUBACK to boiler-0001-paho \(m\d+, rc149\)", broker.log_text())
    async with (
        broker.client(CLOUD_USER, identifier="cloud-ingest") as cloud,
        broker.client(DEV_A, identifier=DEV_A, protocol=aiomqtt.ProtocolVersion.V311) as device,
    ):
        await cloud.subscribe(subscription(TopicKind.DATA), qos=1)
        await device.publish(own, too_big, qos=1)
        await assert_nothing_before_marker(device, cloud, own)


async def test_device_never_receives_another_devices_commands(broker: Broker) -> None:
    """SUBACK grants the foreign filter (2.0 does not check SUBSCRIBE), but nothing arrives."""
    async with (
        broker.client(CLOUD_USER, identifier="cloud-commands") as cloud,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        granted = await device.subscribe(topic(DEV_B, TopicKind.CMD), qos=1)
        granted_all = await device.subscribe("#", qos=1)
        assert granted_qos(granted) + granted_qos(granted_all) == [1, 1]
        await device.subscribe(topic(DEV_A, TopicKind.CMD), qos=1)
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
    ("username", "password"),
    [(DEV_A, "wrong-password"), (None, None), ("unknown-device", "whatever")],
    ids=["wrong-password", "anonymous", "unknown-user"],
)
async def test_bad_credentials_are_refused(
    broker: Broker, username: str | None, password: str | None
) -> None:
    """Mosquitto 2.0.11 answers all three with CONNACK 0x87 Not authorized."""
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with broker.client(username, password=password, identifier="intruder"):
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


@pytest.mark.xfail(
    strict=True,
    raises=TimeoutError,
    reason="Mosquitto 2.0 checks `read` after choosing a shared-subscription member: a "
    "device that joins the cloud's group silently swallows its turn (deploy/mosquitto/README.md)",
)
async def test_device_in_cloud_share_group_swallows_messages(broker: Broker) -> None:
    """A rogue device in `$share/ingest/...` must not cost the cloud any messages (it does)."""
    group = shared_subscription(TopicKind.DATA)
    sent = [str(n).encode() for n in range(6)]
    async with (
        broker.client(CLOUD_USER, identifier="ingest-1") as worker,
        broker.client(DEV_C, identifier=DEV_C) as rogue,
        broker.client(DEV_A, identifier=DEV_A) as device,
    ):
        await worker.subscribe(group, qos=1)
        await rogue.subscribe(group, qos=1)
        for payload in sent:
            await device.publish(topic(DEV_A, TopicKind.DATA), payload, qos=1)
        got = [(await next_message(worker, timeout=0.5)).payload for _ in sent]
    assert got == sent


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


async def test_user_added_while_running_can_log_in(broker: Broker) -> None:
    """`add_user` on a running broker rewrites the password file and reloads it (SIGHUP)."""
    broker.add_user("boiler-0099", "late-password")
    async with asyncio.timeout(3):
        while True:
            try:
                async with broker.client("boiler-0099", identifier="boiler-0099"):
                    return
            except aiomqtt.MqttCodeError:
                await asyncio.sleep(0.05)  # the reload is asynchronous in the broker
