"""The simulated LTE modem: the AT session on bytes, and the server on a real pty."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import serial

from hw_sim.modem import (
    MAX_LINE,
    SETTING_FIELDS,
    AccessTechnology,
    ModemServer,
    ModemSession,
    ModemSettingError,
    ModemState,
    RegistrationStatus,
    serve_modem,
)
from hw_sim.pty import PtyError

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
T0 = datetime(2024, 3, 5, 13, 30, 15, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def info(*lines: str) -> bytes:
    """One information response block, framed as in verbose mode."""
    return ("\r\n" + "\r\n".join(lines) + "\r\n").encode()


@pytest.fixture
def state() -> ModemState:
    return ModemState()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session(state: ModemState, clock: FakeClock) -> ModemSession:
    """A session with echo off, so replies are easy to compare."""
    state.update(echo=False)
    return ModemSession(state, clock=clock)


# --- commands -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b"AT", OK),
        (b"ATI", info("BoilerTwin", "SIM-LTE1", "Revision: SIMLTE1R01A01") + OK),
        (b"AT+CSQ", info("+CSQ: 18,99") + OK),
        (b"AT+CSQ=?", info("+CSQ: (0-31,99),(0-7,99)") + OK),
        (b"AT+CREG?", info("+CREG: 0,1") + OK),
        (b"AT+CEREG?", info("+CEREG: 0,1") + OK),
        (b"AT+CGREG?", info("+CGREG: 0,1") + OK),
        (b"AT+CREG=0", OK),
        (b"AT+COPS?", info('+COPS: 0,0,"Simulated LTE",7') + OK),
        (b"AT+COPS=0", OK),
        (b"AT+CCLK?", info('+CCLK: "24/03/05,13:30:15+00"') + OK),
        (b"AT+CGMI", info("BoilerTwin") + OK),
        (b"AT+CGMM", info("SIM-LTE1") + OK),
        (b"AT+CGMR", info("SIMLTE1R01A01") + OK),
        (b"AT+CGSN", info("861234056789012") + OK),
        (b"AT+GSN", info("861234056789012") + OK),
        (b"AT+CGMI=?", OK),
        (b"AT+CMEE?", info("+CMEE: 0") + OK),
        (b"AT+CSQ;+CREG?", info("+CSQ: 18,99") + info("+CREG: 0,1") + OK),
        (b"AT+CSQ=1", ERROR),
        (b"AT+CREG=2", ERROR),
        (b"AT+NOPE", ERROR),
        (b"ATX9", ERROR),
        (b"AT#", ERROR),
        (b"HELLO", ERROR),
    ],
)
def test_command_replies(session: ModemSession, command: bytes, reply: bytes) -> None:
    assert session.receive(command + b"\r") == reply


def test_commands_are_case_insensitive(session: ModemSession) -> None:
    assert session.receive(b"at+csq\r") == info("+CSQ: 18,99") + OK
    assert session.receive(b"At+CrEg?\r") == info("+CREG: 0,1") + OK
    assert session.receive(b"ati\r").startswith(info("BoilerTwin", "SIM-LTE1"))


def test_spaces_in_a_command_line_are_ignored(session: ModemSession) -> None:
    assert session.receive(b"AT +CSQ \r") == info("+CSQ: 18,99") + OK


def test_echo_is_on_by_default_and_switched_by_ate(clock: FakeClock) -> None:
    state = ModemState()
    session = ModemSession(state, clock=clock)
    assert state.settings.echo is True
    assert session.receive(b"AT+CSQ\r") == b"AT+CSQ\r" + info("+CSQ: 18,99") + OK
    # ATE0 is typed while echo is still on, so it is echoed itself.
    assert session.receive(b"ATE0\r") == b"ATE0\r" + OK
    assert state.settings.echo is False
    assert session.receive(b"AT\r") == OK
    assert session.receive(b"ATE1\r") == OK
    assert session.receive(b"at\r") == b"at\r" + OK


def test_atz_restores_echo_and_plain_errors(session: ModemSession, state: ModemState) -> None:
    session.receive(b"AT+CMEE=2\r")
    assert session.receive(b"ATZ\r") == OK
    assert state.settings.echo is True
    assert session.cmee == 0


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_line_terminators(session: ModemSession, terminator: bytes) -> None:
    assert session.receive(b"AT+CSQ" + terminator + b"AT" + terminator) == (
        info("+CSQ: 18,99") + OK + OK
    )


def test_empty_lines_are_ignored(session: ModemSession, state: ModemState) -> None:
    assert session.receive(b"\r\n\r\r\n\n") == b""
    assert state.commands == 0


def test_input_split_across_reads(session: ModemSession) -> None:
    assert session.receive(b"A") == b""
    assert session.receive(b"T+C") == b""
    assert session.receive(b"SQ") == b""
    assert session.receive(b"\r") == info("+CSQ: 18,99") + OK
    # CR in one read and LF in the next make one line end, not an extra command.
    assert session.receive(b"AT\r") == OK
    assert session.receive(b"\n") == b""


def test_garbage_never_crashes(session: ModemSession, state: ModemState) -> None:
    assert session.receive(b"\xff\xfe\x00\x80AT\r") == ERROR
    assert session.receive(bytes(range(256))) == ERROR + ERROR  # holds an LF and a CR
    assert session.receive(b'AT+CSQ="\xe9"\r') == ERROR
    assert session.receive(b"AT+CSQ\r") == info("+CSQ: 18,99") + OK
    assert state.errors == 4


def test_overlong_line_is_discarded_with_error(session: ModemSession) -> None:
    assert session.receive(b"AT" + b"E" * (MAX_LINE - 1) + b"\r") == ERROR
    # Over the limit across several reads: one ERROR, and nothing of it is executed.
    session.receive(b"AT+CSQ" + b" " * 200)
    assert session.receive(b" " * 200) == b""
    assert session.receive(b"\r") == ERROR
    assert session.receive(b"AT+CSQ\r") == info("+CSQ: 18,99") + OK


def test_line_of_exactly_max_length_is_accepted(session: ModemSession) -> None:
    line = b"AT+CSQ" + b" " * (MAX_LINE - 6)
    assert session.receive(line + b"\r") == info("+CSQ: 18,99") + OK


def test_overlong_line_is_not_echoed(state: ModemState, clock: FakeClock) -> None:
    session = ModemSession(state, clock=clock)
    assert session.receive(b"A" * (MAX_LINE + 1) + b"\r") == ERROR


def test_cme_errors_when_enabled(session: ModemSession) -> None:
    assert session.receive(b"AT+CMEE=1\r") == OK
    assert session.receive(b"AT+COPS=?\r") == b"\r\n+CME ERROR: 4\r\n"
    assert session.receive(b"AT+CMEE=2\r") == OK
    assert session.receive(b"AT+CMEE?\r") == info("+CMEE: 2") + OK
    assert session.receive(b'AT+CCLK="24/01/01,00:00:00+00"\r') == (
        b"\r\n+CME ERROR: operation not supported\r\n"
    )
    assert session.receive(b"AT+CMEE=7\r") == b"\r\n+CME ERROR: incorrect parameters\r\n"
    # Unknown commands stay plain ERROR, as on real modems.
    assert session.receive(b"AT+NOPE\r") == ERROR


def test_error_stops_a_command_line(session: ModemSession) -> None:
    assert session.receive(b"AT+CSQ;+NOPE;+CREG?\r") == info("+CSQ: 18,99") + ERROR


def test_counters(session: ModemSession, state: ModemState) -> None:
    session.receive(b"AT\rAT+NOPE\rAT+CSQ\r\xff\r")
    assert (state.commands, state.errors, state.ignored) == (4, 2, 0)


# --- unresponsive --------------------------------------------------------------------------


def test_unresponsive_modem_says_nothing(session: ModemSession, state: ModemState) -> None:
    state.update(responsive=False, echo=True)
    assert session.receive(b"AT\rAT+CSQ\r\xff\r") == b""
    assert (state.commands, state.ignored) == (0, 3)
    state.update(responsive=True)
    assert session.receive(b"AT\r") == b"AT\r" + OK


def test_input_sent_to_a_hung_modem_is_never_answered(
    session: ModemSession, state: ModemState
) -> None:
    state.update(responsive=False)
    assert session.receive(b"AT+C") == b""
    state.update(responsive=True)
    assert session.receive(b"SQ\r") == b""
    assert state.ignored == 1
    assert session.receive(b"AT+CSQ\r") == info("+CSQ: 18,99") + OK


# --- values from the state -----------------------------------------------------------------


def test_updated_values_are_reflected_in_replies(session: ModemSession, state: ModemState) -> None:
    state.update(rssi=7, ber=3, registration=5, operator="Roam Net", act=AccessTechnology.UTRAN)
    assert session.receive(b"AT+CSQ\r") == info("+CSQ: 7,3") + OK
    assert session.receive(b"AT+CREG?\r") == info("+CREG: 0,5") + OK
    assert session.receive(b"AT+COPS?\r") == info('+COPS: 0,0,"Roam Net",2') + OK
    state.update(manufacturer="Quectel", model="EC25", revision="EC25EFAR06A06M4G")
    state.update(imei="490154203237518")
    assert session.receive(b"ATI\r") == info("Quectel", "EC25", "Revision: EC25EFAR06A06M4G") + OK
    assert session.receive(b"AT+CGSN\r") == info("490154203237518") + OK


@pytest.mark.parametrize("registration", ["not_registered", "searching", "denied", "unknown"])
def test_cops_without_registration(
    session: ModemSession, state: ModemState, registration: str
) -> None:
    state.update(registration=registration, rssi=99)
    assert session.receive(b"AT+COPS?\r") == info("+COPS: 0") + OK
    assert session.receive(b"AT+CSQ\r") == info("+CSQ: 99,99") + OK
    stat = RegistrationStatus[registration.upper()].value
    assert session.receive(b"AT+CREG?\r") == info(f"+CREG: 0,{stat}") + OK


# --- network time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz_quarters", "offset_s", "expected"),
    [
        (0, 0.0, "24/03/05,13:30:15+00"),
        (4, 0.0, "24/03/05,14:30:15+04"),
        (-20, 0.0, "24/03/05,08:30:15-20"),
        (-1, 0.0, "24/03/05,13:15:15-01"),
        (22, 0.0, "24/03/05,19:00:15+22"),  # India, UTC+5:30
        (-48, 0.0, "24/03/05,01:30:15-48"),
        (56, 0.0, "24/03/06,03:30:15+56"),
        (0, -90.0, "24/03/05,13:28:45+00"),
        (0, 86_400.0 * 365, "25/03/05,13:30:15+00"),
        (-4, -14 * 3600.0, "24/03/04,22:30:15-04"),  # offset and zone cross midnight
    ],
)
def test_cclk(
    session: ModemSession, state: ModemState, tz_quarters: int, offset_s: float, expected: str
) -> None:
    state.update(tz_quarters=tz_quarters, clock_offset_s=offset_s)
    assert session.receive(b"AT+CCLK?\r") == info(f'+CCLK: "{expected}"') + OK


def test_cclk_follows_the_clock(session: ModemSession, clock: FakeClock) -> None:
    clock.now += timedelta(hours=1, seconds=5)
    assert session.receive(b"AT+CCLK?\r") == info('+CCLK: "24/03/05,14:30:20+00"') + OK


def test_cclk_with_naive_and_foreign_zone_clocks(state: ModemState) -> None:
    state.update(echo=False)
    naive = ModemSession(state, clock=lambda: datetime(2031, 12, 31, 23, 59, 59))
    assert naive.receive(b"AT+CCLK?\r") == info('+CCLK: "31/12/31,23:59:59+00"') + OK
    east = timezone(timedelta(hours=2))
    zoned = ModemSession(state, clock=lambda: datetime(2024, 3, 5, 15, 30, 15, tzinfo=east))
    assert zoned.receive(b"AT+CCLK?\r") == info('+CCLK: "24/03/05,13:30:15+00"') + OK


def test_no_network_time_reports_the_power_on_default(
    session: ModemSession, state: ModemState, clock: FakeClock
) -> None:
    state.update(network_time=False, tz_quarters=8, clock_offset_s=30.0)
    assert session.receive(b"AT+CCLK?\r") == info('+CCLK: "80/01/06,00:00:00+00"') + OK
    clock.now += timedelta(minutes=2, seconds=3)
    assert session.receive(b"AT+CCLK?\r") == info('+CCLK: "80/01/06,00:02:03+00"') + OK
    state.update(network_time=True)
    assert session.receive(b"AT+CCLK?\r") == info('+CCLK: "24/03/05,15:32:48+08"') + OK


# --- settings ------------------------------------------------------------------------------


def test_defaults(state: ModemState) -> None:
    s = state.settings
    assert (s.rssi, s.registration, s.operator, s.act) == (18, 1, "Simulated LTE", 7)
    assert s.responsive and s.echo and s.network_time


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rssi", 32),
        ("rssi", -1),
        ("rssi", 98),
        ("rssi", True),
        ("rssi", "18"),
        ("rssi", 18.0),
        ("ber", 8),
        ("registration", 6),
        ("registration", "registered"),
        ("registration", None),
        ("act", 1),
        ("act", "lte"),
        ("operator", ""),
        ("operator", 'Bad "quote"'),
        ("operator", "x" * 25),
        ("operator", "Caf\u00e9"),
        ("operator", 42),
        ("model", "two\r\nlines"),
        ("imei", "12345"),
        ("imei", "86123405678901x"),
        ("imei", 861234056789012),
        ("clock_offset_s", float("nan")),
        ("clock_offset_s", float("inf")),
        ("clock_offset_s", 1e12),
        ("clock_offset_s", "60"),
        ("tz_quarters", 57),
        ("tz_quarters", -49),
        ("responsive", 0),
        ("echo", "false"),
        ("network_time", None),
        ("signal", 5),
    ],
)
def test_update_rejects_bad_values(state: ModemState, field: str, value: object) -> None:
    before = state.settings
    with pytest.raises(ModemSettingError) as caught:
        state.update(**{field: value})
    assert caught.value.field == field
    assert caught.value.reason
    assert isinstance(caught.value, ValueError)
    assert state.settings == before


def test_update_is_all_or_nothing(state: ModemState) -> None:
    with pytest.raises(ModemSettingError, match="ber"):
        state.update(rssi=5, ber=42)
    assert state.settings.rssi == 18


def test_update_accepts_enum_names_and_numbers(state: ModemState) -> None:
    assert state.update(registration="Roaming").registration is RegistrationStatus.ROAMING
    assert state.update(registration=2).registration is RegistrationStatus.SEARCHING
    assert state.update(act="gsm").act is AccessTechnology.GSM
    assert state.update(act=7).act is AccessTechnology.E_UTRAN
    assert state.update(rssi=99, ber=0, clock_offset_s=5).clock_offset_s == 5.0


def test_snapshot_is_json_and_feeds_back_into_update(
    session: ModemSession, state: ModemState
) -> None:
    session.receive(b"AT\rAT+NOPE\r")
    state.update(registration="roaming", rssi=31, tz_quarters=-8)
    snap = json.loads(json.dumps(state.snapshot()))
    assert snap["registration"] == 5
    assert snap["registration_name"] == "roaming"
    assert snap["act"] == 7
    assert snap["act_name"] == "e_utran"
    assert snap["rssi_dbm"] == -51
    assert (snap["commands"], snap["errors"], snap["ignored"]) == (2, 1, 0)
    settings = {name: snap[name] for name in SETTING_FIELDS}
    assert ModemState().update(**settings) == state.settings
    state.update(rssi=99)
    assert state.snapshot()["rssi_dbm"] is None


# --- the server on a real pty --------------------------------------------------------------


def _converse(path: str, commands: list[bytes], timeout: float = 2.0) -> list[bytes]:
    """Send each command and collect its reply up to the final result code (blocking)."""
    replies = []
    with serial.Serial(path, 115200, timeout=0.05) as port:
        for command in commands:
            port.write(command)
            reply = b""
            deadline = time.monotonic() + timeout
            while not reply.endswith((b"OK\r\n", b"ERROR\r\n")):
                if time.monotonic() > deadline:
                    break
                reply += port.read(256)
            replies.append(reply)
    return replies


def _silence(path: str, command: bytes, wait: float) -> bytes:
    with serial.Serial(path, 115200, timeout=wait) as port:
        port.write(command)
        heard: bytes = port.read(256)
        return heard


async def _start(state: ModemState, path: Path, clock: FakeClock) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(serve_modem(state, str(path), clock=clock, ready=ready))
    await asyncio.wait_for(ready.wait(), timeout=2)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.integration
async def test_serve_modem_answers_over_a_pty(tmp_path: Path, clock: FakeClock) -> None:
    state = ModemState()
    path = tmp_path / "dev" / "ttyLTE"
    task = await _start(state, path, clock)
    try:
        assert path.is_symlink()
        replies = await asyncio.to_thread(
            _converse,
            str(path),
            [b"AT+CSQ\r", b"ATE0\r", b"AT+CREG?\r\n", b"AT+COPS?\r", b"AT+CCLK?\r", b"AT+X\r"],
        )
        assert replies == [
            b"AT+CSQ\r" + info("+CSQ: 18,99") + OK,
            b"ATE0\r" + OK,
            info("+CREG: 0,1") + OK,
            info('+COPS: 0,0,"Simulated LTE",7') + OK,
            info('+CCLK: "24/03/05,13:30:15+00"') + OK,
            ERROR,
        ]
        state.update(rssi=3, registration="searching")
        replies = await asyncio.to_thread(_converse, str(path), [b"AT+CSQ;+CREG?;+COPS?\r"])
        assert replies == [info("+CSQ: 3,99") + info("+CREG: 0,2") + info("+COPS: 0") + OK]
        assert state.snapshot()["commands"] == 7
    finally:
        await _stop(task)
    assert not os.path.lexists(path)


@pytest.mark.integration
async def test_hung_modem_is_silent_over_a_pty(tmp_path: Path, clock: FakeClock) -> None:
    state = ModemState()
    state.update(responsive=False)
    path = tmp_path / "ttyLTE"
    task = await _start(state, path, clock)
    try:
        assert await asyncio.to_thread(_silence, str(path), b"AT\r", 0.2) == b""
        state.update(responsive=True)
        assert await asyncio.to_thread(_converse, str(path), [b"AT\r"]) == [b"AT\r" + OK]
        assert state.ignored == 1
    finally:
        await _stop(task)


@pytest.mark.integration
async def test_modem_server_context_closes_the_pty(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ttyLTE"
    async with ModemServer(ModemState(), str(path), clock=clock) as server:
        serving = asyncio.create_task(server.serve_forever())
        replies = await asyncio.to_thread(_converse, str(path), [b"AT+CGSN\r"])
        assert replies == [b"AT+CGSN\r" + info("861234056789012") + OK]
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
    assert not os.path.lexists(path)
    await server.aclose()  # twice is harmless


@pytest.mark.integration
async def test_serve_modem_refuses_a_path_that_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "ttyLTE"
    path.write_text("not a tty")
    with pytest.raises(PtyError):
        await serve_modem(ModemState(), str(path))
    assert path.read_text() == "not a tty"
