"""Telemetry points derived from stored records and heartbeats: what goes to InfluxDB and how.

Every measurement is numeric (VictoriaMetrics, and dashboards, want numbers: up/down is 0/1) and
tagged with the venue and agent the collector maps, never with what a payload claims. The table
:data:`DERIVERS` says which record kinds feed which measurement, so a reader sees the whole
mapping in one place (documented in README, section "Telemetry").

| measurement | tags | fields | from |
|---|---|---|---|
| ``vg_agent`` | venue, agent | online | agent.online / agent.offline |
| ``vg_agent`` | venue, agent | outbox_depth, clock_offset_s | heartbeats (the agents table) |
| ``vg_camera`` | venue, agent, camera, room, name | up, probe_ms | camera.* events, cameras.snapshot |
| ``vg_room`` | venue, agent, room | covered | camera.room_uncovered / room_covered |
| ``vg_recorder`` | venue, agent, recorder, room, name | up, free_gb | recorder.* events, recorders.snapshot |
| ``vg_isolation`` | venue, agent, target | reachable, rtt_ms | isolation.* events and snapshot |
| ``vg_lan`` | venue, agent | devices, unregistered, missing, episodes | lan.snapshot |
| ``vg_host`` | venue, agent | interfaces, wireless, routes_outside, remote_tools, remote_listeners | host.snapshot |
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["DERIVED_KINDS", "Sample", "derive", "heartbeat_sample"]

log = logging.getLogger("venueguard.collector.timeseries")

Tags = tuple[tuple[str, str], ...]
Fields = Mapping[str, float]


@dataclass(frozen=True)
class Sample:
    """One point: ``record_id`` is the stored record it came from (None for heartbeat samples),
    so the writer knows how far the stored records are written."""

    measurement: str
    tags: Tags
    fields: Fields
    at: float
    record_id: int | None = None

    def line(self) -> str:
        """InfluxDB line protocol with millisecond precision (escaping per the protocol)."""
        tags = "".join(f",{_escape(k)}={_escape(v)}" for k, v in self.tags if v != "")
        fields = ",".join(f"{_escape(k)}={_number(v)}" for k, v in self.fields.items())
        return f"{_escape(self.measurement)}{tags} {fields} {round(self.at * 1000)}"


@dataclass(frozen=True)
class Row:
    """What a deriver needs of a stored record."""

    record_id: int
    venue_id: str
    agent_id: str
    kind: str
    at: float
    data: Mapping[str, Any]


CAMERA_FAULTS = ("camera.down", "camera.path_problem", "camera.auth_failed", "camera.stream_stalled")
CAMERA_FAULT_STATES = ("down", "path_problem", "auth_failed", "stream_stalled")


def _escape(text: str) -> str:
    """Escape commas, spaces and equals signs, as line protocol requires in keys and tag values
    (line breaks cannot be escaped there: they become spaces)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def _number(value: float) -> str:
    """A float field (a trailing ``i`` would make an integer, which a later float write would conflict with)."""
    return repr(float(value))


def _num(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool, not a string, not NaN:
    the server would refuse the whole batch)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _base(row: Row, **more: Any) -> Tags:
    """The venue and agent tags, plus the thing the point is about."""
    return (("venue", row.venue_id), ("agent", row.agent_id), *((k, str(v or "")) for k, v in more.items()))


def _sample(row: Row, measurement: str, tags: Tags, fields: dict[str, float | None]) -> list[Sample]:
    """A point with the fields that have a value; none when no field has one."""
    kept = {k: v for k, v in fields.items() if v is not None}
    return [Sample(measurement, tags, kept, row.at, row.record_id)] if kept else []


def _agent_online(row: Row) -> list[Sample]:
    return _sample(row, "vg_agent", _base(row), {"online": 1.0 if row.kind == "agent.online" else 0.0})


def _camera(row: Row, data: Mapping[str, Any], up: float) -> list[Sample]:
    tags = _base(row, camera=data.get("mac"), room=data.get("room"), name=data.get("name"))
    return _sample(row, "vg_camera", tags, {"up": up, "probe_ms": _num(data.get("duration_ms"))})


def _camera_event(row: Row) -> list[Sample]:
    return _camera(row, row.data, 1.0 if row.kind == "camera.up" else 0.0)


def _cameras_snapshot(row: Row) -> list[Sample]:
    """Each camera whose state is known: up = 1, a fault = 0 (``unknown`` is not a measurement)."""
    out: list[Sample] = []
    for mac, cam in sorted((row.data.get("cameras") or {}).items()):
        status = cam.get("status") if isinstance(cam, dict) else None
        if status == "up" or status in CAMERA_FAULT_STATES:
            out += _camera(row, {"mac": mac, **(cam.get("data") or {})}, 1.0 if status == "up" else 0.0)
    return out


