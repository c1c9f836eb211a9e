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
    # The readiness check (protocol/readiness.py): the report travels on the rpt stream.
    "readiness.report": ("agent_id", "round_id", "exam_day", "started_at", "finished_at", "items", "baseline",
                         "config_version", "collector_connected", "result"),
    "readiness.refused": ("reason", "detail", "round_id"),
})

_COLLECTOR = _kinds("collector", {
    "agent.online": ("boot", "previous_boot", "reason"),
    "agent.offline": None,
    "agent.clock_skew": None,
    "agent.clock_ok": None,
    "seq.gap": ("first", "last", "since"),
    "seq.gap_closed": ("first", "last"),
})

# LAN and host fields follow what agent/watchers/{lan_view,hostnet,remote,isolation}.py put in
# ``data``; a watcher that adds a field adds it here too, or rules cannot filter on it.
_SIGHTING = ("mac", "ip", "vendor", "randomized", "first_seen", "last_seen", "how", "hostname", "vendor_class")
_REGISTERED = ("mac", "registered_ip", "entry", "last_seen")
_HOST_MISMATCH = ("interface", "mac", "registered_ip", "addrs", "entry", "inventory_version")
_WIRELESS = ("interface", "mac", "up", "evidence")
_ROUTE = ("destination", "gateway", "interface")
_TOOL = ("tool", "tool_name", "category", "pid", "pids", "name", "exe", "cmdline")
_LISTENER = ("protocol", "address", "port", "pid", "process")
_PROBE = ("target", "method", "how", "rtt_ms")

_LAN = _kinds("agent/lan", {
    "device.unregistered": _SIGHTING,
    "device.ip_changed": _SIGHTING + ("registered_ip", "entry"),
    "device.mac_changed": _SIGHTING + ("registered_mac", "entry"),
    "device.ip_conflict": ("ip", "macs", "claims"),
    "device.flip_flop": ("ip", "macs", "sequence"),
    "device.left": _SIGHTING,
    "device.ip_restored": _SIGHTING + ("registered_ip", "registered_mac", "entry", "episode"),
    "device.missing": _REGISTERED,
    "device.returned": _REGISTERED + ("now",),
    "lan.snapshot": ("devices", "episodes"),
})

_HOST = _kinds("agent/host", {
    "host.snapshot": None,
    "host.address_changed": ("interface", "mac", "before", "after", "added", "removed"),
    "host.registered_address_changed": _HOST_MISMATCH,
    "host.registered_address_restored": _HOST_MISMATCH + ("now_addrs",),
    "host.interface_added": ("interface", "after"),
    "host.interface_removed": ("interface", "before"),
    "host.link_changed": ("interface", "mac", "before", "after"),
    "host.wireless_present": _WIRELESS,
    "host.wireless_gone": _WIRELESS,
    "host.route_outside": _ROUTE,
    "host.route_outside_gone": _ROUTE,
    "host.remote_tool": _TOOL,
    "host.remote_tool_gone": _TOOL,
    "host.remote_listener": _LISTENER,
    "host.remote_listener_gone": _LISTENER,
})

_ISOLATION = _kinds("agent/isolation", {
    "isolation.breached": _PROBE,
    "isolation.restored": _PROBE,
    "isolation.snapshot": None,
})

# Log fields follow agent/watchers/logreconcile.py (events) and logs.py (shipped lines, retention).
_LOGFILE = ("source", "type", "path", "size_before", "size_after", "inode", "dev", "head_sha256", "head_bytes",
            "file_key", "shipped_offset", "while_down")
_LOGS = _kinds("agent/logs", {
    "log.deleted": _LOGFILE + ("unshipped_bytes",),
    "log.truncated": _LOGFILE + ("unshipped_bytes",),
    "log.moved": _LOGFILE + ("moved_to", "within_set"),
    "log.replaced": _LOGFILE + ("inode_after", "head_sha256_after"),
    "log.rotated": _LOGFILE + ("rotated_to", "mode"),
    "log.retention_short": None,
    "log.retention_ok": None,
    "log.lines": ("source", "type", "path", "file_key", "lines", "end", "cut", "binary"),
    "logs.snapshot": None,
})

# Recorder fields follow agent/watchers/recorder_view.py: every event carries the recorder's
# identity; closing events repeat the opening data plus ``now``.
_RECORDER = ("recorder", "ip", "name", "room", "vendor", "model", "serial", "firmware")
_CLOSE = ("now",)
_DISK = ("disk", "disk_name", "status", "capacity_mb")
_SPACE = ("free_gb", "min_free_gb", "healthy_disks", "disks")
_CHANNEL = ("channel", "status", "channel_ip", "camera")
_RECORDING = ("channel", "camera", "newest_end", "lag_s", "max_record_lag", "searched_s", "clock")
_RECORDERS = _kinds("agent/recorders", {
    "recorder.down": _RECORDER + ("since", "error"),
    "recorder.up": _RECORDER + ("since", "error") + _CLOSE,
    "recorder.auth_failed": _RECORDER + ("error",),
    "recorder.auth_ok": _RECORDER + ("error",) + _CLOSE,
    "recorder.rebooted": _RECORDER + ("previous_boot", "boot", "uptime_s", "clock"),
    "recorder.disk_fault": _RECORDER + _DISK,
    "recorder.disk_ok": _RECORDER + _DISK + _CLOSE,
    "recorder.disk_low": _RECORDER + _SPACE,
    "recorder.disk_space_ok": _RECORDER + _SPACE + _CLOSE,
    "recorder.channel_offline": _RECORDER + _CHANNEL,
    "recorder.channel_online": _RECORDER + _CHANNEL + _CLOSE,
    "recorder.not_recording": _RECORDER + _RECORDING,
    "recorder.recording": _RECORDER + _RECORDING + _CLOSE,
    "recorders.snapshot": ("recorders", "episodes"),
})

