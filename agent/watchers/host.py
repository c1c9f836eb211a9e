"""Host watcher: the exam server's own interfaces, addresses and ways off the exam LAN (psutil).

An exam server that gains a NIC, loses one or changes address may have been re-cabled to another
network or re-addressed (粤应急规〔2023〕3号 三(二)5 「擅自变更考场有关设备 IP 地址」), so every
such change is an event with the before and after states. The exam LAN must also stay isolated,
without 「远程控制、有线或无线接入」 (二(四)): wireless NICs, routes to non-exam networks, remote-control
or tunnelling programs and listeners on remote-access ports are conditions, reported once when they
appear (``host.<fact>``) and once when they go (``host.<fact>_gone``), never once per poll.

Events: ``host.interface_added``, ``host.interface_removed``, ``host.address_changed``,
``host.link_changed``, ``host.wireless_present``/``_gone``, ``host.route_outside``/``_gone``,
``host.remote_tool``/``_gone``, ``host.remote_listener``/``_gone``,
``host.registered_address_changed``/``_restored``; the full view goes out as ``host.snapshot``.
"""

from __future__ import annotations

import fnmatch
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from agent.watchers import hostnet, remote
from protocol.inventory import Inventory

Interfaces = dict[str, dict[str, Any]]
"""``{name: {"mac": str, "up": bool, "addrs": [cidr, ...]}}``"""


Facts = dict[str, dict[str, Any]]
"""Conditions keyed by what makes one episode (e.g. tool and exe, not pid)."""

#: View field → (event when a key appears, event when it goes).
EPISODES = {
    "wireless": ("host.wireless_present", "host.wireless_gone"),
    "routes_outside": ("host.route_outside", "host.route_outside_gone"),
    "remote_tools": ("host.remote_tool", "host.remote_tool_gone"),
    "remote_listeners": ("host.remote_listener", "host.remote_listener_gone"),
    "registered_mismatch": ("host.registered_address_changed", "host.registered_address_restored"),
}


@dataclass(frozen=True)
class HostView:
    """The host's interfaces and isolation conditions at one moment."""

    interfaces: Interfaces
    wireless: Facts = field(default_factory=dict)
    routes_outside: Facts = field(default_factory=dict)
    remote_tools: Facts = field(default_factory=dict)
    remote_listeners: Facts = field(default_factory=dict)
    registered_mismatch: Facts = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form (also the snapshot payload)."""
        return {"interfaces": self.interfaces, **{name: getattr(self, name) for name in EPISODES}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "HostView":
        """The inverse of :meth:`to_json` (a view read in another process or namespace)."""
        return cls(doc["interfaces"], **{name: doc.get(name, {}) for name in EPISODES})

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Edge events from ``before`` (a previous ``to_json()``, or ``{}`` on the first run) to this view.

        Interface changes need a previous view; conditions do not: one already present at the very
        first run is reported then, because its presence (not its change) is the violation.
        """
        events = self._interface_events(before["interfaces"]) if "interfaces" in before else []
        for name, (appeared, gone) in EPISODES.items():
            old: Facts = before.get(name, {})
            new: Facts = getattr(self, name)
            events += [(appeared, new[k]) for k in sorted(new.keys() - old.keys())]
            events += [(gone, self._gone_data(name, old[k])) for k in sorted(old.keys() - new.keys())]
        return events

    def _gone_data(self, name: str, fact: dict[str, Any]) -> dict[str, Any]:
        """The condition's last data; a restored address also says what the interface carries now."""
        if name != "registered_mismatch":
            return fact
        now = [v["addrs"] for v in self.interfaces.values() if v.get("mac") == fact["mac"]]
        return dict(fact, now_addrs=now[0] if now else None)

    def _interface_events(self, old: Interfaces) -> list[tuple[str, dict[str, Any]]]:
        """Interfaces added, removed, re-addressed or switched up/down since ``old``."""
        new = self.interfaces
        events: list[tuple[str, dict[str, Any]]] = []
        for name in sorted(new.keys() - old.keys()):
            events.append(("host.interface_added", {"interface": name, "after": new[name]}))
        for name in sorted(old.keys() - new.keys()):
            events.append(("host.interface_removed", {"interface": name, "before": old[name]}))
        for name in sorted(old.keys() & new.keys()):
            a, b = old[name], new[name]
            if a["addrs"] != b["addrs"]:
                events.append(("host.address_changed", {
                    "interface": name, "mac": b["mac"], "before": a["addrs"], "after": b["addrs"],
                    "added": sorted(set(b["addrs"]) - set(a["addrs"])),
                    "removed": sorted(set(a["addrs"]) - set(b["addrs"])),
                }))
            if a["up"] != b["up"]:
                events.append(("host.link_changed", {"interface": name, "mac": b["mac"], "before": a["up"], "after": b["up"]}))
        return events


