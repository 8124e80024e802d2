"""Exports of telemetry and the thread (`cloud.exports`) on SQLite and PostgreSQL: the CSV
and the Parquet hold exactly the stored rows, a large export streams in chunks, and each
export is role-checked like the data it comes from."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cloud import exports, thread
from cloud.domain import Role
from tests.cloud.api_helpers import HOUR, T0, World, problem, world_for

SINCE, UNTIL = T0 - HOUR, T0 + HOUR


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as world:
        for user, role in (("olga", Role.OWNER), ("sue", Role.SUPPORT), ("tina", Role.TENANT)):
            world.user(user, role)
        world.boiler("boiler-a", owner="olga")
        world.boiler("boiler-b")
        world.samples("boiler-a", "flow_temp", [(T0 + i * 1000, 40.0 + i) for i in range(5)])
        world.samples("boiler-a", "firmware", [(T0, 'v1, "beta"')])
        world.samples("boiler-b", "flow_temp", [(T0, 55.5)])
        with world.db() as session:
            thread.record(
                session,
                device_id="boiler-a",
                kind="alarm",
                ts_ms=T0,
                recorded_ms=T0,
                actor="device:boiler-a",
                data={"fault": "F28", "text": "ignition failure, lockout"},
            )
            thread.record(
                session,
                device_id="boiler-a",
                kind="request",
                ts_ms=T0 + 1,
                recorded_ms=T0 + 1,
                actor="olga",
                subject="job-1",
                data={"problem": "no heating"},
            )
        yield world


def get(world: World, user: str, path: str, **params: object) -> object:
    return world.client.get(
        f"/api/v1{path}",
        params={"since": SINCE, "until": UNTIL, **params},
        headers=world.login(user),
    )


def test_a_boilers_telemetry_as_csv_and_parquet(world: World) -> None:
    answer = get(world, "olga", "/boilers/boiler-a/export/telemetry")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"] == 'attachment; filename="telemetry-boiler-a.csv"'
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [name for name, _ in exports.TELEMETRY.columns] == list(rows[0])
    flows = [r for r in rows if r["point"] == "flow_temp"]
    assert [float(r["value"]) for r in flows] == [40.0, 41.0, 42.0, 43.0, 44.0]
    assert flows[0]["time"].endswith(".000Z") and flows[1]["time"].endswith(".000Z")
    assert int(flows[0]["ts_ms"]) == T0
    [firmware] = [r for r in rows if r["point"] == "firmware"]
    assert firmware["text"] == 'v1, "beta"' and firmware["value"] == ""
    assert {r["device_id"] for r in rows} == {"boiler-a"}

    parquet = get(world, "olga", "/boilers/boiler-a/export/telemetry", format="parquet")
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == 6 and table.schema.field("value").type == "double"
    rows = table.to_pylist()
    assert [r["value"] for r in rows if r["point"] == "flow_temp"] == [40.0, 41.0, 42.0, 43.0, 44.0]
    only = get(world, "olga", "/boilers/boiler-a/export/telemetry", points="firmware")
    assert len(list(csv.DictReader(io.StringIO(only.text)))) == 1


def test_a_boilers_thread_with_its_chain(world: World) -> None:
    answer = get(world, "olga", "/boilers/boiler-a/export/thread", format="parquet")
    table = pq.read_table(io.BytesIO(answer.content)).to_pylist()
    assert [r["kind"] for r in table] == ["device", "alarm", "request"]  # registered, then ours
    assert table[1]["data"] == '{"fault": "F28", "text": "ignition failure, lockout"}'
    assert [r["chain_seq"] for r in table] == [1, 2, 3]
    assert all(len(r["hash"]) == 64 for r in table)
    text = get(world, "olga", "/boilers/boiler-a/export/thread").text
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(text))]
    assert kinds == ["device", "alarm", "request"]


def test_exports_are_role_checked(world: World) -> None:
    assert get(world, "tina", "/boilers/boiler-a/export/telemetry").status_code == 404
    assert get(world, "olga", "/boilers/boiler-b/export/thread").status_code == 404
    refused = get(world, "olga", "/fleet/export/telemetry")
    assert problem(refused, 403)["detail"] == "an owner may not export the fleet's telemetry"
    fleet = get(world, "sue", "/fleet/export/telemetry")
    assert {r["device_id"] for r in csv.DictReader(io.StringIO(fleet.text))} == {
        "boiler-a",
        "boiler-b",
    }
    events = get(world, "sue", "/fleet/export/thread", format="parquet")
    kinds = pq.read_table(io.BytesIO(events.content)).column("kind").to_pylist()
    assert "alarm" in kinds and "request" in kinds


@pytest.mark.parametrize(
    "params", [{"format": "xlsx"}, {"since": "yesterday"}, {"points": "Flow-Temp"}]
)
def test_bad_export_requests_are_422(world: World, params: dict[str, object]) -> None:
    problem(get(world, "sue", "/boilers/boiler-a/export/telemetry", **params), 422)


def test_a_large_export_streams_every_row(world: World) -> None:
    count = exports.CHUNK * 2 + 17
    world.samples("boiler-b", "return_temp", [(T0 + i, float(i)) for i in range(count)])
    answer = get(
        world, "sue", "/boilers/boiler-b/export/telemetry", points="return_temp", format="parquet"
    )
    table = pq.read_table(io.BytesIO(answer.content))
    assert table.num_rows == count
    assert pq.ParquetFile(io.BytesIO(answer.content)).num_row_groups == 3  # one per chunk
    assert table.column("value").to_pylist() == [float(i) for i in range(count)]
    backwards = get(world, "sue", "/boilers/boiler-b/export/telemetry", since=UNTIL, until=SINCE)
    assert backwards.status_code == 200 and backwards.text.count("\r\n") == 1  # the header
    empty = get(
        world, "sue", "/boilers/boiler-b/export/telemetry", since=0, until=1, format="parquet"
    )
    assert pq.read_table(io.BytesIO(empty.content)).num_rows == 0
