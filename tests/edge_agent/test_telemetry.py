"""Report by exception, alarms and batching: pure logic on polls and millisecond timestamps."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from edge_agent.poller import Poll
from edge_agent.reporter import ReportByException, Sample, alarms
from edge_agent.telemetry import MAX_BATCH_READINGS, Telemetry, TelemetrySettings
from protocols.messages import (
    Event,
    EventKind,
    Quality,
    Reading,
    Scalar,
    TelemetryBatch,
    UplinkMessage,
)
from protocols.reference import BoilerStatus, FaultCode
from protocols.wire import MAX_PAYLOAD_BYTES, encode_payload

DEV = "boiler-0001"
T0 = 1_763_694_000_000
POLL_MS = 10_000
HEARTBEAT_MS = 600_000
BATCH_MS = 60_000

GOOD, BAD = Quality.GOOD, Quality.BAD
RUNNING, LOCKOUT = int(BoilerStatus.RUNNING), int(BoilerStatus.LOCKOUT)


def good(value: Scalar) -> Sample:
    return Sample(value, GOOD)


BAD_SAMPLE = Sample(None, BAD)


# -- report by exception --------------------------------------------------------------------


@pytest.fixture
def rbe() -> ReportByException:
    return ReportByException({"flow_temp": 0.5, "modulation": 5.0}, heartbeat_ms=HEARTBEAT_MS)


def test_first_value_is_always_reported(rbe: ReportByException) -> None:
    assert rbe.offer("flow_temp", good(20.0), T0) == Reading("flow_temp", T0, 20.0, GOOD)
    assert rbe.offer("pump", good(False), T0) == Reading("pump", T0, False, GOOD)
    assert rbe.offer("pressure", BAD_SAMPLE, T0) == Reading("pressure", T0, None, BAD)


def test_deadband_is_measured_from_the_last_reported_value(rbe: ReportByException) -> None:
    rbe.offer("flow_temp", good(20.0), T0)
    drift = [20.125, 20.25, 20.375, 20.5, 20.625, 20.75, 20.875, 21.0]
    reported = [
        value
        for i, value in enumerate(drift, 1)
        if rbe.offer("flow_temp", good(value), T0 + i * POLL_MS) is not None
    ]
    assert reported == [20.5, 21.0]  # every step is under the band; the drift is not
    assert rbe.offer("flow_temp", good(20.5), T0 + 10 * POLL_MS) is not None  # downwards too
    assert rbe.offer("flow_temp", good(20.75), T0 + 11 * POLL_MS) is None


def test_points_without_a_deadband_report_every_change(rbe: ReportByException) -> None:
    rbe.offer("fault_code", good(0), T0)
    assert rbe.offer("fault_code", good(0), T0 + POLL_MS) is None
    assert rbe.offer("fault_code", good(28), T0 + 2 * POLL_MS) is not None
    rbe.offer("return_temp", good(40.0), T0)
    assert rbe.offer("return_temp", good(40.01), T0 + POLL_MS) is not None


def test_a_quality_change_is_always_reported(rbe: ReportByException) -> None:
    rbe.offer("flow_temp", good(20.0), T0)
    assert rbe.offer("flow_temp", Sample(20.0, BAD), T0 + POLL_MS) == Reading(
        "flow_temp", T0 + POLL_MS, 20.0, BAD
    )
    assert rbe.offer("flow_temp", Sample(20.0, BAD), T0 + 2 * POLL_MS) is None
    assert rbe.offer("flow_temp", Sample(20.0, Quality.UNCERTAIN), T0 + 3 * POLL_MS) is not None
    assert rbe.offer("flow_temp", good(20.0), T0 + 4 * POLL_MS) is not None


def test_a_non_numeric_change_is_reported(rbe: ReportByException) -> None:
    rbe.offer("mode", good("heating"), T0)
    assert rbe.offer("mode", good("heating"), T0 + POLL_MS) is None
    assert rbe.offer("mode", good("dhw"), T0 + 2 * POLL_MS) is not None
    assert rbe.offer("mode", good(None), T0 + 3 * POLL_MS) is not None


def test_heartbeat_resends_an_unchanged_value(rbe: ReportByException) -> None:
    rbe.offer("flow_temp", good(20.0), T0)
    assert rbe.offer("flow_temp", good(20.0), T0 + HEARTBEAT_MS - 1) is None
    assert rbe.offer("flow_temp", good(20.25), T0 + HEARTBEAT_MS) == Reading(
        "flow_temp", T0 + HEARTBEAT_MS, 20.25, GOOD
    )
    # the next heartbeat counts from that report
    assert rbe.offer("flow_temp", good(20.25), T0 + 2 * HEARTBEAT_MS - 1) is None
    assert rbe.offer("flow_temp", good(20.25), T0 + 2 * HEARTBEAT_MS) is not None


def test_bools_are_not_numbers(rbe: ReportByException) -> None:
    # as numbers True -> False would be a change of 1, well under modulation's 5.0 band
    rbe.offer("modulation", good(True), T0)
    assert rbe.offer("modulation", good(False), T0 + POLL_MS) is not None
    assert rbe.offer("modulation", good(False), T0 + 2 * POLL_MS) is None
    # and a number replacing a bool is judged as a change of value, not by the band
    assert rbe.offer("modulation", good(2), T0 + 3 * POLL_MS) is not None
    assert rbe.offer("modulation", good(4), T0 + 4 * POLL_MS) is None


def test_forget_reports_everything_afresh(rbe: ReportByException) -> None:
    rbe.offer("flow_temp", good(20.0), T0)
    rbe.forget()
    assert rbe.offer("flow_temp", good(20.0), T0 + POLL_MS) is not None


# -- alarms ---------------------------------------------------------------------------------


def state(status: int, fault: int) -> dict[str, Scalar]:
    return {"status": status, "fault_code": fault, "flow_temp": 55.0}


def test_entering_lockout_raises_lockout() -> None:
    raised = alarms(state(RUNNING, 28), state(LOCKOUT, 28))
    assert raised == [(EventKind.LOCKOUT, {"status": LOCKOUT, "fault_code": 28, "fault": "F28"})]


def test_a_fault_code_appearing_raises_fault_with_its_text() -> None:
    raised = alarms(state(RUNNING, 0), state(RUNNING, 28))
    assert raised == [
        (
            EventKind.FAULT,
            {
                "status": RUNNING,
                "fault_code": 28,
                "fault": "F28",
                "previous": 0,
                "text": FaultCode.F28.text,
            },
        )
    ]
    # a code the reference does not know is still raised, without text
    ((kind, detail),) = alarms(state(RUNNING, 0), state(RUNNING, 99))
    assert kind is EventKind.FAULT and detail["fault"] == "F99" and "text" not in detail


def test_a_fault_code_clearing_raises_fault_cleared() -> None:
    raised = alarms(state(RUNNING, 28), state(RUNNING, 0))
    assert raised == [
        (EventKind.FAULT_CLEARED, {"status": RUNNING, "fault_code": 0, "previous": 28})
    ]


def test_leaving_lockout_raises_lockout_cleared() -> None:
    raised = alarms(state(LOCKOUT, 28), state(int(BoilerStatus.STANDBY), 0))
    assert [kind for kind, _ in raised] == [EventKind.FAULT_CLEARED, EventKind.STATE_CHANGE]
    assert raised[1][1] == {
        "status": 0,
        "fault_code": 0,
        "previous": LOCKOUT,
        "change": "lockout_cleared",
    }


def test_lockout_with_a_new_fault_raises_both() -> None:
    raised = alarms(state(RUNNING, 0), state(LOCKOUT, 29))
    assert [kind for kind, _ in raised] == [EventKind.FAULT, EventKind.LOCKOUT]
    assert raised[1][1]["fault"] == "F29"


@pytest.mark.parametrize(
    "values", [state(RUNNING, 0), state(LOCKOUT, 28), state(int(BoilerStatus.BLOCKING_ERROR), 22)]
)
def test_nothing_is_raised_without_a_change(values: dict[str, Scalar]) -> None:
    assert alarms(values, dict(values, flow_temp=70.0)) == []


def test_first_poll_with_a_fault_raises_fault() -> None:
    raised = alarms(None, state(int(BoilerStatus.BLOCKING_ERROR), 22))
    assert raised == [
        (
            EventKind.FAULT,
            {
                "status": int(BoilerStatus.BLOCKING_ERROR),
                "fault_code": 22,
                "fault": "F22",
                "previous": None,
                "text": FaultCode.F22.text,
            },
        )
    ]
    assert alarms(None, state(RUNNING, 0)) == []
    assert [kind for kind, _ in alarms(None, state(LOCKOUT, 28))] == [
        EventKind.FAULT,
        EventKind.LOCKOUT,
    ]


def test_unread_points_raise_nothing() -> None:
    assert alarms(state(LOCKOUT, 28), {"flow_temp": 20.0}) == []


# -- telemetry ------------------------------------------------------------------------------


def make(comms_lost_after: int = 1) -> Telemetry:
    settings = TelemetrySettings(
        batch_interval_ms=BATCH_MS,
        heartbeat_ms=HEARTBEAT_MS,
        deadbands={"flow_temp": 0.5},
        comms_lost_after=comms_lost_after,
    )
    return Telemetry(settings, device_id=DEV)


def answered(ts: int, values: Mapping[str, Scalar], bad: tuple[str, ...] = ()) -> Poll:
    samples = {point: good(value) for point, value in values.items()}
    samples.update({point: BAD_SAMPLE for point in bad})
    errors = tuple(f"CommsTimeout reading {point}" for point in bad)
    return Poll(ts, samples, answered=2, errors=errors)


def silent(ts: int, points: tuple[str, ...] = ("status", "fault_code", "flow_temp")) -> Poll:
    return Poll(
        ts,
        {point: BAD_SAMPLE for point in points},
        answered=0,
        errors=("CommsTimeout reading holding 0+10: no reply",),
    )


def events(messages: list[UplinkMessage]) -> list[EventKind]:
    return [m.kind for m in messages if isinstance(m, Event)]


def only_batch(messages: list[UplinkMessage]) -> TelemetryBatch:
    (batch,) = messages
    assert isinstance(batch, TelemetryBatch)
    return batch


def test_readings_wait_for_the_batch_interval() -> None:
    telemetry = make()
    assert not telemetry.due(T0)
    assert telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True) == []
    assert telemetry.pending_readings == 3
    t = T0
    for value in (56.0, 57.0, 58.0, 59.0, 60.0):
        t += POLL_MS
        assert (
            telemetry.on_poll(answered(t, state(RUNNING, 0) | {"flow_temp": value}), sync=True)
            == []
        )
        assert not telemetry.due(t)
    assert telemetry.pending_readings == 8
    assert telemetry.due(T0 + BATCH_MS)

    batch = only_batch(telemetry.flush(T0 + BATCH_MS, sync=True))
    assert (batch.dev, batch.ts, batch.sync) == (DEV, T0 + BATCH_MS, True)
    assert [(r.point, r.value) for r in batch.readings[:3]] == [
        ("status", RUNNING),
        ("fault_code", 0),
        ("flow_temp", 55.0),
    ]
    assert [r.value for r in batch.readings[3:]] == [56.0, 57.0, 58.0, 59.0, 60.0]
    assert [r.ts for r in batch.readings[3:]] == [T0 + i * POLL_MS for i in range(1, 6)]
    assert telemetry.pending_readings == 0 and not telemetry.due(T0 + 10 * BATCH_MS)
    assert telemetry.flush(T0 + BATCH_MS, sync=True) == []

    # the next interval starts with the next reading, not with the flush
    t = T0 + BATCH_MS + 3 * POLL_MS
    telemetry.on_poll(answered(t, state(RUNNING, 0) | {"flow_temp": 70.0}), sync=False)
    assert not telemetry.due(t + BATCH_MS - 1) and telemetry.due(t + BATCH_MS)
    assert only_batch(telemetry.flush(t + BATCH_MS, sync=False)).sync is False


def test_an_alarm_flushes_the_pending_batch_then_the_events() -> None:
    telemetry = make()
    telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True)
    telemetry.on_poll(answered(T0 + POLL_MS, state(RUNNING, 0) | {"flow_temp": 40.0}), sync=True)
    t = T0 + 2 * POLL_MS
    out = telemetry.on_poll(answered(t, state(LOCKOUT, 28) | {"flow_temp": 40.0}), sync=True)
    assert [type(m) for m in out] == [TelemetryBatch, Event, Event]
    batch, fault, lockout = out
    assert isinstance(batch, TelemetryBatch)
    assert [(r.point, r.value) for r in batch.readings] == [
        ("status", RUNNING),
        ("fault_code", 0),
        ("flow_temp", 55.0),
        ("flow_temp", 40.0),
        ("status", LOCKOUT),  # the values that raised the alarm travel with it
        ("fault_code", 28),
    ]
    assert events(out) == [EventKind.FAULT, EventKind.LOCKOUT]
    assert isinstance(fault, Event) and isinstance(lockout, Event)
    assert fault.detail["fault"] == "F28" and fault.detail["text"] == FaultCode.F28.text
    assert all(m.ts == t and m.sync and m.dev == DEV for m in out)
    assert telemetry.pending_readings == 0 and not telemetry.due(t + BATCH_MS)

    out = telemetry.on_poll(answered(t + POLL_MS, state(LOCKOUT, 28)), sync=True)
    assert out == []  # still in lockout: nothing new
    out = telemetry.on_poll(answered(t + 2 * POLL_MS, state(RUNNING, 0)), sync=True)
    assert events(out) == [EventKind.FAULT_CLEARED, EventKind.STATE_CHANGE]


def test_an_alarm_with_nothing_pending_sends_only_the_event() -> None:
    telemetry = make()
    telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True)
    telemetry.flush(T0, sync=True)
    # the status point was unreadable for one poll: its last good value still counts
    out = telemetry.on_poll(answered(T0 + POLL_MS, {"fault_code": 0}, bad=("status",)), sync=True)
    assert out == []
    telemetry.flush(T0 + POLL_MS, sync=True)
    out = telemetry.on_poll(
        answered(T0 + 2 * POLL_MS, {"status": RUNNING, "fault_code": 0}), sync=True
    )
    assert out == []  # back to good, same value: a reading, no alarm
    assert telemetry.pending_readings == 1


def test_comms_lost_once_then_restored_once() -> None:
    telemetry = make(comms_lost_after=3)
    values = state(RUNNING, 0)
    assert telemetry.on_poll(answered(T0, values), sync=True) == []
    t = T0
    for _ in range(2):  # under the threshold: nothing, not even bad readings
        t += POLL_MS
        assert telemetry.on_poll(silent(t), sync=True) == []
        assert not telemetry.comms_lost
    assert telemetry.pending_readings == 3

    t += POLL_MS
    out = telemetry.on_poll(silent(t), sync=True)
    assert events(out) == [EventKind.COMMS_LOST] and len(out) == 1
    (lost,) = out
    assert isinstance(lost, Event) and lost.ts == t
    assert dict(lost.detail) == {"error": "CommsTimeout reading holding 0+10: no reply", "polls": 3}
    assert telemetry.comms_lost
    assert telemetry.pending_readings == 6  # each point reported bad, once

    for _ in range(5):
        t += POLL_MS
        assert telemetry.on_poll(silent(t), sync=True) == []
    assert telemetry.pending_readings == 6

    t += POLL_MS
    out = telemetry.on_poll(answered(t, values), sync=True)
    assert events(out) == [EventKind.COMMS_RESTORED] and len(out) == 1
    assert not telemetry.comms_lost
    assert telemetry.pending_readings == 9  # fresh good readings, same values as before
    t += POLL_MS
    assert telemetry.on_poll(answered(t, values), sync=True) == []

    batch = only_batch(telemetry.flush(t, sync=True))
    qualities = [r.quality for r in batch.readings]
    assert qualities == [GOOD] * 3 + [BAD] * 3 + [GOOD] * 3
    assert all(r.value is None for r in batch.readings[3:6])
    assert [r.point for r in batch.readings[6:]] == ["status", "fault_code", "flow_temp"]

    # the count starts again: a fresh outage needs the full threshold
    for i in range(1, 4):
        out = telemetry.on_poll(silent(t + i * POLL_MS), sync=True)
        assert events(out) == ([EventKind.COMMS_LOST] if i == 3 else [])


def test_a_single_silent_poll_below_the_threshold_reports_nothing_bad() -> None:
    telemetry = make(comms_lost_after=2)
    telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True)
    telemetry.flush(T0, sync=True)
    assert telemetry.on_poll(silent(T0 + POLL_MS), sync=True) == []
    assert telemetry.pending_readings == 0
    assert telemetry.on_poll(answered(T0 + 2 * POLL_MS, state(RUNNING, 0)), sync=True) == []
    assert telemetry.pending_readings == 0  # unchanged and never reported bad: nothing to say


def test_the_default_threshold_is_one_silent_poll() -> None:
    telemetry = make()
    out = telemetry.on_poll(silent(T0), sync=False)
    assert events(out) == [EventKind.COMMS_LOST]
    assert out[0].sync is False
    assert telemetry.pending_readings == 3


def test_a_partly_answered_poll_reports_bad_points_without_comms_lost() -> None:
    telemetry = make(comms_lost_after=3)
    telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True)
    telemetry.flush(T0, sync=True)
    out = telemetry.on_poll(
        answered(T0 + POLL_MS, {"status": RUNNING}, bad=("flow_temp",)), sync=True
    )
    assert out == [] and not telemetry.comms_lost
    batch = only_batch(telemetry.flush(T0 + POLL_MS, sync=True))
    assert [(r.point, r.quality) for r in batch.readings] == [("flow_temp", BAD)]


def test_comms_restored_into_lockout_explains_then_alarms() -> None:
    telemetry = make()
    telemetry.on_poll(answered(T0, state(RUNNING, 0)), sync=True)
    telemetry.on_poll(silent(T0 + POLL_MS), sync=True)
    out = telemetry.on_poll(answered(T0 + 2 * POLL_MS, state(LOCKOUT, 28)), sync=True)
    assert [type(m).__name__ for m in out] == ["Event", "TelemetryBatch", "Event", "Event"]
    assert events(out) == [
        EventKind.COMMS_RESTORED,
        EventKind.FAULT,
        EventKind.LOCKOUT,
    ]


def test_a_large_batch_is_flushed_early() -> None:
    telemetry = make()
    points = 300
    out: list[UplinkMessage] = []
    polls = 0
    while not out:
        values = {f"point_{i:03d}": float(polls * 1000 + i) for i in range(points)}
        out = telemetry.on_poll(answered(T0 + polls * POLL_MS, values), sync=True)
        polls += 1
        assert not telemetry.due(T0 + polls * POLL_MS)
    assert polls == -(-MAX_BATCH_READINGS // points)  # the first poll that reaches the limit
    batch = only_batch(out)
    assert len(batch.readings) == polls * points >= MAX_BATCH_READINGS
    assert telemetry.pending_readings == 0
    assert len(encode_payload(batch)) < MAX_PAYLOAD_BYTES  # still fits one message
