"""The one list of event kinds the collector knows, with the data fields each carries.

Rule files name event kinds and filter on their data fields; keeping the list here (and only here)
lets ``rules check`` reject a misspelt kind or field, which would otherwise make a rule that
silently never matches. ``fields`` is ``None`` where a kind's data is not pinned down yet: filters
on such a kind are not field-checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class EventKind:
    """One event kind: its name, who emits it and the keys of its ``data``."""

    kind: str
    source: str
    fields: frozenset[str] | None


def _kinds(source: str, table: dict[str, tuple[str, ...] | None]) -> dict[str, EventKind]:
    """Build entries for one emitter from ``{kind: fields}``."""
    return {k: EventKind(k, source, None if f is None else frozenset(f)) for k, f in table.items()}


_AGENT = _kinds("agent", {
    "agent.started": None,
    "outbox.full": None,
    "outbox.recovered": None,
    "outbox.rebased": ("collector_acked", "previous_last_seq", "rows_renumbered"),
    "watcher.error": ("watcher", "error"),
    "watcher.recovered": ("watcher",),
    "config.applied": None,
    "config.rejected": None,
})

_COLLECTOR = _kinds("collector", {
    "agent.online": ("boot", "previous_boot", "reason"),
    "agent.offline": None,
    "agent.clock_skew": None,
    "agent.clock_ok": None,
    "seq.gap": ("first", "last", "since"),
    "seq.gap_closed": ("first", "last"),
})

_LAN = _kinds("agent/lan", {
    "device.unregistered": ("mac", "ip", "vendor", "randomized", "first_seen", "last_seen", "how"),
    "device.ip_changed": ("mac", "ip", "registered_ip", "entry"),
    "device.mac_changed": ("ip", "mac", "registered_mac", "entry"),
    "device.ip_conflict": ("ip", "macs"),
    "device.flip_flop": None,
    "device.missing": None,
    "device.returned": None,
})

_HOST = _kinds("agent/host", {
    "host.snapshot": ("interfaces",),
    "host.address_changed": ("interface", "mac", "before", "after", "added", "removed"),
    "host.registered_address_changed": ("interface", "mac", "registered_ip", "addrs", "entry"),
    "host.registered_address_restored": None,
    "host.interface_added": ("interface", "after"),
    "host.interface_removed": ("interface", "before"),
    "host.link_changed": ("interface", "mac", "before", "after"),
    "host.wireless_present": ("interface", "mac", "up", "evidence"),
    "host.wireless_gone": None,
    "host.route_outside": ("destination", "gateway", "interface"),
    "host.route_outside_gone": None,
    "host.remote_tool": ("pid", "name", "exe", "tool"),
    "host.remote_tool_gone": None,
    "host.remote_listener": ("port", "address", "pid", "process"),
    "host.remote_listener_gone": None,
})

_ISOLATION = _kinds("agent/isolation", {
    "isolation.breached": ("target", "method", "rtt_ms", "how"),
    "isolation.restored": None,
})

EVENT_KINDS: Mapping[str, EventKind] = MappingProxyType(
    {**_AGENT, **_COLLECTOR, **_LAN, **_HOST, **_ISOLATION}
)


def is_known(kind: str) -> bool:
    """Whether ``kind`` is an event kind some part of VenueGuard emits."""
    return kind in EVENT_KINDS


def unknown_fields(kind: str, names: set[str] | frozenset[str]) -> list[str]:
    """Field names not carried by ``kind`` (empty when the kind's fields are not pinned down)."""
    fields = EVENT_KINDS[kind].fields
    return [] if fields is None else sorted(set(names) - fields)
