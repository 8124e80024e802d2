"""A slow link in user space: a network namespace joined to the root one through two TUN
devices and a relay that holds every packet for a fixed one-way delay (``tc netem`` is not
built into this kernel).

The relay opens both TUN devices in the root namespace, moves one into the new namespace (the
open file keeps working), and forwards IP packets between them from a thread, each after
`one_way_s`. Whatever runs in the namespace (``exec_prefix``) reaches the root side's
address only through the relay, so TCP sees the delay on every segment, its ACKs included.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import select
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tests.bench.netns import NamespaceUnavailable

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
MTU = 1500


@dataclass(frozen=True, slots=True)
class DelayedLink:
    name: str
    host_ip: str
    inner_ip: str
    one_way_s: float

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def _tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class _Relay(threading.Thread):
    """Forwards packets between two TUN files, each after the delay."""

    def __init__(self, a: int, b: int, delay_s: float) -> None:
        super().__init__(name="delay-relay", daemon=True)
        self.ends = {a: b, b: a}
        self.delay_s = delay_s
        self.wake_r, self.wake_w = os.pipe()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        os.write(self.wake_w, b"x")
        self.join(5)

    def run(self) -> None:
        queue: list[tuple[float, int, int, bytes]] = []
        order = 0
        while not self.stopping:
            timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
            readable, _, _ = select.select([*self.ends, self.wake_r], [], [], timeout)
            now = time.monotonic()
            for fd in readable:
                if fd == self.wake_r:
                    continue
                with contextlib.suppress(BlockingIOError):
                    while True:
                        packet = os.read(fd, MTU + 64)
                        order += 1
                        heapq.heappush(queue, (now + self.delay_s, order, self.ends[fd], packet))
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, out, packet = heapq.heappop(queue)
                with contextlib.suppress(OSError):
                    os.write(out, packet)


@contextlib.contextmanager
def delayed_namespace(one_way_s: float) -> Iterator[DelayedLink]:
    """A namespace whose only way out is a link with `one_way_s` each way; removed on exit."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        raise NamespaceUnavailable("needs root and /dev/net/tun")
    tag = os.getpid() % 10_000
    link = DelayedLink(
        name=f"btcell{tag}",
        host_ip=f"10.199.{tag % 250}.1",
        inner_ip=f"10.199.{tag % 250}.2",
        one_way_s=one_way_s,
    )
    outer_if, inner_if = f"btc{tag}h", f"btc{tag}a"
    fds: list[int] = []
    relay: _Relay | None = None
    try:
        try:
            _ip("netns", "add", link.name)
            fds = [_tun(outer_if), _tun(inner_if)]
            _ip("link", "set", inner_if, "netns", link.name)
            _ip("addr", "add", link.host_ip, "peer", link.inner_ip, "dev", outer_if)
            _ip("link", "set", outer_if, "up")
            inside = ("-n", link.name)
            _ip(*inside, "addr", "add", link.inner_ip, "peer", link.host_ip, "dev", inner_if)
            _ip(*inside, "link", "set", inner_if, "up")
            _ip(*inside, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, OSError) as exc:
            raise NamespaceUnavailable(f"cannot make the delayed link: {exc}") from exc
        relay = _Relay(fds[0], fds[1], one_way_s)
        relay.start()
        yield link  # what the caller's block raises passes through unchanged
    finally:
        if relay is not None:
            relay.stop()
        for fd in fds:
            os.close(fd)
        subprocess.run(["ip", "netns", "delete", link.name], capture_output=True, check=False)


def round_trip_s(link: DelayedLink, port: int) -> float:
    """One TCP handshake from inside the namespace to the root side (one round trip)."""
    code = (
        "import socket,time;t=time.perf_counter();"
        f"s=socket.create_connection(('{link.host_ip}',{port}),10);"
        "print(time.perf_counter()-t);s.close()"
    )
    out = subprocess.run(
        [*link.exec_prefix(), "python3", "-c", code], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())
