"""A network namespace joined to the root one by a veth pair, to count an agent's IP traffic.

The agent runs inside the namespace; the broker listens on the root side's address. Everything
the agent sends or receives crosses the veth, so the root side's interface counters are the
agent's traffic, measured by the kernel. IPv6 is switched off and the neighbours are pinned
(no ARP), so the pair carries nothing but the agent's IPv4 packets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ETHERNET_HEADER = 14
"""Bytes of Ethernet header per frame in a veth's counters (no preamble, no FCS)."""


class NamespaceUnavailable(Exception):
    """The namespace could not be made (not root, no iproute2, no netns support)."""


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """A veth's counters, seen from the root side: ``rx`` came from the agent."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int

    def __sub__(self, other: LinkCounters) -> LinkCounters:
        return LinkCounters(
            self.rx_bytes - other.rx_bytes,
            self.rx_packets - other.rx_packets,
            self.tx_bytes - other.tx_bytes,
            self.tx_packets - other.tx_packets,
        )

    @property
    def packets(self) -> int:
        """Frames both ways."""
        return self.rx_packets + self.tx_packets

    @property
    def ip_up(self) -> int:
        """IP bytes from the agent (headers included, Ethernet header not)."""
        return self.rx_bytes - ETHERNET_HEADER * self.rx_packets

    @property
    def ip_down(self) -> int:
        """IP bytes to the agent."""
        return self.tx_bytes - ETHERNET_HEADER * self.tx_packets

    @property
    def ip_total(self) -> int:
        """IP bytes both ways."""
        return self.ip_up + self.ip_down


@dataclass(frozen=True, slots=True)
class AgentNamespace:
    """The namespace and the two ends of its veth pair."""

    name: str
    host_if: str
    host_ip: str
    agent_ip: str

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace (same pid: ip execs)."""
        return ["ip", "netns", "exec", self.name]

    def counters(self) -> LinkCounters:
        """The root side's counters now."""
        stats = Path("/sys/class/net") / self.host_if / "statistics"

        def read(name: str) -> int:
            return int((stats / name).read_text())

        return LinkCounters(
            read("rx_bytes"), read("rx_packets"), read("tx_bytes"), read("tx_packets")
        )


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _no_ipv6(prefix: list[str], interface: str) -> None:
    path = f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
    subprocess.run([*prefix, "sh", "-c", f"[ -e {path} ] && echo 1 > {path}"], check=False)


@contextlib.contextmanager
def agent_namespace() -> Iterator[AgentNamespace]:
    """A fresh namespace with a /30 on a veth pair; deleted on exit, whatever happened."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise NamespaceUnavailable("needs root and iproute2 (ip)")
    tag = os.getpid() % 100_000
    net = 200 + tag % 50
    ns = AgentNamespace(
        name=f"btday{tag}",
        host_if=f"btd{tag}h",
        host_ip=f"10.{net}.{tag % 250}.1",
        agent_ip=f"10.{net}.{tag % 250}.2",
    )
    agent_if = f"btd{tag}a"
    inside = ns.exec_prefix()
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", agent_if)
        _ip("link", "set", agent_if, "netns", ns.name)
        _no_ipv6([], ns.host_if)
        _no_ipv6(inside, agent_if)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("-n", ns.name, "addr", "add", f"{ns.agent_ip}/30", "dev", agent_if)
        host_mac = Path(f"/sys/class/net/{ns.host_if}/address").read_text().strip()
        agent_mac = _ip("-n", ns.name, "-br", "link", "show", agent_if).split()[2]
        _ip(
            "neigh",
            "replace",
            ns.agent_ip,
            "lladdr",
            agent_mac,
            "dev",
            ns.host_if,
            "nud",
            "permanent",
        )
        _ip(
            "-n", ns.name, "neigh", "replace", ns.host_ip,
            "lladdr", host_mac, "dev", agent_if, "nud", "permanent",
        )  # fmt: skip
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "link", "set", agent_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)
