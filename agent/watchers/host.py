"""Host watcher: the exam server's own interfaces and addresses (psutil).

An exam server that gains a NIC, loses one or changes address may have been re-cabled to another
network or re-addressed (粤应急规〔2023〕3号 三(二)5 「擅自变更考场有关设备 IP 地址」), so every
such change is an event with the before and after states.

Events: ``host.interface_added``, ``host.interface_removed``, ``host.address_changed``,
``host.link_changed``; the full view goes out as ``host.snapshot``.
"""

from __future__ import annotations

import fnmatch
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

Interfaces = dict[str, dict[str, Any]]
"""``{name: {"mac": str, "up": bool, "addrs": [cidr, ...]}}``"""


@dataclass(frozen=True)
class HostView:
    """The host's interfaces at one moment."""

    interfaces: Interfaces

    def to_json(self) -> dict[str, Any]:
        """JSON form (also the snapshot payload)."""
        return {"interfaces": self.interfaces}

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Edge events from ``before`` (a previous ``to_json()``) to this view."""
        old: Interfaces = before.get("interfaces", {})
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


@dataclass
class HostWatcher:
    """Reports the host's interfaces; ``read`` is injectable like Telegraf's ping command."""

    interval: float = 30.0
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: ["lo"])
    read: Callable[[], Interfaces] = read_psutil
    name: str = "host"

    def init(self) -> None:
        """Validate options."""
        if self.interval <= 0:
            raise ValueError("option watchers.host.interval must be > 0")

    def collect(self) -> HostView:
        """Read interfaces, keep the configured ones."""
        return HostView({n: v for n, v in self.read().items() if self._wanted(n)})

    def _wanted(self, name: str) -> bool:
        if any(fnmatch.fnmatch(name, pat) for pat in self.exclude):
            return False
        return not self.include or any(fnmatch.fnmatch(name, pat) for pat in self.include)
