"""The sans-I/O Modbus slave and RTU framer, on bytes, against the simulated boiler's map."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_sim.boiler import Boiler, DemandOverride
from hw_sim.device import BoilerDevice
from hw_sim.modbus import ExceptionCode, handle_request
from hw_sim.rtu import RtuFramer, crc16, frame, request_length
from protocols.planner import plan_reads
from protocols.reference import REFERENCE_MAP, BoilerStatus, FaultCode


@pytest.fixture
def device() -> BoilerDevice:
    boiler = Boiler(seed=2, start_wall_s=1_763_683_200.0)
    return BoilerDevice(boiler)


def read_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def exception_of(reply: bytes) -> ExceptionCode | None:
    return ExceptionCode(reply[1]) if reply[0] & 0x80 else None


def test_planned_reads_decode_to_the_controller_values(device: BoilerDevice) -> None:
    device.boiler.ch_override = DemandOverride.ON
    device.boiler.advance(120)
    truth = device.boiler.register_values()
    decoded: dict[str, object] = {}
    for request in plan_reads(REFERENCE_MAP.readable(), blocks=REFERENCE_MAP.blocks):
        reply = handle_request(
            device, read_pdu(request.function_code, request.address, request.count)
        )
        assert exception_of(reply) is None, reply
        if request.table.is_bit:
            bits = [(reply[2 + i // 8] >> (i % 8)) & 1 for i in range(request.count)]
            decoded.update(request.decode(bits, REFERENCE_MAP.word_order))
        else:
            registers = struct.unpack(f">{request.count}H", reply[2:])
            decoded.update(request.decode(registers, REFERENCE_MAP.word_order))
    assert decoded["status"] == BoilerStatus.RUNNING
    assert decoded["burner_starts"] == truth["burner_starts"] > 65535
    assert decoded["serial_number"] == "BT24C-000001"
    assert decoded["flow_temp"] == truth["flow_temp"]
    assert decoded["ch_pressure"] == truth["ch_pressure"]
    assert decoded["heat_output"] == pytest.approx(truth["heat_output"], rel=1e-6)
    assert decoded["flame_on"] is True
    assert set(decoded) == {p.name for p in REFERENCE_MAP.readable()}


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (read_pdu(1, 0, 1), ExceptionCode.ILLEGAL_FUNCTION),  # the map has no coils
        (bytes([0x07]), ExceptionCode.ILLEGAL_FUNCTION),
        (bytes([0x41, 0, 0]), ExceptionCode.ILLEGAL_FUNCTION),
        (struct.pack(">BH", 8, 1), ExceptionCode.ILLEGAL_FUNCTION),  # diagnostics other than echo
        (read_pdu(4, 40, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),  # between blocks
        (read_pdu(4, 30, 4), ExceptionCode.ILLEGAL_DATA_ADDRESS),  # runs off the end of a block
        (read_pdu(3, 0, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (read_pdu(4, 0xFFFF, 2), ExceptionCode.ILLEGAL_DATA_ADDRESS),
        (read_pdu(4, 0, 0), ExceptionCode.ILLEGAL_DATA_VALUE),
        (read_pdu(4, 0, 126), ExceptionCode.ILLEGAL_DATA_VALUE),
        (read_pdu(2, 0, 2001), ExceptionCode.ILLEGAL_DATA_VALUE),
        (bytes([0x04, 0x00]), ExceptionCode.ILLEGAL_DATA_VALUE),  # truncated request
        (struct.pack(">BHH", 6, 200, 900), ExceptionCode.ILLEGAL_DATA_VALUE),  # 90.0 C
        (struct.pack(">BHH", 6, 201, 100), ExceptionCode.ILLEGAL_DATA_VALUE),  # 10.0 C
        (struct.pack(">BHH", 6, 210, 2), ExceptionCode.ILLEGAL_DATA_VALUE),  # reset wants 1
        (struct.pack(">BHH", 6, 205, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),  # no point there
        (struct.pack(">BHH", 6, 0, 1), ExceptionCode.ILLEGAL_DATA_ADDRESS),  # not a holding block
        (struct.pack(">BHHB", 16, 200, 2, 3) + b"\x00\x01\x02", ExceptionCode.ILLEGAL_DATA_VALUE),
        (struct.pack(">BHH", 5, 0, 0xFF00), ExceptionCode.ILLEGAL_FUNCTION),
    ],
)
def test_exception_responses(device: BoilerDevice, pdu: bytes, code: ExceptionCode) -> None:
    reply = handle_request(device, pdu)
    assert reply[0] == pdu[0] | 0x80
    assert exception_of(reply) is code


def test_write_single_and_multiple_registers(device: BoilerDevice) -> None:
    assert handle_request(device, struct.pack(">BHH", 6, 200, 655)) == struct.pack(
        ">BHH", 6, 200, 655
    )
    assert device.boiler.ch_setpoint == 65.5
    reply = handle_request(device, struct.pack(">BHHB2H", 16, 201, 2, 4, 480, 0))
    assert reply == struct.pack(">BHH", 16, 201, 2)
    assert device.boiler.dhw_setpoint == 48.0 and device.boiler.ch_enable == 0
    registers = handle_request(device, read_pdu(3, 200, 4))
    assert struct.unpack(">4H", registers[2:]) == (655, 480, 0, 1)


def test_multiple_write_is_all_or_nothing(device: BoilerDevice) -> None:
    reply = handle_request(device, struct.pack(">BHHB2H", 16, 200, 2, 4, 500, 999))
    assert exception_of(reply) is ExceptionCode.ILLEGAL_DATA_VALUE
    assert device.boiler.ch_setpoint == 60.0, "the valid first value was not applied either"


def test_reset_register_resets_a_lockout(device: BoilerDevice) -> None:
    boiler = device.boiler
    boiler.ch_override = DemandOverride.ON
    boiler.inject(FaultCode.F28)
    boiler.advance(60)
    assert boiler.status is BoilerStatus.LOCKOUT
    assert handle_request(device, struct.pack(">BHH", 6, 210, 1)) == struct.pack(">BHH", 6, 210, 1)
    assert boiler.status is not BoilerStatus.LOCKOUT
    assert device.last_reset is not None and device.last_reset.value == "accepted"
    assert struct.unpack(">H", handle_request(device, read_pdu(3, 210, 1))[2:]) == (0,)


def test_device_identification_and_echo(device: BoilerDevice) -> None:
    reply = handle_request(device, bytes([43, 0x0E, 1, 0]))
    assert reply[:7] == bytes([43, 0x0E, 1, 0x81, 0, 0, 3])
    objects, i = {}, 7
    while i < len(reply):
        objects[reply[i]] = reply[i + 2 : i + 2 + reply[i + 1]]
        i += 2 + reply[i + 1]
    assert objects == {0: b"boilertwin", 1: b"BT-24C", 2: b"2.3.1"}
    assert handle_request(device, bytes([8, 0, 0, 0xAB, 0xCD])) == bytes([8, 0, 0, 0xAB, 0xCD])


def test_crc_matches_the_specification_example() -> None:
    # Modbus over serial line spec V1.02, 6.2.2: 01 03 00 00 00 0A -> CRC C5 CD.
    assert frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert crc16(b"") == 0xFFFF


def test_framer_joins_split_frames_and_separates_back_to_back_ones() -> None:
    framer = RtuFramer()
    one, two = frame(1, read_pdu(4, 0, 10)), frame(1, struct.pack(">BHHB2H", 16, 200, 2, 4, 1, 2))
    stream = one + two
    frames = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i : i + 1])
    assert [f.raw for f in frames] == [one, two]
    assert not framer.pending and framer.crc_errors == 0


def test_framer_drops_bad_crc_without_reply_and_recovers() -> None:
    framer = RtuFramer()
    bad = bytearray(frame(1, read_pdu(4, 0, 10)))
    bad[3] ^= 0x10
    assert framer.feed(bytes(bad)) == []
    assert framer.crc_errors == 1 and not framer.pending
    good = frame(1, read_pdu(4, 0, 10))
    assert [f.raw for f in framer.feed(good)] == [good]


def test_framer_uses_silence_for_unknown_functions_and_partial_frames() -> None:
    framer = RtuFramer()
    unknown = frame(1, bytes([0x41, 1, 2, 3]))
    assert request_length(unknown) is None
    assert framer.feed(unknown) == [] and framer.pending
    flushed = framer.flush()
    assert flushed is not None and flushed.pdu == bytes([0x41, 1, 2, 3])
    assert framer.feed(frame(1, read_pdu(4, 0, 10))[:5]) == []
    assert framer.flush() is None and framer.crc_errors == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_framer_never_raises_on_line_noise(noise: bytes) -> None:
    framer = RtuFramer()
    for f in framer.feed(noise):
        assert crc16(f.raw[:-2]) == int.from_bytes(f.raw[-2:], "little")
    framer.flush()
    assert not framer.pending


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=260))
def test_slave_answers_any_pdu_with_a_reply_never_an_error(pdu: bytes) -> None:
    device = BoilerDevice(Boiler(seed=1))
    reply = handle_request(device, pdu)
    assert reply[0] in (pdu[0], pdu[0] | 0x80)
    assert len(reply) <= 253
