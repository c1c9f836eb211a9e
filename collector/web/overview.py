"""总览: every venue the user may see as a tile coloured by its state, today's and tomorrow's
exams, open violation cases, offline agents and tomorrow's readiness, plus the same as JSON.

A venue's state is the worst that applies, in this order: 违规 (an open violation case the
authority has not dismissed), 离线 (an agent offline, or no agent at all: nothing watches the
venue), 警告 (an open warning case, or the latest readiness report for today or tomorrow failed or
had agents missing), else 正常. A violation outranks offline because a known breach is what the
authority must act on first; the tile still says that agents are offline.

Every number comes from a handful of grouped queries, never one query per venue. Even so, building
and rendering 500 tiles costs 125–170 ms of CPU, so each build is kept per role and scope while the
live signature (:mod:`.signature`) is unchanged and for at most ``MAX_AGE`` seconds, and shared by
every request and live stream meanwhile (:mod:`.pagecache`). The API's events are always read fresh.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, Field

from collector import readiness as rd
from collector.store import Store, schema
from collector.web import auth
from collector.web.auth import User
from collector.web.fragments import render_parts
from collector.web.pagecache import cache_on
from collector.web.render import WebContext, ctx, page
from collector.web.signature import signature

STATES = ("ok", "warning", "violation", "offline")
#: The page's sections (macros of overview_parts.html), each in an element ``ov-<part>``.
PARTS = ("counts", "grid", "exams", "violations", "offline", "readiness", "dead_letters")
#: Seconds a cached overview may serve when its signature has not moved: what the signature does
#: not follow (heartbeat figures, a renamed venue) is at most this old.
MAX_AGE = 5.0
CACHE = "overview_cache"
#: Readiness results that make a venue 警告.
BAD_READINESS = ("fail", "no_report")
#: Open cases with these statuses count; a dismissed one was judged not to be a breach.
COUNTED_STATUSES = ("new", "acknowledged", "confirmed")
LIST_LIMIT = 200

router = APIRouter()


class VenueTile(BaseModel):
    """One venue in the grid."""

    id: str
    name: str
    state: str = Field(description="ok / warning / violation / offline (正常 / 警告 / 违规 / 离线)")
    agents_total: int
    agents_online: int
    offline_agents: list[str]
    violations: int = Field(description="open violation cases (not dismissed)")
    warnings: int = Field(description="open warning cases (not dismissed)")
    readiness_today: str | None = Field(description="latest readiness result for today's exams, None without exams or rounds")
    readiness_tomorrow: str | None
    sessions_today: int
    sessions_tomorrow: int
    agents: list[dict[str, Any]] = Field(description="non-revoked agents: id, online, seen, last_heartbeat, "
                                         "outbox_depth, clock_offset, acked_seq")


class Overview(BaseModel):
    """The data of 总览."""

    generated_at: float
    today: str
    tomorrow: str
    counts: dict[str, int] = Field(description="venues per state")
    venues: list[VenueTile]
    exams: dict[str, list[dict[str, Any]]] = Field(description="'today' / 'tomorrow': per venue, its sessions")
    violations: list[dict[str, Any]] = Field(description="open violation cases, newest first")
    offline_agents: list[dict[str, Any]]
    readiness: list[dict[str, Any]] = Field(description="tomorrow's venues with exams or rounds, and their status")
    dead_letters: dict[str, int] = Field(description="refused messages per reason (the authority only)")
    events: list[dict[str, Any]] = Field(description="the newest records of the visible venues (no log lines)")


class AgentRow(NamedTuple):
    """An agent as the overview reads it (a plain tuple: SQLAlchemy rows are slow to read by
    name, and the overview reads 5,000 of them several times)."""

    id: str
    venue_id: str
    online: bool
    last_seen: float | None
    last_heartbeat: float | None
    outbox_depth: int | None
    clock_offset: float | None
    acked_seq: int


class SessionRow(NamedTuple):
    """An exam session as the overview reads it (a plain tuple, as AgentRow)."""

    venue_id: str
    room: str
    start: float
    end: float
    subject: str
    session_id: str


@dataclass(frozen=True)
class Snapshot:
    """One build of the overview for a role and scope, shared by every request while it is valid
    (see :mod:`.pagecache`): the page's data, the agents behind its tiles, its rendered sections."""

    data: dict[str, Any]  # the overview without the tiles' agent lists and the events
    agents: dict[str, list[Any]]  # non-revoked agent rows per venue, for the API
    names: dict[str, str]  # venue id -> name
    fragments: dict[str, Markup]  # each section's HTML by element id
    memo: dict[str, bytes] = field(default_factory=dict, compare=False)  # the API's encoded body, made once


