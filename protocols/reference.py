"""The reference boiler controller: its register map, status values and fault codes.

This is the controller the simulator implements and the edge agent's built-in profile
reads. `docs/register-map.md` is generated from `REFERENCE_MAP` (a test keeps it in step).

Conventions: temperatures are signed tenths of a degree Celsius, pressure is hundredths of a
bar (``0xFFFF`` = pressure sensor fault), 32-bit values are big-endian (``ABCD``), strings
are ASCII padded with NUL. Writing `RESET_REQUEST` to ``reset_request`` asks for a lockout
reset; any other value is answered with Modbus exception 03 (illegal data value).
"""

from __future__ import annotations

from enum import IntEnum

from protocols.registers import Access, Block, DataType, Point, RegisterMap, Table, WordOrder


class BoilerStatus(IntEnum):
    """Value of the ``status`` register."""

    STANDBY = 0
    CH_DEMAND = 1
    DHW_DEMAND = 2
    IGNITION = 3
    RUNNING = 4
    POST_PURGE = 5
    BLOCKING_ERROR = 6
    LOCKOUT = 7

    @property
    def label(self) -> str:
        """Lower-case name as it appears in JSON and the register map."""
        return self.name.lower()


class FaultCode(IntEnum):
    """Value of the ``fault_code`` register (0 = no fault)."""

    NONE = 0
    F20 = 20  # flow overheat (high-limit thermostat tripped): lockout
    F22 = 22  # low water pressure: blocking, clears when pressure is restored
    F28 = 28  # ignition failure: lockout after 3 failed ignition attempts
    F29 = 29  # flame loss during operation: lockout
    F32 = 32  # fan speed fault (the fan cannot reach its purge speed): lockout
    F75 = 75  # water pressure sensor fault: blocking, clears when the sensor is repaired

    @property
    def is_lockout(self) -> bool:
        """Whether the fault locks the boiler out until someone resets it."""
        return self in (FaultCode.F20, FaultCode.F28, FaultCode.F29, FaultCode.F32)

    @property
    def text(self) -> str:
        """Plain-words description."""
        return _FAULT_TEXT[self]

    @classmethod
    def parse(cls, text: str) -> FaultCode:
        """``"F28"``, ``"f28"`` or ``"28"`` -> `FaultCode.F28`; raises `ValueError` otherwise."""
        cleaned = text.strip().upper().removeprefix("F")
        if not cleaned.isdigit():
            raise ValueError(f"not a fault code: {text!r}")
        code = cls(int(cleaned))
        if code is FaultCode.NONE:
            raise ValueError(f"not a fault code: {text!r}")
        return code


_FAULT_TEXT = {
    FaultCode.NONE: "no fault",
    FaultCode.F20: "flow overheat (lockout)",
    FaultCode.F22: "low water pressure",
    FaultCode.F28: "ignition failure (lockout)",
    FaultCode.F29: "flame loss (lockout)",
    FaultCode.F32: "fan speed fault (lockout)",
    FaultCode.F75: "water pressure sensor fault",
}

STATUS_POINT = "status"
FAULT_POINT = "fault_code"
STATE_POINTS = (STATUS_POINT, FAULT_POINT)
"""The points that say what state the boiler is in (read before and after a reset)."""
BURNER_STARTS_POINT = "burner_starts"
OPERATING_HOURS_POINT = "operating_hours"


def status_label(code: int | None) -> str | None:
    """`BoilerStatus` label of a status value (None if unknown)."""
    if code is None or code not in BoilerStatus._value2member_map_:
        return None
    return BoilerStatus(code).label


def fault_name(code: int | None) -> str | None:
    """``F28`` for 28, as the boiler's display and the rules name faults; None for no fault."""
    if code is None or code == FaultCode.NONE:
        return None
    return f"F{code}"


def fault_text(code: int | None) -> str | None:
    """Plain-words text of a fault code; None for none or an unknown code."""
    if code is None or code not in FaultCode._value2member_map_:
        return None
    return FaultCode(code).text


MAP_V1_FAULTS = (FaultCode.NONE, FaultCode.F22, FaultCode.F28, FaultCode.F29, FaultCode.F75)
"""Fault codes labelled in version 1 of the register map. F20 and F32 (added with the
simulator's slow degradations) are reported by the same register; labelling them in the
map changes its digest, so it waits for map version 2."""

RESET_REQUEST = 1
"""The only value the ``reset_request`` register accepts."""

PRESSURE_SENSOR_FAULT = 0xFFFF
"""Raw ``ch_pressure`` value while the pressure sensor is faulty."""

_IR = Table.INPUT_REGISTER
_HR = Table.HOLDING_REGISTER
_DI = Table.DISCRETE_INPUT
_C = "\N{DEGREE SIGN}C"


