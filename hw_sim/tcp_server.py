"""Modbus TCP server for the simulated boiler.

MBAP framing (transaction id, protocol id 0, length, unit id). The device answers its own
unit id, 255 and 0 (the ids that mean "this device" over TCP); any other unit id gets exception
0x0B (gateway target failed to respond), as a Modbus TCP device behind no gateway should.
A frame that breaks MBAP (wrong protocol id, impossible length) closes the connection.
While the boiler is powered off, connections are closed and new ones dropped at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from hw_sim.device import BoilerDevice
from hw_sim.faults import CommsFaults
from hw_sim.modbus import ExceptionCode, exception_response, handle_request

log = logging.getLogger(__name__)

MBAP = struct.Struct(">HHHB")
MAX_PDU = 253
THIS_DEVICE = 255


class TcpServer:
    """Serves a `BoilerDevice` over Modbus TCP."""

    def __init__(
        self, device: BoilerDevice, host: str, port: int, *, unit: int, faults: CommsFaults
    ) -> None:
        self.device = device
        self.host = host
        self.port = port
        self.unit = unit
        self.faults = faults
        self.connections = 0
        self.requests = 0
        self.protocol_errors = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Listen and serve until cancelled; `port` is updated if 0 was asked for."""
        server = await asyncio.start_server(self._client, self.host, self.port)
        async with server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("Modbus TCP unit %d on %s:%d", self.unit, self.host, self.port)
            if ready is not None:
                ready.set()
            try:
                await server.serve_forever()
            finally:
                self.drop_connections()

    def drop_connections(self) -> None:
        """Close every client connection (a reboot does this to a real device)."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def snapshot(self) -> dict[str, int | str]:
        """Counters, JSON-friendly."""
        return {
            "address": f"{self.host}:{self.port}",
            "unit": self.unit,
            "connections": self.connections,
            "open_connections": len(self._writers),
            "requests": self.requests,
            "protocol_errors": self.protocol_errors,
        }

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if not self.device.online:
            writer.close()
            return
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(MBAP.size)
                transaction, protocol, length, unit = MBAP.unpack(header)
                if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                    self.protocol_errors += 1
                    log.info("closing Modbus TCP connection: bad MBAP header %s", header.hex())
                    return
                pdu = await reader.readexactly(length - 1)
                reply = self._reply(unit, pdu)
                plan = self.faults.plan(can_corrupt=False)
                if plan.delay_s:
                    await asyncio.sleep(plan.delay_s)
                if plan.drop:
                    continue
                if not self.device.online:
                    return
                writer.write(MBAP.pack(transaction, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _reply(self, unit: int, pdu: bytes) -> bytes:
        self.requests += 1
        if unit not in (self.unit, THIS_DEVICE, 0):
            return exception_response(pdu[0], ExceptionCode.GATEWAY_TARGET_FAILED)
        return handle_request(self.device, pdu)