def overview(store: Store, scope: str | None, now: float, tz: str, *,
             authority: bool) -> tuple[dict[str, Any], dict[str, list[Any]], dict[str, str]]:
    """The overview for the venues in ``scope`` (None: all) at ``now``, the agent rows per venue
    and the venue names. Tiles carry no agent lists and there are no events: the page shows
    neither, and the API adds them (:func:`api_view`)."""
    today = rd.local_day(now, tz)
    tomorrow = rd.next_day(today)
    venues = _venues(store, scope)
    names = {v["id"]: v["name"] for v in venues}
    agents = _agents(store, scope)
    counts = _open_case_counts(store, scope)
    sessions = {d: _sessions_of_day(store, scope, d, tz) for d in (today, tomorrow)}
    ready = {d: readiness_status(store, d, scope) for d in (today, tomorrow)}
    per_venue = {day: Counter(x.venue_id for x in sessions[day]) for day in (today, tomorrow)}  # once, not per tile
    tiles = [_tile(v, agents.get(v["id"], []), counts.get(v["id"], {}), per_venue, ready, today, tomorrow)
             for v in venues]
    offline = [{"id": a.id, "venue_id": a.venue_id, "venue_name": names.get(a.venue_id, a.venue_id),
                "last_seen": a.last_seen, "last_heartbeat": a.last_heartbeat, "never_seen": a.last_seen is None}
               for rows in agents.values() for a in rows if not a.online]
    data = {
        "generated_at": now, "today": today, "tomorrow": tomorrow,
        "counts": {s: sum(1 for x in tiles if x["state"] == s) for s in STATES},
        "venues": tiles,
        "exams": {"today": _exam_rows(sessions[today], names), "tomorrow": _exam_rows(sessions[tomorrow], names)},
        "violations": _open_violations(store, scope, names),
        "offline_agents": sorted(offline, key=lambda a: (a["venue_id"], a["id"])),
        "readiness": _readiness_rows(sessions[tomorrow], ready[tomorrow], names),
        "dead_letters": store.dead_letter_counts() if authority else {},
    }
    return data, agents, names


def api_view(snap: Snapshot, store: Store, scope: str | None, events: int) -> dict[str, Any]:
    """The API's overview: the snapshot's data with each tile's agents and the newest ``events``,
    which are read fresh (one indexed query) because the signature does not follow records."""
    venues = [{**tile, "agents": [_agent_detail(a) for a in snap.agents.get(tile["id"], [])]}
              for tile in snap.data["venues"]]
    return {**snap.data, "venues": venues,
            "events": latest_events(store, scope, snap.names, events) if events else []}


def api_body(snap: Snapshot, store: Store, scope: str | None, events: int) -> bytes:
    """:func:`api_view` as JSON bytes. All but the events is encoded once per snapshot (kept in
    ``snap.memo``), the fresh events are appended: with 500 venues and 5,000 agents, validating and
    encoding the 1.3 MB through the response model cost ~100 ms of CPU per request, for data
    that was built from typed rows in the first place (the tests check it against the model)."""
    head = snap.memo.get("api")
    if head is None:
        view = api_view(snap, store, scope, 0)
        del view["events"]
        head = snap.memo["api"] = _json(view)[:-1]  # the object without its closing brace
    fresh = latest_events(store, scope, snap.names, events) if events else []
    return head + b',"events":' + _json(fresh) + b"}"


def _json(data: Any) -> bytes:
    """JSON as FastAPI's JSONResponse writes it."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _agent_detail(a: Any) -> dict[str, Any]:
    return {"id": a.id, "online": a.online, "seen": a.last_seen is not None, "last_heartbeat": a.last_heartbeat,
            "outbox_depth": a.outbox_depth, "clock_offset": a.clock_offset, "acked_seq": a.acked_seq}


def venue_state(agents_total: int, agents_online: int, violations: int, warnings: int,
                readiness: list[str | None]) -> str:
    """The colour of a tile; see the module docstring for the order."""
    if violations:
        return "violation"
    if agents_total == 0 or agents_online < agents_total:
        return "offline"
    if warnings or any(r in BAD_READINESS for r in readiness):
        return "warning"
    return "ok"


def _tile(v: dict[str, Any], agents: list[Any], counts: dict[str, int],
          sessions: dict[str, Counter[str]], ready: dict[str, dict[str, str]], today: str, tomorrow: str) -> dict[str, Any]:
    """One venue's tile (without its agent list, which only the API carries)."""
    online = sum(1 for a in agents if a.online)
    r_today, r_tomorrow = ready[today].get(v["id"]), ready[tomorrow].get(v["id"])
    violations, warnings = counts.get("violation", 0), counts.get("warning", 0)
    return {"id": v["id"], "name": v["name"],
            "state": venue_state(len(agents), online, violations, warnings, [r_today, r_tomorrow]),
            "agents_total": len(agents), "agents_online": online,
            "offline_agents": [a.id for a in agents if not a.online],
            "violations": violations, "warnings": warnings,
            "readiness_today": r_today, "readiness_tomorrow": r_tomorrow,
            "sessions_today": sessions[today][v["id"]],
            "sessions_tomorrow": sessions[tomorrow][v["id"]]}


