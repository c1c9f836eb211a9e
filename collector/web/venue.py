"""考点详情: one venue's rooms and cameras with a timeline per camera across today's exam windows,
its recorders, the LAN against the registered inventory, its agents, the event stream and its
cases, plus the same as JSON.

Everything is read back from what agents reported (their ``*.snapshot`` records say what is, the
edge events say when it changed), so the page shows the evidence, never a fresh probe.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from collector import readiness as rd
from collector.cases import cases as case_rows
from collector.schedule_store import sessions_in_force
from collector.store import Store, schema
from collector.store.store import AgentRow
from collector.web import auth
from collector.web.auth import User
from collector.web.render import WebContext, ctx, page
from collector.web.strings import t

#: The camera rule's lead: cameras must be on from 15 minutes before an exam (3号 二(四)).
LEAD_SECONDS = 15 * 60
#: Camera edge events and the timeline status each one starts.
CAMERA_EVENTS = {"camera.up": "on", "camera.down": "off", "camera.stream_stalled": "stalled",
                 "camera.path_problem": "path", "camera.auth_failed": "auth"}
#: Statuses in a cameras.snapshot (agent/watchers/camera_state.py) and their timeline status.
SNAPSHOT_STATUS = {"up": "on", "down": "off", "stalled": "stalled", "path_problem": "path",
                   "auth_failed": "auth", "unknown": "unknown"}
#: Statuses that mean no picture reached anyone (auth and path problems are not "off": README).
OFF = ("off", "stalled")
#: How far back the page looks for the newest snapshots: agents send them every few minutes, and a
#: venue's records over three years must not be scanned on every page view.
LOOKBACK = 2 * 24 * 3600.0
CLOCK_LIMIT = 2.0  # seconds of agent clock offset shown as a problem ([ingest] max_clock_skew's default)
OUTBOX_LIMIT = 1000  # records waiting on an agent shown as a backlog
EVENT_LIMIT = 100

router = APIRouter()


class VenueView(BaseModel):
    """The data of 考点详情."""

    venue: dict[str, Any]
    day: str
    sessions: list[dict[str, Any]] = Field(description="today's exam sessions")
    rooms: list[dict[str, Any]] = Field(description="rooms with their cameras; each camera has its timeline per "
                                        "exam window: segments of on / off / stalled / path / auth / unknown")
    recorders: list[dict[str, Any]]
    lan: dict[str, Any] = Field(description="registered devices with what was seen, and unregistered devices")
    agents: list[dict[str, Any]]
    events: list[dict[str, Any]]
    cases: list[dict[str, Any]]


def venue_view(store: Store, venue_id: str, now: float, tz: str) -> dict[str, Any] | None:
    """Everything 考点详情 shows about ``venue_id`` today (None: no such venue)."""
    venue = _venue(store, venue_id)
    if venue is None:
        return None
    day = rd.local_day(now, tz)
    start, end = rd.day_bounds(day, tz)
    sessions = [s for s in sessions_in_force(store, venue_id, start, end) if start <= s.start < end]
    devices = [d.to_json() for d in store.inventory(venue_id).devices]
    snapshots = _latest_snapshots(store, venue_id, now)
    return {
        "venue": venue, "day": day,
        "sessions": [{"room": s.room, "subject": s.subject, "start": s.start, "end": s.end,
                      "session_id": s.session_id} for s in sessions],
        "rooms": rooms(devices, sessions, _camera_points(store, venue_id, start, now, snapshots), now),
        "recorders": recorders(devices, snapshots.get("recorders.snapshot"), _latest_recorder_events(store, venue_id, now)),
        "lan": lan(devices, snapshots.get("lan.snapshot")),
        "agents": agents(store, venue_id),
        "events": events(store, venue_id),
        "cases": case_rows(store, venue_id=venue_id, limit=EVENT_LIMIT),
    }


def _venue(store: Store, venue_id: str) -> dict[str, Any] | None:
    v = schema.venues.c
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(v.id, v.name, v.inventory_version).where(v.id == venue_id)).mappings().first()
    return dict(row) if row else None


# -- snapshots -----------------------------------------------------------------------------------

def _latest_snapshots(store: Store, venue_id: str, now: float) -> dict[str, dict[str, Any]]:
    """The newest lan, cameras and recorders snapshot of each of the venue's agents, merged per kind
    (a venue may split its watchers over several hosts): ``{kind: {"at": …, "data": merged}}``."""
    r = schema.records.c
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for kind in ("lan.snapshot", "cameras.snapshot", "recorders.snapshot"):
            newest = (sa.select(r.agent_id, sa.func.max(r.at).label("at"))
                      .where(r.venue_id == venue_id, r.kind == kind, r.at <= now, r.at >= now - LOOKBACK)
                      .group_by(r.agent_id).subquery())
            rows = conn.execute(sa.select(r.at, r.data).join(newest, sa.and_(
                r.agent_id == newest.c.agent_id, r.at == newest.c.at)).where(r.kind == kind)).all()
            if rows:
                out[kind] = {"at": max(at for at, _ in rows), "data": _merge([d for _, d in rows])}
    return out


def _merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Snapshots of several agents as one: their dict parts (devices, cameras, recorders…) united."""
    merged: dict[str, Any] = {}
    for doc in docs:
        for key, value in (doc or {}).items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged.setdefault(key, value)
    return merged


