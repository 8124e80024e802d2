"""The poller: one poll of the controller, planned once, read request by request.

A failed request marks its points bad and the poll goes on with the next one: a Modbus
exception, a timeout or a garbled reply never ends the loop that calls `Poller.poll`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.clock import Clock, wall_ms
from edge_agent.errors import CommsError
from edge_agent.reporter import Sample
from protocols.errors import ProtocolError
from protocols.messages import Quality
from protocols.planner import ReadRequest, plan_reads
from protocols.registers import RegisterMap

log = logging.getLogger(__name__)


class Bus(Protocol):
    """The Modbus link to the controller (`edge_agent.modbus_link.ModbusLink`)."""

    async def read(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        """Exactly ``request.count`` registers or bits; `CommsError` otherwise."""
        ...

    async def write_register(self, address: int, value: int, *, retries: int | None = None) -> None:
        """Write one holding register; `CommsError` if the controller did not confirm."""
        ...


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll saw."""

    ts_ms: int
    samples: Mapping[str, Sample]
    answered: int
    """Requests the controller answered."""
    errors: tuple[str, ...] = ()
    """One line per failed request."""

    @property
    def reached(self) -> bool:
        """Whether the controller answered anything at all."""
        return self.answered > 0

    def good_values(self) -> dict[str, object]:
        """Values of the points read successfully."""
        return {p: s.value for p, s in self.samples.items() if s.quality is Quality.GOOD}


@dataclass(slots=True)
class PollFigures:
    """Counters reported in ``health``."""

    polls: int = 0
    requests: int = 0
    request_errors: int = 0
    last_ok_ms: int = 0
    """Wall time of the last poll the controller answered (0: never)."""
    error_kinds: dict[str, int] = field(default_factory=dict)


class Poller:
    """Reads every readable point of a register map with as few requests as the planner can."""

    def __init__(
        self, bus: Bus, register_map: RegisterMap, *, clock: Clock, device_id: str
    ) -> None:
        self._bus = bus
        self.register_map = register_map
        self.plan: tuple[ReadRequest, ...] = plan_reads(
            register_map.readable(), blocks=register_map.blocks
        )
        self._clock = clock
        self.device_id = device_id
        self.figures = PollFigures()

    async def poll(self) -> Poll:
        """Read every request of the plan once."""
        ts = wall_ms(self._clock)
        samples: dict[str, Sample] = {}
        answered = 0
        errors: list[str] = []
        for request in self.plan:
            self.figures.requests += 1
            try:
                raw = await self._bus.read(request)
                values = request.decode(raw, self.register_map.word_order)
            except (CommsError, ProtocolError) as exc:
                self.figures.request_errors += 1
                kind = type(exc).__name__
                self.figures.error_kinds[kind] = self.figures.error_kinds.get(kind, 0) + 1
                errors.append(
                    f"{kind} reading {request.table.value} {request.address}+{request.count}: {exc}"
                )
                for point in request.points:
                    samples[point.name] = Sample(None, Quality.BAD)
                continue
            answered += 1
            for name, value in values.items():
                samples[name] = Sample(value, Quality.GOOD)
        self.figures.polls += 1
        if answered:
            self.figures.last_ok_ms = ts
        return Poll(ts, samples, answered, tuple(errors))