def _temp(name: str, address: int, description: str) -> Point:
    return Point(name, _IR, address, DataType.S16, scale=0.1, unit=_C, description=description)


REFERENCE_MAP = RegisterMap(
    id="bt-ref-1",
    version=1,
    word_order=WordOrder.ABCD,
    description="boilertwin reference gas combi boiler controller",
    blocks=(
        Block(_DI, 0, 16),
        Block(_IR, 0, 32),
        Block(_IR, 100, 32),
        Block(_HR, 200, 16),
    ),
    points=(
        Point("flame_on", _DI, 0, DataType.BOOL, description="Flame detected"),
        Point("pump_on", _DI, 1, DataType.BOOL, description="Circulation pump running"),
        Point("fan_on", _DI, 2, DataType.BOOL, description="Combustion fan running"),
        Point("gas_valve_open", _DI, 3, DataType.BOOL, description="Gas valve open"),
        Point("ch_active", _DI, 4, DataType.BOOL, description="Central heating demand active"),
        Point("dhw_active", _DI, 5, DataType.BOOL, description="Hot water demand active"),
        Point("lockout", _DI, 6, DataType.BOOL, description="In lockout (needs a reset)"),
        Point(
            "blocking_error", _DI, 7, DataType.BOOL, description="Blocked by a self-clearing fault"
        ),
        Point(
            STATUS_POINT,
            _IR,
            0,
            DataType.U16,
            description="Operating state",
            labels=tuple((s.value, s.label) for s in BoilerStatus),
        ),
        Point(
            FAULT_POINT,
            _IR,
            1,
            DataType.U16,
            description="Active fault code (0 = none)",
            labels=tuple((f.value, f.text) for f in MAP_V1_FAULTS),
        ),
        _temp("flow_temp", 2, "Central heating flow temperature"),
        _temp("return_temp", 3, "Central heating return temperature"),
        _temp("dhw_temp", 4, "Domestic hot water outlet temperature"),
        _temp("outdoor_temp", 5, "Outdoor temperature"),
        Point(
            "ch_pressure",
            _IR,
            6,
            DataType.U16,
            scale=0.01,
            unit="bar",
            description="Central heating water pressure (655.35 = sensor fault)",
        ),
        Point("modulation", _IR, 7, DataType.U16, unit="%", description="Burner modulation"),
        Point(
            "flame_current",
            _IR,
            8,
            DataType.U16,
            scale=0.1,
            unit="uA",
            description="Flame ionisation current",
        ),
        Point("fan_speed", _IR, 9, DataType.U16, unit="rpm", description="Combustion fan speed"),
        Point(BURNER_STARTS_POINT, _IR, 10, DataType.U32, description="Successful burner starts"),
        Point(OPERATING_HOURS_POINT, _IR, 12, DataType.U32, unit="h", description="Burner hours"),
        Point("heat_output", _IR, 14, DataType.F32, unit="kW", description="Current heat output"),
        Point("lockout_count", _IR, 16, DataType.U16, description="Lockouts since manufacture"),
        Point("reset_count", _IR, 17, DataType.U16, description="Lockout resets accepted"),
        Point("failed_ignitions", _IR, 18, DataType.U16, description="Failed ignition attempts"),
        Point("serial_number", _IR, 100, DataType.STRING, length=8, description="Serial number"),
        Point("model", _IR, 108, DataType.STRING, length=8, description="Model name"),
        Point("firmware", _IR, 116, DataType.STRING, length=4, description="Firmware version"),
        Point("map_version", _IR, 120, DataType.U16, description="Register map version"),
        Point(
            "ch_setpoint",
            _HR,
            200,
            DataType.S16,
            scale=0.1,
            unit=_C,
            access=Access.RW,
            minimum=30.0,
            maximum=80.0,
            description="Central heating flow setpoint",
        ),
        Point(
            "dhw_setpoint",
            _HR,
            201,
            DataType.S16,
            scale=0.1,
            unit=_C,
            access=Access.RW,
            minimum=35.0,
            maximum=65.0,
            description="Hot water setpoint",
        ),
        Point(
            "ch_enable",
            _HR,
            202,
            DataType.U16,
            access=Access.RW,
            minimum=0,
            maximum=1,
            description="Central heating enabled (0/1)",
        ),
        Point(
            "dhw_enable",
            _HR,
            203,
            DataType.U16,
            access=Access.RW,
            minimum=0,
            maximum=1,
            description="Hot water enabled (0/1)",
        ),
        Point(
            "reset_request",
            _HR,
            210,
            DataType.U16,
            access=Access.W,
            minimum=RESET_REQUEST,
            maximum=RESET_REQUEST,
            description="Write 1 to reset a lockout; reads 0",
        ),
    ),
)
"""The reference controller's register map."""