def read_psutil() -> Interfaces:
    """Read every interface's MAC, link state and IPv4/IPv6 addresses with prefix length."""
    stats = psutil.net_if_stats()
    out: Interfaces = {}
    for name, addrs in psutil.net_if_addrs().items():
        mac, cidrs = "", []
        for a in addrs:
            if a.family == psutil.AF_LINK:
                mac = a.address.lower()
            elif a.family in (socket.AF_INET, socket.AF_INET6):
                cidrs.append(f"{a.address.split('%')[0]}/{_prefix(a.netmask, a.family)}")
        out[name] = {"mac": mac, "up": bool(stats[name].isup) if name in stats else False, "addrs": sorted(cidrs)}
    return out


def _prefix(netmask: str | None, family: int) -> int:
    """Prefix length of a dotted or colon netmask (psutil gives masks, not lengths)."""
    if not netmask:
        return 32 if family == socket.AF_INET else 128
    packed = socket.inet_pton(family, netmask)
    return sum(bin(b).count("1") for b in packed)


class ScriptedInterfaces:
    """Plays interface states from a JSON file, one step per read, cycling.

    For the demo and for tests on machines with no exam LAN. The file is
    ``{"steps": [{"eth0": {"mac": ..., "up": true, "addrs": [...]}}, ...], "repeat": true}``;
    with ``"repeat": false`` the last step stays once reached.
    """

    def __init__(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            steps = doc["steps"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"option watchers.host.scenario: cannot read scenario {path}: {exc}") from exc
        if not isinstance(steps, list) or not steps:
            raise ValueError(f"option watchers.host.scenario: {path} has no steps")
        self._steps: list[Interfaces] = steps
        self._repeat = bool(doc.get("repeat", True))
        self._next = 0

    def __call__(self) -> Interfaces:
        n = len(self._steps)
        step = self._steps[self._next % n if self._repeat else min(self._next, n - 1)]
        self._next += 1
        return json.loads(json.dumps(step))


def no_inventory() -> Inventory | None:
    """Until the collector's signed config arrives there is nothing to compare the host with."""
    return None


@dataclass
class HostWatcher:
    """Reports the host's interfaces and isolation conditions.

    Every reader is a field, injectable like Telegraf's ping command; the defaults read the real
    host. Wireless and registered-address checks look at every interface, not only the included
    ones, so an ``include``/``exclude`` filter cannot hide a violation.
    """

    interval: float = 30.0
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: ["lo"])
    exam_subnets: list[str] = field(default_factory=list)
    forbidden_ports: list[int] = field(default_factory=list)
    forbid_ssh: bool = False
    inventory: Callable[[], Inventory | None] = no_inventory
    read: Callable[[], Interfaces] = read_psutil
    read_routes: Callable[[], list[dict[str, Any]]] = hostnet.read_routes
    read_processes: Callable[[], list[dict[str, Any]]] = remote.read_processes
    read_listeners: Callable[[], list[dict[str, Any]]] = remote.read_listeners
    sys_net: Path = hostnet.SYS_NET
    tools_file: Path | None = None
    name: str = "host"

    def init(self) -> None:
        """Validate options and load the tool list, so a bad value stops the agent at start."""
        if self.interval <= 0:
            raise ValueError("option watchers.host.interval must be > 0")
        hostnet.parse_subnets(self.exam_subnets)
        for port in self.forbidden_ports:
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"option watchers.host.forbidden_ports: {port!r} is not a port in 1..65535")
        remote.load_tools(self.tools_file)

    def collect(self) -> HostView:
        """Read everything once and return the view."""
        every = self.read()
        tools = remote.load_tools(self.tools_file)
        ports = remote.forbidden_ports(tools, self.forbidden_ports, self.forbid_ssh)
        return HostView(
            interfaces={n: v for n, v in every.items() if self._wanted(n)},
            wireless=hostnet.wireless(every, self.sys_net),
            routes_outside=self._routes_outside(),
            remote_tools=remote.remote_tools(self.read_processes(), tools),
            remote_listeners=remote.remote_listeners(self.read_listeners(), ports),
            registered_mismatch=hostnet.registered_mismatches(every, self.inventory()),
        )

    def _routes_outside(self) -> dict[str, dict[str, Any]]:
        """Off when no exam subnet is configured: then every route would be "outside"."""
        if not self.exam_subnets:
            return {}
        return hostnet.routes_outside(self.read_routes(), hostnet.parse_subnets(self.exam_subnets))

    def _wanted(self, name: str) -> bool:
        """Exclude wins over include, so `exclude = ["lo"]` holds whatever is included."""
        if any(fnmatch.fnmatch(name, pat) for pat in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatch(name, pat) for pat in self.include)