# -- queries -------------------------------------------------------------------------------------

def _venues(store: Store, scope: str | None) -> list[dict[str, Any]]:
    v = schema.venues.c
    q = sa.select(v.id, v.name).order_by(v.id)
    if scope is not None:
        q = q.where(v.id == scope)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def _agents(store: Store, scope: str | None) -> dict[str, list[Any]]:
    """Non-revoked agents per venue as rows (a revoked agent is gone, not offline); rows, not dicts:
    5,000 dicts cost more than the query."""
    a = schema.agents.c
    q = sa.select(a.id, a.venue_id, a.online, a.last_seen, a.last_heartbeat, a.outbox_depth, a.clock_offset,
                  a.acked_seq).where(a.revoked.is_(False)).order_by(a.id)
    if scope is not None:
        q = q.where(a.venue_id == scope)
    out: dict[str, list[Any]] = {}
    with store.engine.connect() as conn:
        for r in map(AgentRow._make, conn.execute(q)):
            out.setdefault(r.venue_id, []).append(r)
    return out


def _open_case_counts(store: Store, scope: str | None) -> dict[str, dict[str, int]]:
    """Open, not dismissed cases per venue and severity."""
    c = schema.cases.c
    q = (sa.select(c.venue_id, c.severity, sa.func.count()).where(c.state == "open", c.status.in_(COUNTED_STATUSES))
         .group_by(c.venue_id, c.severity))
    if scope is not None:
        q = q.where(c.venue_id == scope)
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for venue_id, severity, n in conn.execute(q):
            out.setdefault(venue_id, {})[severity] = int(n)
    return out


def _open_violations(store: Store, scope: str | None, names: dict[str, str]) -> list[dict[str, Any]]:
    c = schema.cases.c
    q = (sa.select(c.id, c.venue_id, c.rule_id, c.title, c.status, c.room, c.subject, c.session_id, c.opened_at,
                   c.last_seen)
         .where(c.state == "open", c.severity == "violation", c.status.in_(COUNTED_STATUSES))
         .order_by(c.opened_at.desc(), c.id.desc()).limit(LIST_LIMIT))
    if scope is not None:
        q = q.where(c.venue_id == scope)
    with store.engine.connect() as conn:
        return [{**dict(r), "venue_name": names.get(r["venue_id"], r["venue_id"])} for r in conn.execute(q).mappings()]


def latest_events(store: Store, scope: str | None, names: dict[str, str], limit: int) -> list[dict[str, Any]]:
    """The newest records of the venues in ``scope``, without shipped log lines: by arrival for all
    venues, by event time for one (each order has its index)."""
    r = schema.records.c
    q = sa.select(r.agent_id, r.venue_id, r.seq, r.kind, r.at, r.received_at, r.data).where(r.stream != "log").limit(limit)
    if scope is None:
        q = q.order_by(r.received_at.desc(), r.id.desc())
    else:
        q = q.where(r.venue_id == scope).order_by(r.at.desc(), r.id.desc())
    with store.engine.connect() as conn:
        return [{**dict(m), "venue_name": names.get(m["venue_id"], m["venue_id"])} for m in conn.execute(q).mappings()]


def _sessions_of_day(store: Store, scope: str | None, day: str, tz: str) -> list[Any]:
    """Sessions in force that start on ``day``, ordered as the schedule lists them. Bounded on
    ``start`` from both sides so ``ix_exam_sessions_start`` reads one day however many months of
    plans (and retired sessions) the table keeps."""
    start, end = rd.day_bounds(day, tz)
    e = schema.exam_sessions.c
    q = (sa.select(e.venue_id, e.room, e.start, e.end, e.subject, e.session_id)
         .where(e.retired_in.is_(None), e.start >= start, e.start < end).order_by(e.venue_id, e.start, e.room))
    if scope is not None:
        q = q.where(e.venue_id == scope)
    with store.engine.connect() as conn:
        return list(map(SessionRow._make, conn.execute(q)))


