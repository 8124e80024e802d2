"""The modem health probe: AT reply parsers on captured replies, the probe on a simulated modem."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_agent.errors import ModemError
from edge_agent.modem import (
    ModemProbe,
    parse_cclk,
    parse_cops,
    parse_csq,
    parse_registration,
    parse_text,
    split_lines,
)
from hw_sim.modem import ModemState, serve_modem

T0 = datetime(2024, 3, 5, 13, 30, 15, tzinfo=UTC)


def reply(data: bytes) -> list[str]:
    return split_lines(data)


# --- parsers ----------------------------------------------------------------------------------


def test_split_lines_drops_blank_lines_and_terminators() -> None:
    data = b"AT+CSQ\r\r\n+CSQ: 18,99\r\n\r\nOK\r\n"
    assert split_lines(data) == ["AT+CSQ", "+CSQ: 18,99", "OK"]
    assert split_lines(b"\xff\r\nOK\n") == ["\ufffd", "OK"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\r\n+CSQ: 18,99\r\n\r\nOK\r\n", (-77, None)),
        (b"AT+CSQ\r\r\n+CSQ: 18,99\r\n\r\nOK\r\n", (-77, None)),  # echo on
        (b"\r\n+CSQ: 0,0\r\n\r\nOK\r\n", (-113, 0)),
        (b"\r\n+CSQ: 31,7\r\n\r\nOK\r\n", (-51, 7)),
        (b"\r\n+CSQ: 99,99\r\n\r\nOK\r\n", (None, None)),  # not known / not detectable
        (b"\r\n+CREG: 1\r\n\r\n+CSQ: 20,3\r\n\r\nOK\r\n", (-73, 3)),  # unsolicited code first
        (b"\r\n+CSQ: 20,3\r\n\r\n+CEREG: 5\r\n\r\nOK\r\n", (-73, 3)),  # and after
    ],
)
def test_parse_csq(data: bytes, expected: tuple[int | None, int | None]) -> None:
    assert parse_csq(reply(data)) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"AT+CSQ\r\r\nERROR\r\n", "AT+CSQ: ERROR"),
        (b"\r\n+CME ERROR: 10\r\n", "AT+CSQ: +CME ERROR: 10"),
        (b"\r\n+CSQ: 18,99\r\n", "no final result code"),
        (b"\r\nOK\r\n", "no +CSQ line"),
        (b"\r\n+CSQ: 32,0\r\n\r\nOK\r\n", "out of range"),
        (b"\r\n+CSQ: 18,8\r\n\r\nOK\r\n", "out of range"),
        (b"\r\n+CSQ: x,99\r\n\r\nOK\r\n", "expected a number, got 'x'"),
        (b"\r\n+CSQ: -1,99\r\n\r\nOK\r\n", "expected a number"),
        (b"\r\n+CSQ: 18\r\n\r\nOK\r\n", "no +CSQ line"),
        (b"\r\n+CSQ: \xfe\xff,99\r\n\r\nOK\r\n", "expected a number"),
    ],
)
def test_parse_csq_rejects_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ModemError, match=re.escape(message)):
        parse_csq(reply(data))


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"\r\n+CREG: 0,1\r\n\r\nOK\r\n", "CREG", "home"),
        (b"AT+CREG?\r\r\n+CREG: 0,5\r\n\r\nOK\r\n", "CREG", "roaming"),
        (b'\r\n+CREG: 2,2,"00C3","0010B3C4",7\r\n\r\nOK\r\n', "CREG", "searching"),
        (b"\r\n+CEREG: 0,3\r\n\r\nOK\r\n", "CEREG", "denied"),
        (b"\r\n+CEREG: 0,0\r\n\r\nOK\r\n", "CEREG", "not_registered"),
        (b"\r\n+CEREG: 0,4\r\n\r\nOK\r\n", "CEREG", "unknown"),
        # Unsolicited codes (mode 1: <stat> only; mode 2: <stat>,"<lac>",...) are not the answer.
        (b"\r\n+CREG: 1\r\n\r\n+CREG: 1,2\r\n\r\nOK\r\n", "CREG", "searching"),
        (b'\r\n+CREG: 2,5\r\n\r\n+CREG: 1,"00C3","0010B3C4"\r\n\r\nOK\r\n', "CREG", "roaming"),
        (b"\r\n+CEREG: 1\r\n\r\n+CREG: 0,1\r\n\r\nOK\r\n", "CREG", "home"),
    ],
)
def test_parse_registration(data: bytes, name: str, expected: str) -> None:
    assert parse_registration(reply(data), name) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\r\nERROR\r\n", r"AT\+CREG\?: ERROR"),
        (b"\r\n+CREG: 1\r\n\r\nOK\r\n", "no \\+CREG: <n>,<stat> line"),
        (b"\r\n+CREG: 0,12\r\n\r\nOK\r\n", "unknown registration status 12"),
        (b'\r\n+CREG: 0,"1\r\n\r\nOK\r\n', "unbalanced quotes"),
    ],
)
def test_parse_registration_rejects_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ModemError, match=message):
        parse_registration(reply(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'\r\n+COPS: 0,0,"Simulated LTE",7\r\n\r\nOK\r\n', ("Simulated LTE", "lte")),
        (b'AT+COPS?\r\r\n+COPS: 0,0,"Vodafone.de",2\r\n\r\nOK\r\n', ("Vodafone.de", "utran")),
        (b'\r\n+COPS: 0,2,"26202",0\r\n\r\nOK\r\n', ("26202", "gsm")),
        (b'\r\n+COPS: 1,0,"A, B & C",9\r\n\r\nOK\r\n', ("A, B & C", "nb_iot")),
        (b'\r\n+COPS: 0,0,"Old"\r\n\r\nOK\r\n', ("Old", None)),  # no <AcT> from old modems
        (b'\r\n+COPS: 0,0,"Future",42\r\n\r\nOK\r\n', ("Future", "act_42")),
        (b"\r\n+COPS: 0\r\n\r\nOK\r\n", (None, None)),  # not registered
        (b"\r\n+CREG: 1\r\n\r\n+COPS: 0\r\n\r\nOK\r\n", (None, None)),
    ],
)
def test_parse_cops(data: bytes, expected: tuple[str | None, str | None]) -> None:
    assert parse_cops(reply(data)) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"\r\nOK\r\n",
        b"\r\n+COPS: \r\n\r\nOK\r\n",
        b'\r\n+COPS: 0,0,"X",lte\r\n\r\nOK\r\n',
        b"\r\n+CME ERROR: SIM not inserted\r\n",
    ],
)
def test_parse_cops_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ModemError, match=r"AT\+COPS"):
        parse_cops(reply(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'\r\n+CCLK: "24/03/05,13:30:15+00"\r\n\r\nOK\r\n', T0),
        (
            b'\r\n+CCLK: "24/03/05,14:30:15+04"\r\n\r\nOK\r\n',
            datetime(2024, 3, 5, 14, 30, 15, tzinfo=timezone(timedelta(hours=1))),
        ),
        (
            b'AT+CCLK?\r\r\n+CCLK: "24/03/05,08:00:15-22"\r\n\r\nOK\r\n',
            datetime(2024, 3, 5, 8, 0, 15, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        # No network time since power-on: the modem's epoch, decades ago.
        (
            b'\r\n+CCLK: "80/01/06,00:00:07+00"\r\n\r\nOK\r\n',
            datetime(1980, 1, 6, 0, 0, 7, tzinfo=UTC),
        ),
    ],
)
def test_parse_cclk(data: bytes, expected: datetime) -> None:
    parsed = parse_cclk(reply(data))
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "data",
    [
        b'\r\n+CCLK: "24/13/05,13:30:15+00"\r\n\r\nOK\r\n',
        b'\r\n+CCLK: "24/03/05,13:30:15"\r\n\r\nOK\r\n',
        b'\r\n+CCLK: "24/03/05,13:30:15+xx"\r\n\r\nOK\r\n',
        b"\r\n+CCLK: 24/03/05,13:30:15+00\r\n\r\nOK\r\n",
        b"\r\nERROR\r\n",
    ],
)
def test_parse_cclk_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ModemError, match=r"AT\+CCLK"):
        parse_cclk(reply(data))


@pytest.mark.parametrize(
    ("data", "command", "expected"),
    [
        (b"\r\nSIM-LTE1\r\n\r\nOK\r\n", "AT+CGMM", "SIM-LTE1"),
        (b"AT+CGSN\r\r\n861234056789012\r\n\r\nOK\r\n", "AT+CGSN", "861234056789012"),
        (b"\r\n+CGSN: 861234056789012\r\n\r\nOK\r\n", "AT+CGSN", "861234056789012"),
        (
            b"\r\n+CREG: 1\r\n\r\nRevision: EG25GGBR07A08M2G\r\n\r\nOK\r\n",
            "AT+CGMR",
            "Revision: EG25GGBR07A08M2G",
        ),
    ],
)
def test_parse_text(data: bytes, command: str, expected: str) -> None:
    assert parse_text(reply(data), command) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"AT+CGMM\r\r\nERROR\r\n", "AT+CGMM: ERROR"), (b"\r\nOK\r\n", "no information line")],
)
def test_parse_text_rejects_garbage(data: bytes, message: str) -> None:
    with pytest.raises(ModemError, match=re.escape(message)):
        parse_text(reply(data), "AT+CGMM")


# --- the probe on the simulated modem ----------------------------------------------------------


@dataclass
class FakeClock:
    """A clock the test moves by hand; the simulator and the probe share it."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sim:
    state: ModemState
    path: str
    task: asyncio.Task[None]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Sim]:
    state = ModemState()
    path = str(tmp_path / "dev" / "ttyLTE")
    ready = asyncio.Event()
    task = asyncio.create_task(serve_modem(state, path, clock=clock, ready=ready))
    await asyncio.wait_for(ready.wait(), timeout=2)
    yield Sim(state, path, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def probe(sim: Sim, clock: FakeClock) -> AsyncIterator[ModemProbe]:
    async with ModemProbe(sim.path, timeout=0.5, clock=clock) as probe:
        yield probe


DEFAULT_HEALTH = {
    "responding": True,
    "rssi_dbm": -77,
    "ber": None,
    "registration": "home",
    "operator": "Simulated LTE",
    "act": "lte",
    "network_time": "2024-03-05T13:30:15+00:00",
    "clock_offset_s": 0.0,
    "model": "SIM-LTE1",
    "revision": "SIMLTE1R01A01",
    "imei": "861234056789012",
}


@pytest.mark.integration
async def test_probe_reads_the_simulated_modem(sim: Sim, probe: ModemProbe) -> None:
    assert sim.state.settings.echo is True  # the power-on default; the probe copes and turns it off
    assert await probe.read() == DEFAULT_HEALTH
    assert sim.state.settings.echo is False
    assert sim.state.errors == 0


@pytest.mark.integration
async def test_probe_sees_changes(sim: Sim, probe: ModemProbe, clock: FakeClock) -> None:
    assert (await probe.read())["rssi_dbm"] == -77
    sim.state.update(rssi=3, ber=2, registration="roaming", operator="Roam NL", act="utran")
    sim.state.update(clock_offset_s=-30.0, tz_quarters=4)
    health = await probe.read()
    assert health["rssi_dbm"] == -107
    assert health["ber"] == 2
    assert (health["registration"], health["operator"], health["act"]) == (
        "roaming",
        "Roam NL",
        "utran",
    )
    assert health["network_time"] == "2024-03-05T13:29:45+00:00"
    assert health["clock_offset_s"] == -30.0

    sim.state.update(rssi=99, registration="searching", network_time=False)
    clock.now = T0 + timedelta(seconds=20)
    health = await probe.read()
    assert health["rssi_dbm"] is None
    assert (health["registration"], health["operator"], health["act"]) == (
        "searching",
        None,
        None,
    )
    assert health["network_time"] == "1980-01-06T00:00:20+00:00"
    assert isinstance(health["clock_offset_s"], float) and health["clock_offset_s"] < -1e9
    assert health["responding"] is True


@pytest.mark.integration
async def test_identity_is_asked_once(sim: Sim, probe: ModemProbe) -> None:
    await probe.read()
    commands = sim.state.commands
    sim.state.update(model="SIM-LTE2")
    health = await probe.read()
    assert health["model"] == "SIM-LTE1"
    # AT+CSQ, AT+CREG?, AT+CEREG?, AT+COPS?, AT+CCLK?: no ATE0 or identity on an open port.
    assert sim.state.commands - commands == 5


@pytest.mark.integration
async def test_hung_modem_and_recovery(
    sim: Sim, probe: ModemProbe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.modem")
    assert (await probe.read())["responding"] is True
    sim.state.update(responsive=False)
    # The first failure closes the port; later reads reopen it and fail at ATE0.
    for command in ("AT+CSQ", "ATE0", "ATE0"):
        started = time.monotonic()
        health = await probe.read()
        elapsed = time.monotonic() - started
        # What it already knew (the identity, asked once) stays; the rest is missing.
        assert health == {
            "responding": False,
            "error": f"{command}: no reply within 0.5 s",
            "model": "SIM-LTE1",
            "revision": "SIMLTE1R01A01",
            "imei": "861234056789012",
        }
        assert 0.4 < elapsed < 1.5
    sim.state.update(responsive=True, echo=True)  # as if it rebooted
    assert await probe.read() == DEFAULT_HEALTH
    assert await probe.read() == DEFAULT_HEALTH

    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records == [
        ("INFO", f"modem {sim.path}: responding (SIM-LTE1)"),
        ("WARNING", f"modem {sim.path}: not responding: AT+CSQ: no reply within 0.5 s"),
        ("INFO", f"modem {sim.path}: responding (SIM-LTE1)"),
    ]


@pytest.mark.integration
async def test_modem_hung_from_the_start(sim: Sim, clock: FakeClock) -> None:
    sim.state.update(responsive=False)
    async with ModemProbe(sim.path, timeout=0.3, clock=clock) as probe:
        started = time.monotonic()
        assert await probe.read() == {"responding": False, "error": "ATE0: no reply within 0.3 s"}
        assert time.monotonic() - started < 1.0
        sim.state.update(responsive=True)
        assert await probe.read() == DEFAULT_HEALTH


@pytest.mark.integration
async def test_missing_port(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "ttyNONE")
    async with ModemProbe(path, timeout=0.3) as probe:
        for _ in range(2):
            health = await probe.read()
            assert health == {
                "responding": False,
                "error": f"cannot open {path}: No such file or directory",
            }
    assert [r.levelname for r in caplog.records] == ["WARNING"]


@pytest.mark.integration
async def test_port_that_is_not_a_tty(tmp_path: Path) -> None:
    path = tmp_path / "not-a-tty"
    path.write_text("hello")
    async with ModemProbe(str(path), timeout=0.3) as probe:
        health = await probe.read()
    assert health["responding"] is False
    assert str(health["error"]).startswith(f"cannot open {path}: ")


@pytest.mark.integration
async def test_simulator_gone_and_back(tmp_path: Path, clock: FakeClock) -> None:
    state = ModemState()
    path = str(tmp_path / "ttyLTE")

    async def start() -> asyncio.Task[None]:
        ready = asyncio.Event()
        task = asyncio.create_task(serve_modem(state, path, clock=clock, ready=ready))
        await asyncio.wait_for(ready.wait(), timeout=2)
        return task

    task = await start()
    async with ModemProbe(path, timeout=0.3, clock=clock) as probe:
        assert (await probe.read())["responding"] is True
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        health = await probe.read()
        assert health["responding"] is False
        assert health["error"]
        task = await start()
        try:
            assert (await probe.read())["responding"] is True
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.integration
async def test_aclose_and_cancellation(sim: Sim, clock: FakeClock) -> None:
    probe = ModemProbe(sim.path, timeout=0.5, clock=clock)
    assert (await probe.read())["responding"] is True
    await probe.aclose()
    await probe.aclose()  # twice is harmless
    assert (await probe.read())["responding"] is True  # reopens
    sim.state.update(responsive=False)
    reading = asyncio.create_task(probe.read())
    await asyncio.sleep(0.1)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    sim.state.update(responsive=True)
    assert await probe.read() == DEFAULT_HEALTH
    await probe.aclose()


@pytest.mark.integration
async def test_aclose_during_a_read_ends_it(sim: Sim, clock: FakeClock) -> None:
    probe = ModemProbe(sim.path, timeout=5.0, clock=clock)
    await probe.read()
    sim.state.update(responsive=False)
    reading = asyncio.create_task(probe.read())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await probe.aclose()
    health = await asyncio.wait_for(reading, timeout=1)
    assert time.monotonic() - started < 1
    assert health["responding"] is False
    assert "closed" in str(health["error"])