# -- rooms, cameras, timelines -------------------------------------------------------------------

def _camera_points(store: Store, venue_id: str, day_start: float, now: float,
                   snapshots: dict[str, dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """Per camera MAC, the known (time, status) points: the newest snapshot before the day, then
    every snapshot and camera edge event of the day (events use their back-dated ``since``)."""
    r = schema.records.c
    points: dict[str, list[tuple[float, str]]] = {}
    with store.engine.connect() as conn:
        before = conn.execute(sa.select(r.at, r.data).where(
            r.venue_id == venue_id, r.kind == "cameras.snapshot", r.at < day_start, r.at >= day_start - LOOKBACK)
            .order_by(r.at.desc()).limit(1)).first()
        rows = conn.execute(sa.select(r.at, r.kind, r.data).where(
            r.venue_id == venue_id, r.at >= day_start, r.at <= now,
            r.kind.in_([*CAMERA_EVENTS, "cameras.snapshot"])).order_by(r.at, r.id)).all()
    if before is not None:
        _snapshot_points(points, before.at, before.data)
    for at, kind, data in rows:
        if kind == "cameras.snapshot":
            _snapshot_points(points, at, data)
        elif data.get("mac"):
            points.setdefault(str(data["mac"]).lower(), []).append((float(data.get("since") or at), CAMERA_EVENTS[kind]))
    return {mac: sorted(p) for mac, p in points.items()}


def _snapshot_points(points: dict[str, list[tuple[float, str]]], at: float, data: dict[str, Any]) -> None:
    for mac, cam in (data.get("cameras") or {}).items():
        status = SNAPSHOT_STATUS.get(cam.get("status", "unknown"), "unknown")
        points.setdefault(mac.lower(), []).append((float(cam.get("since") or at), status))


def status_at(points: list[tuple[float, str]], ts: float) -> str:
    """The status in force at ``ts`` (the last point at or before it), ``unknown`` before any."""
    status = "unknown"
    for at, s in points:
        if at > ts:
            break
        status = s
    return status


def segments(points: list[tuple[float, str]], start: float, end: float, scale_end: float | None = None) -> list[dict[str, Any]]:
    """``[start, end]`` cut into stretches of one status each, with their place as percentages of
    ``[start, scale_end]`` (default ``end``), so a template draws CSS bars without arithmetic."""
    cuts = [(start, status_at(points, start))] + [(at, s) for at, s in points if start < at < end]
    out: list[dict[str, Any]] = []
    for (a, s), (b, _) in zip(cuts, cuts[1:] + [(end, "")]):
        if out and out[-1]["status"] == s:
            out[-1]["end"] = b
        elif b > a:
            out.append({"start": a, "end": b, "status": s})
    span = max((scale_end if scale_end is not None else end) - start, 1.0)
    for seg in out:
        seg["left"] = round((seg["start"] - start) / span * 100, 3)
        seg["width"] = round((seg["end"] - seg["start"]) / span * 100, 3)
    return out


def camera_windows(points: list[tuple[float, str]], room_sessions: list[Any], now: float) -> list[dict[str, Any]]:
    """One bar per exam window of the camera's room, from 15 minutes before the start to the end,
    drawn only up to ``now`` (what lies ahead is not known yet); ``off_seconds`` counts the time
    the camera was proven off or without video inside the window."""
    out = []
    for s in room_sessions:
        lead = s.start - LEAD_SECONDS
        known_end = min(s.end, now)
        segs = segments(points, lead, known_end, s.end) if known_end > lead else []
        out.append({"session_id": s.session_id, "subject": s.subject, "lead_start": lead, "start": s.start,
                    "end": s.end, "lead_width": round(LEAD_SECONDS / (s.end - lead) * 100, 3), "segments": segs,
                    "off_seconds": round(sum(g["end"] - g["start"] for g in segs if g["status"] in OFF))})
    return out


def rooms(devices: list[dict[str, Any]], sessions: list[Any], points: dict[str, list[tuple[float, str]]],
          now: float) -> list[dict[str, Any]]:
    """Every room with a registered camera or an exam today, with its cameras and their timelines
    (a server room holding only the recorder is no exam room: the recorders table shows it)."""
    names = sorted({d["room"] for d in devices if d["room"] and d["role"] == "camera"} | {s.room for s in sessions})
    out = []
    for room in names:
        room_sessions = [s for s in sessions if s.room == room]
        cams = [d for d in devices if d["role"] == "camera" and d["room"] == room]
        out.append({
            "room": room, "sessions": len(room_sessions),
            "cameras": [{"mac": d["mac"], "ip": d["ip"], "name": d["name"], "vendor": d["vendor"],
                         "status": status_at(points.get(d["mac"], []), now),
                         "windows": camera_windows(points.get(d["mac"], []), room_sessions, now)} for d in cams],
            "other_devices": sum(1 for d in devices if d["role"] != "camera" and d["room"] == room)})
    return out


# -- recorders -----------------------------------------------------------------------------------

def recorders(devices: list[dict[str, Any]], snapshot: dict[str, Any] | None,
              latest: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each registered recorder with its state, disks, free space and recording channels from the
    newest recorders.snapshot; a recorder.down / recorder.up newer than the snapshot decides the
    state, and the free GB (kept out of snapshots: it changes every poll) come from the newest
    recorder.disk_low event. ``latest``: per recorder MAC, the newest record of each such kind."""
    data = (snapshot or {}).get("data", {})
    facts, episodes = data.get("recorders", {}), data.get("episodes", {})
    seen_at = (snapshot or {}).get("at")
    out = []
    for d in (x for x in devices if x["role"] == "recorder"):
        rec, edges = facts.get(d["mac"], {}), latest.get(d["mac"], {})
        recording = rec.get("recording") or {}
        channels = rec.get("channels") or {}
        low = f"disk_low|{d['mac']}" in episodes
        out.append({
            "mac": d["mac"], "ip": d["ip"], "name": d["name"], "room": d["room"],
            "state": _recorder_state(rec.get("state", "unknown"), seen_at, edges),
            "model": rec.get("model", ""), "disks": [{"id": k, **v} for k, v in sorted((rec.get("disks") or {}).items())],
            "disk_low": low, "free_gb": edges.get("recorder.disk_low", {}).get("data", {}).get("free_gb") if low else None,
            "channels": len(channels), "channels_offline": sum(1 for c in channels.values() if c.get("online") is False),
            "recording": sum(1 for c in recording.values() if c.get("recording")),
            "not_recording": sorted(k for k, c in recording.items() if not c.get("recording")),
            "seen_at": seen_at})
    return out


def _recorder_state(state: str, seen_at: float | None, edges: dict[str, dict[str, Any]]) -> str:
    """The snapshot's state unless a newer recorder.down or recorder.up says otherwise."""
    newest = max((e for k, e in edges.items() if k in ("recorder.down", "recorder.up")), key=lambda e: e["at"],
                 default=None)
    if newest is not None and (seen_at is None or newest["at"] > seen_at):
        return "down" if newest["kind"] == "recorder.down" else "up"
    return state


def _latest_recorder_events(store: Store, venue_id: str, now: float) -> dict[str, dict[str, dict[str, Any]]]:
    """The newest recorder.down, recorder.up and recorder.disk_low per recorder, within LOOKBACK."""
    r = schema.records.c
    kinds = ("recorder.down", "recorder.up", "recorder.disk_low")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(r.kind, r.at, r.data).where(
            r.venue_id == venue_id, r.kind.in_(kinds), r.at >= now - LOOKBACK, r.at <= now)
            .order_by(r.at.desc()).limit(500)).all()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, at, data in rows:
        out.setdefault(str(data.get("recorder", "")), {}).setdefault(kind, {"kind": kind, "at": at, "data": data})
    return out


# -- LAN -----------------------------------------------------------------------------------------

def lan(devices: list[dict[str, Any]], snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """The registered devices against the newest lan.snapshot: seen or not, at which address;
    devices seen but not registered listed apart (the page highlights them)."""
    data = (snapshot or {}).get("data", {})
    seen: dict[str, dict[str, Any]] = data.get("devices", {})
    registered = []
    for d in devices:
        s = seen.get(d["mac"])
        registered.append({**d, "seen": s is not None, "seen_ip": (s or {}).get("ip", ""),
                           "readdressed": bool(s and d["ip"] and s.get("ip") and s["ip"] != d["ip"])})
    known = {d["mac"] for d in devices}
    unregistered = [{"mac": mac, **{k: v for k, v in s.items() if k != "mac"}}
                    for mac, s in sorted(seen.items()) if mac not in known]
    return {"snapshot_at": (snapshot or {}).get("at"), "registered": registered, "unregistered": unregistered}


# -- agents, events ------------------------------------------------------------------------------

def agents(store: Store, venue_id: str) -> list[dict[str, Any]]:
    """The venue's agents with what is wrong with each (offline, clock, backlog), as catalogue keys."""
    cols = [getattr(schema.agents.c, f) for f in AgentRow.__dataclass_fields__]
    with store.engine.connect() as conn:
        rows = [AgentRow(*r) for r in conn.execute(sa.select(*cols).where(schema.agents.c.venue_id == venue_id)
                                                   .order_by(schema.agents.c.id))]
    out = []
    for a in rows:
        problems = [] if a.revoked else [key for key, bad in (
            ("ui_agent_never_seen", a.last_seen is None),
            ("ui_agent_offline", a.last_seen is not None and not a.online),
            ("ui_agent_clock", a.clock_offset is not None and abs(a.clock_offset) > CLOCK_LIMIT),
            ("ui_agent_backlog", (a.outbox_depth or 0) > OUTBOX_LIMIT)) if bad]
        out.append({"id": a.id, "online": a.online, "revoked": a.revoked, "boot": a.boot, "last_seen": a.last_seen,
                    "last_heartbeat": a.last_heartbeat, "outbox_depth": a.outbox_depth,
                    "clock_offset": a.clock_offset, "acked_seq": a.acked_seq, "problems": problems})
    return out


def events(store: Store, venue_id: str, limit: int = EVENT_LIMIT) -> list[dict[str, Any]]:
    """The venue's newest records, without shipped log lines."""
    r = schema.records.c
    q = (sa.select(r.id, r.agent_id, r.seq, r.kind, r.at, r.received_at, r.data, r.vault_index)
         .where(r.venue_id == venue_id, r.stream != "log").order_by(r.at.desc(), r.id.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [dict(m) for m in conn.execute(q).mappings()]


# -- routes --------------------------------------------------------------------------------------

def view_for(c: WebContext, user: User, venue_id: str) -> dict[str, Any]:
    """The venue as ``user`` may see it: another venue's is 404 for an operator, like a missing one."""
    auth.check_venue(user, venue_id)
    view = venue_view(c.store, venue_id, c.now(), c.tz)
    if view is None:
        raise HTTPException(404, t("ui_no_such_venue", venue=venue_id))
    return view


@router.get("/venues/{venue_id}", response_class=HTMLResponse, include_in_schema=False)
def venue_page(venue_id: str, request: Request, user: User = Depends(auth.current_user),
               c: WebContext = Depends(ctx)) -> HTMLResponse:
    """考点详情."""
    return page(request, "venue.html", {"v": view_for(c, user, venue_id), "lead_minutes": LEAD_SECONDS // 60})


@router.get("/api/v1/venues/{venue_id}", response_model=VenueView, tags=["考点详情"],
            summary="One venue: rooms, camera timelines, recorders, LAN, agents, events, cases",
            description="What 考点详情 shows for today (the [schedule] time zone). Camera timelines cover each exam "
                        "window of the camera's room from 15 minutes before the start. A venue operator asking for "
                        "another venue gets 404.")
def venue_api(venue_id: str, user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return view_for(c, user, venue_id)