def _exam_rows(sessions: list[Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per venue: its rooms, number of sessions, first start and last end, the sessions."""
    rows: dict[str, dict[str, Any]] = {}
    for s in sessions:
        row = rows.setdefault(s.venue_id, {"venue_id": s.venue_id, "venue_name": names.get(s.venue_id, s.venue_id),
                                           "rooms": [], "sessions": [], "first_start": s.start, "last_end": s.end})
        if s.room not in row["rooms"]:
            row["rooms"].append(s.room)
        row["sessions"].append({"room": s.room, "subject": s.subject, "start": s.start, "end": s.end,
                                "session_id": s.session_id})
        row["first_start"], row["last_end"] = min(row["first_start"], s.start), max(row["last_end"], s.end)
    return [rows[k] for k in sorted(rows)]


def readiness_status(store: Store, day: str, scope: str | None) -> dict[str, str]:
    """Each venue's readiness for exam day ``day`` in two queries: the newest round's report result,
    ``pending`` while it runs; venues without a round are absent."""
    r, v = schema.readiness_rounds.c, schema.venue_reports.c
    rq = sa.select(r.id, r.venue_id).where(r.exam_day == day).order_by(r.requested_at, r.id)
    vq = sa.select(v.round_id, v.result).where(v.exam_day == day)
    if scope is not None:
        rq, vq = rq.where(r.venue_id == scope), vq.where(v.venue_id == scope)
    with store.engine.connect() as conn:
        newest = {venue_id: round_id for round_id, venue_id in conn.execute(rq)}
        results = dict(conn.execute(vq).all())
    return {venue_id: results.get(round_id, "pending") for venue_id, round_id in newest.items()}


def _readiness_rows(sessions: list[Any], status: dict[str, str], names: dict[str, str]) -> list[dict[str, Any]]:
    per: dict[str, int] = {}
    for s in sessions:
        per[s.venue_id] = per.get(s.venue_id, 0) + 1
    return [{"venue_id": vid, "venue_name": names.get(vid, vid), "sessions": per.get(vid, 0),
             "status": status.get(vid, "none")} for vid in sorted(per.keys() | status.keys()) if vid in names]


# -- routes --------------------------------------------------------------------------------------

def snapshot(request: Request, c: WebContext, user: User, sig: tuple[Any, ...] | None = None) -> Snapshot:
    """The overview as ``user`` may see it, from the cache when nothing changed (``sig``: a
    signature the caller just took, e.g. the live stream's). Keyed by role and scope, so a venue
    operator's view is never served to anyone else, nor an admin's to a viewer."""
    scope = auth.venue_filter(user)
    now = c.now()
    if sig is None:
        sig = signature(c.store, scope, rd.local_day(now, c.tz))
    cache = cache_on(request.app.state, CACHE, MAX_AGE)
    return cache.get((user.role, scope), sig, now, lambda previous: _build(request, c, user, scope, previous))


def _build(request: Request, c: WebContext, user: User, scope: str | None, previous: Snapshot | None) -> Snapshot:
    """Read the overview and render its sections, as the page shows them to ``user``. When the
    data equals the previous build's (an entry renewed for its age only), its sections are kept:
    rendering is half the cost."""
    data, agents, names = overview(c.store, scope, c.now(), c.tz, authority=user.role != "venue")
    if previous is not None and _same(previous.data, data):
        return Snapshot(data, agents, names, previous.fragments)
    shown = [p for p in PARTS if p != "dead_letters" or user.role != "venue"]
    return Snapshot(data, agents, names, render_parts(request, "overview_parts.html", user, data, shown, "ov-"))


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal overviews but for when they were made."""
    return old.keys() == new.keys() and all(old[k] == new[k] for k in new if k != "generated_at")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview_page(request: Request, user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> HTMLResponse:
    """总览, with live updates (see :mod:`collector.web.live`); the sections come rendered from the cache."""
    snap = snapshot(request, c, user)
    return page(request, "overview.html", {"d": snap.data, "f": snap.fragments})


@router.get("/api/v1/overview", response_model=Overview, tags=["总览"], summary="Overview: venues by state, exams, cases, agents, readiness",
            description="What 总览 shows: every venue the user may see with its state (ok / warning / violation / "
                        "offline), today's and tomorrow's exams, open violation cases, offline agents and tomorrow's "
                        "readiness. A venue operator gets only its venue. Everything but the events may be up to "
                        f"{MAX_AGE:.0f} s old when nothing the page shows changed.")
def overview_api(request: Request, limit: int = Query(50, description="how many of the newest events to include (0–500)"),
                 user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> Response:
    body = api_body(snapshot(request, c, user), c.store, auth.venue_filter(user), min(max(limit, 0), 500))
    return Response(body, media_type="application/json")