# Camera fields follow agent/watchers/camera_state.py and cameras.py.
_CAMERA = ("mac", "ip", "room", "name", "vendor", "channel", "url")
_PROBE_RESULT = ("level", "target_level", "outcome", "error", "statuses", "rtp_bytes", "rtp_packets", "origin",
                 "probed_at", "duration_ms", "clock_offset")
_FAULT = _CAMERA + _PROBE_RESULT + ("previous", "since", "first_failure_at", "failures", "recorder_sees")
# PTZ follows agent/watchers/camera_ptz.py (positions are {elevation, azimuth, zoom}); rooms follow
# camera_rooms.py (cameras are [{mac, name, state}]).
_PTZ = _CAMERA + ("home", "before", "after", "since", "window_since", "tolerance")
_ROOM = ("room", "cameras", "since", "window_since")
_CAMERAS = _kinds("agent/cameras", {
    "camera.down": _FAULT,
    "camera.path_problem": _FAULT,
    "camera.auth_failed": _FAULT,
    "camera.stream_stalled": _FAULT,
    "camera.up": _CAMERA + _PROBE_RESULT + ("previous", "since", "successes", "fault_since"),
    "camera.rebooted": _CAMERA + ("how", "old_origin", "new_origin", "detected_at"),
    "camera.ptz_moved": _PTZ,
    "camera.ptz_restored": _PTZ + ("moved_since",),
    "camera.room_uncovered": _ROOM,
    "camera.room_covered": _ROOM + ("reason",),
    "agent.blind": ("since", "witnesses"),
    "agent.sight_restored": ("since", "witnesses", "blind_since"),
    "cameras.snapshot": None,
})

EVENT_KINDS: Mapping[str, EventKind] = MappingProxyType(
    {**_AGENT, **_COLLECTOR, **_LAN, **_HOST, **_ISOLATION, **_LOGS, **_RECORDERS, **_CAMERAS}
)


# What each event is about, so the rulebook keeps one condition per thing and a closing event
# (camera.up) ends exactly the condition its opener (camera.down) began. Kinds not listed are about
# their agent as a whole (agent.offline, agent.blind, outbox.full...).
_SUBJECTS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("mac",): ("device.unregistered", "device.left", "device.ip_changed", "device.mac_changed", "device.ip_restored", "device.missing",
               "device.returned", "camera.down", "camera.path_problem", "camera.auth_failed", "camera.stream_stalled",
               "camera.up", "camera.rebooted", "camera.ptz_moved", "camera.ptz_restored"),
    ("ip",): ("device.ip_conflict", "device.flip_flop"),
    ("interface",): ("host.registered_address_changed", "host.registered_address_restored", "host.wireless_present",
                     "host.wireless_gone", "host.interface_added", "host.interface_removed", "host.link_changed",
                     "host.address_changed"),
    ("destination",): ("host.route_outside", "host.route_outside_gone"),
    ("tool",): ("host.remote_tool", "host.remote_tool_gone"),
    ("protocol", "address", "port"): ("host.remote_listener", "host.remote_listener_gone"),
    ("target",): ("isolation.breached", "isolation.restored"),
    ("source",): ("log.deleted", "log.truncated", "log.moved", "log.replaced", "log.rotated", "log.retention_short",
                  "log.retention_ok"),
    ("recorder",): ("recorder.down", "recorder.up", "recorder.auth_failed", "recorder.auth_ok", "recorder.rebooted",
                    "recorder.disk_low", "recorder.disk_space_ok"),
    ("recorder", "disk"): ("recorder.disk_fault", "recorder.disk_ok"),
    ("recorder", "channel"): ("recorder.channel_offline", "recorder.channel_online", "recorder.not_recording",
                              "recorder.recording"),
    ("room",): ("camera.room_uncovered", "camera.room_covered"),
    ("watcher",): ("watcher.error", "watcher.recovered"),
}
SUBJECT_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {kind: fields for fields, kinds in _SUBJECTS.items() for kind in kinds})

#: Kinds whose exam windows are those of the event's own room (a camera in a room without an exam
#: that day is allowed to be off); every other kind weighs by the venue's exam windows as a whole.
ROOM_SCOPED: frozenset[str] = frozenset(k for k in _CAMERAS if k.startswith("camera."))


def subject_fields(kind: str) -> tuple[str, ...]:
    """The data fields naming what an event is about; empty = the agent itself."""
    return SUBJECT_FIELDS.get(kind, ())


def subject_mismatch(openers: list[str], clearer: str) -> str | None:
    """Why ``clearer`` can end none of the conditions ``openers`` begin (they name other things)."""
    want = subject_fields(clearer)
    if not openers or any(subject_fields(kind) == want for kind in openers):
        return None
    return (f"{clearer!r} is about {list(want) or 'the agent'}, which none of the matched events is about: "
            "it could never clear them")


def is_known(kind: str) -> bool:
    """Whether ``kind`` is an event kind some part of VenueGuard emits."""
    return kind in EVENT_KINDS


def unknown_fields(kind: str, names: set[str] | frozenset[str]) -> list[str]:
    """Field names not carried by ``kind`` (empty when the kind's fields are not pinned down)."""
    fields = EVENT_KINDS[kind].fields
    return [] if fields is None else sorted(set(names) - fields)
