"""The broker's own figures (Mosquitto's ``$SYS/broker/#``) as Prometheus gauges.

Ingest's lag (`cloud.metrics.INGEST_LAG`) shows a backlog once it is being worked off; the
broker shows it while it builds: messages stored for sessions that are away or slow
(``store/messages/count`` and ``bytes``), messages it dropped at a queue limit
(``publish/messages/dropped``), persistent sessions offline (``clients/disconnected``),
and its message rates. Every numeric ``$SYS/broker/<figure>`` becomes
``boilertwin_broker{figure="<figure>"}`` (about 60 series; Mosquitto publishes them every
``sys_interval`` seconds, 10 in the shipped config). See docs/operations.md.

The figures are read over a connection of their own (client id ``<mqtt_client_id>-sys``,
clean session), so ingest's persistent session never carries them; ``cloud serve`` runs it.
A cluster broker (EMQX, HiveMQ, VerneMQ) publishes other ``$SYS`` trees or none: scrape its
own Prometheus endpoint instead and leave this unused (``broker_stats = false``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiomqtt

from cloud.backoff import Backoff
from cloud.metrics import BROKER_FIGURES
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

SYS_PREFIX = "$SYS/broker/"
SYS_FILTER = "$SYS/broker/#"
RECONNECT = Backoff(min_s=1.0, max_s=60.0)


def figure(topic: str, payload: bytes) -> tuple[str, float] | None:
    """(figure name, value) of one ``$SYS`` message, or None if it is not a number
    (``version``, ``timestamp``). ``uptime`` reads ``"1234 seconds"``: the first word counts."""
    if not topic.startswith(SYS_PREFIX):
        return None
    words = payload.decode("ascii", "replace").split()
    if not words:
        return None
    try:
        value = float(words[0])
    except ValueError:
        return None
    return topic.removeprefix(SYS_PREFIX), value


def record(topic: str, payload: bytes) -> bool:
    """Set the gauge of one ``$SYS`` message; False if it carries no figure."""
    found = figure(topic, payload)
    if found is None:
        return False
    BROKER_FIGURES.labels(found[0]).set(found[1])
    return True


async def run_broker_stats(
    settings: CloudSettings,
    backoff: Backoff = RECONNECT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Follow the broker's ``$SYS`` figures for ever, reconnecting after a capped backoff.
    A broker that refuses the subscription (an old ACL without ``$SYS``) is logged once."""
    failures = 0
    while True:
        try:
            async with aiomqtt.Client(
                settings.broker_host,
                settings.broker_port,
                username=settings.mqtt_username,
                password=settings.mqtt_password(),
                identifier=f"{settings.mqtt_client_id}-sys",
                protocol=aiomqtt.ProtocolVersion.V5,
                tls_context=settings.mqtt_tls_context(),
                timeout=10,
            ) as client:
                granted = await client.subscribe(SYS_FILTER, qos=0)
                if _refused(granted):
                    log.warning(
                        "broker refused %s: no broker figures (refresh the cloud's broker role:"
                        " `boilertwin cloud broker refresh-roles`)",
                        SYS_FILTER,
                    )
                failures = 0
                async for message in client.messages:
                    if isinstance(message.payload, bytes | bytearray):
                        record(str(message.topic), bytes(message.payload))
        except aiomqtt.MqttError as exc:
            failures += 1
            if failures == 1:
                log.info("broker figures: connection ended (%s); reconnecting", exc)
        await sleep(backoff.delay(max(failures, 1)))


def _refused(granted: object) -> bool:
    """Whether a SUBACK's granted QoS / reason codes say the subscription was refused."""
    codes = granted if isinstance(granted, tuple | list) else (granted,)
    for code in codes:
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            return True
    return False
