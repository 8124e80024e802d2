"""Remote configuration on the real stack: support sets a layer through the API, ``cloud
serve`` signs and sends each affected gateway its next version, a real agent process keeps
and applies it, and the twin shows desired and reported; a configuration the agent refuses
shows the agent's reason and changes nothing on the gateway."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.domain import Role
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration

DEV = "boiler-0001"


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, db_url: str, start_sim: Any
) -> AsyncIterator[tuple[Stack, Gateway]]:
    sim = await start_sim()
    stack = Stack(tmp_path / "cloud", broker, db_url)
    stack.user("sue", Role.SUPPORT)
    stack.user("tom", Role.TENANT)
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV)
    await stack.start()
    await gateway.spawn()
    try:
        yield stack, gateway
    finally:
        if gateway.process is not None:
            await gateway.signal(signal.SIGTERM)
        await stack.close()


async def put_layer(stack: Stack, user: str, path: str, settings: Any) -> httpx.Response:
    return await stack.api.put(
        f"/api/v1/config/layers/{path}",
        json={"settings": settings},
        headers=await stack.login(user),
    )


async def test_a_layer_reaches_the_gateway_and_a_refused_one_shows_why(
    rig: tuple[Stack, Gateway],
) -> None:
    stack, gateway = rig

    async def online() -> bool:
        twin = await stack.twin("sue", DEV)
        return bool(twin["connectivity"]["state"] == "online")

    await eventually(online, "the gateway online", timeout=30)
    answer = await put_layer(stack, "sue", "fleet/*", {"report": {"poll_interval_s": 0.3}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["devices"] == [DEV]

    async def config_state(state: str) -> dict[str, Any] | None:
        view = await stack.get("sue", f"/api/v1/boilers/{DEV}/config")
        return view if view["state"] == state else None

    view = await eventually(lambda: config_state("in_sync"), "configuration v1 applied", 30)
    assert view["desired"]["version"] == 1 and view["reported"]["version"] == 1
    assert view["desired"]["settings"] == {"report": {"poll_interval_s": 0.3}}

    async def twin_reports(version: int) -> bool:
        twin = await stack.twin("sue", DEV)
        return bool(twin["config"] == {"desired": version, "reported": version})

    await eventually(lambda: twin_reports(1), "the twin's reported version (health)", 30)
    assert "polling 4 request(s) every 0.3 s" in gateway.log_text()

    # the model layer for this boiler's model: the cloud's form check passes, the agent's
    # whole-configuration check does not (batches shorter than the poll)
    answer = await put_layer(
        stack, "sue", "model/Condens 7000", {"report": {"batch_interval_s": 0.1}}
    )
    assert answer.status_code == 200 and answer.json()["issued"] == 1
    view = await eventually(lambda: config_state("rejected"), "the agent's refusal", 30)
    assert view["desired"]["version"] == 2 and view["reported"]["version"] == 1
    assert view["reported"]["rejected"]["reason"] == "invalid_args"
    assert "batch_interval_s" in view["reported"]["rejected"]["error"]

    # what the cloud refuses itself, and who may not
    refused = await put_layer(stack, "sue", f"device/{DEV}", {"mqtt": {"host": "evil.example"}})
    assert refused.status_code == 422 and "host" in refused.json()["detail"]
    forbidden = await put_layer(stack, "tom", "fleet/*", {"report": {"poll_interval_s": 5}})
    assert forbidden.status_code == 403
    unknown = await put_layer(stack, "sue", "device/boiler-9999", {"report": {"heartbeat_s": 60}})
    assert unknown.status_code == 404

    # fixing the model layer sends v3, which the gateway applies
    answer = await put_layer(
        stack, "sue", "model/Condens 7000", {"report": {"batch_interval_s": 1.0}}
    )
    assert answer.json()["issued"] == 1
    view = await eventually(lambda: config_state("in_sync"), "configuration v3 applied", 30)
    assert view["reported"]["version"] == 3
    assert gateway.process is not None and gateway.process.returncode is None