def _room(row: Row) -> list[Sample]:
    covered = 1.0 if row.kind == "camera.room_covered" else 0.0
    return _sample(row, "vg_room", _base(row, room=row.data.get("room")), {"covered": covered})


def _recorder(row: Row, mac: str, data: Mapping[str, Any], fields: dict[str, float | None]) -> list[Sample]:
    tags = _base(row, recorder=mac, room=data.get("room"), name=data.get("name"))
    return _sample(row, "vg_recorder", tags, fields)


def _recorder_event(row: Row) -> list[Sample]:
    fields: dict[str, float | None] = {}
    if row.kind in ("recorder.down", "recorder.up"):
        fields["up"] = 1.0 if row.kind == "recorder.up" else 0.0
    fields["free_gb"] = _num(row.data.get("free_gb"))
    return _recorder(row, str(row.data.get("recorder", "")), row.data, fields)


def _recorders_snapshot(row: Row) -> list[Sample]:
    out: list[Sample] = []
    for mac, rec in sorted((row.data.get("recorders") or {}).items()):
        state = rec.get("state") if isinstance(rec, dict) else None
        if state in ("up", "down"):
            out += _recorder(row, mac, rec, {"up": 1.0 if state == "up" else 0.0})
    return out


def _isolation(row: Row, result: Mapping[str, Any], reachable: float) -> list[Sample]:
    tags = _base(row, target=result.get("target"))
    return _sample(row, "vg_isolation", tags, {"reachable": reachable, "rtt_ms": _num(result.get("rtt_ms"))})


def _isolation_event(row: Row) -> list[Sample]:
    return _isolation(row, row.data, 1.0 if row.kind == "isolation.breached" else 0.0)


def _isolation_snapshot(row: Row) -> list[Sample]:
    out: list[Sample] = []
    for spec, result in sorted((row.data.get("targets") or {}).items()):
        if isinstance(result, dict):
            out += _isolation(row, {"target": spec, **result}, 1.0 if result.get("reachable") else 0.0)
    return out


def _lan_snapshot(row: Row) -> list[Sample]:
    episodes = row.data.get("episodes") or {}
    kinds = [str(k).split(":")[0] for k in episodes]
    fields: dict[str, float | None] = {
        "devices": float(len(row.data.get("devices") or {})), "episodes": float(len(episodes)),
        "unregistered": float(kinds.count("unregistered")), "missing": float(kinds.count("missing"))}
    return _sample(row, "vg_lan", _base(row), fields)


def _host_snapshot(row: Row) -> list[Sample]:
    names = ("interfaces", "wireless", "routes_outside", "remote_tools", "remote_listeners")
    fields: dict[str, float | None] = {n: float(len(row.data.get(n) or {})) for n in names}
    return _sample(row, "vg_host", _base(row), fields)


#: Record kind -> the function that turns a stored record of that kind into points.
DERIVERS: Mapping[str, Callable[[Row], list[Sample]]] = {
    "agent.online": _agent_online, "agent.offline": _agent_online,
    **{k: _camera_event for k in (*CAMERA_FAULTS, "camera.up")},
    "cameras.snapshot": _cameras_snapshot,
    "camera.room_uncovered": _room, "camera.room_covered": _room,
    **{k: _recorder_event for k in ("recorder.down", "recorder.up", "recorder.disk_low", "recorder.disk_space_ok")},
    "recorders.snapshot": _recorders_snapshot,
    "isolation.breached": _isolation_event, "isolation.restored": _isolation_event,
    "isolation.snapshot": _isolation_snapshot,
    "lan.snapshot": _lan_snapshot,
    "host.snapshot": _host_snapshot,
}
DERIVED_KINDS: tuple[str, ...] = tuple(sorted(DERIVERS))


def derive(row: Row) -> list[Sample]:
    """The points of one stored record; a record of another kind, or malformed data, gives none
    (logged: a telemetry bug must never stop the stream of the others)."""
    fn = DERIVERS.get(row.kind)
    if fn is None or not isinstance(row.data, Mapping):
        return []
    try:
        return fn(row)
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("record %d (%s) has data telemetry cannot read, no points from it: %s", row.record_id, row.kind, exc)
        return []


def heartbeat_sample(venue_id: str, agent_id: str, at: float, outbox_depth: Any, clock_offset: Any) -> Sample | None:
    """The ``vg_agent`` point of one heartbeat (what the agents table holds of the latest one)."""
    fields = {k: v for k, v in (("outbox_depth", _num(outbox_depth)), ("clock_offset_s", _num(clock_offset)))
              if v is not None}
    if not fields:
        return None
    return Sample("vg_agent", (("venue", venue_id), ("agent", agent_id)), fields, at)
