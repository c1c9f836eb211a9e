"""总览: every venue the user may see as a tile coloured by its state, today's and tomorrow's
exams, open violation cases, offline agents and tomorrow's readiness, plus the same as JSON.

A venue's state is the worst that applies, in this order: 违规 (an open violation case the
authority has not dismissed), 离线 (an agent offline, or no agent at all: nothing watches the
venue), 警告 (an open warning case, or the latest readiness report for today or tomorrow failed or
had agents missing), else 正常. A violation outranks offline because a known breach is what the
authority must act on first; the tile still says that agents are offline.

Every number comes from a handful of grouped queries, never one query per venue, so the page
stays fast with hundreds of venues and thousands of agents.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from collector import readiness as rd
from collector.schedule_store import sessions_in_force
from collector.store import Store, schema
from collector.web import auth
from collector.web.auth import User
from collector.web.render import WebContext, ctx, page

STATES = ("ok", "warning", "violation", "offline")
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


def overview(store: Store, scope: str | None, now: float, tz: str, *, authority: bool,
             events: int = 50) -> dict[str, Any]:
    """The overview for the venues in ``scope`` (None: all) at ``now``, with the newest ``events``."""
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
    offline = [{"id": a["id"], "venue_id": a["venue_id"], "venue_name": names.get(a["venue_id"], a["venue_id"]),
                "last_seen": a["last_seen"], "last_heartbeat": a["last_heartbeat"], "never_seen": a["last_seen"] is None}
               for rows in agents.values() for a in rows if not a["online"]]
    return {
        "generated_at": now, "today": today, "tomorrow": tomorrow,
        "counts": {s: sum(1 for x in tiles if x["state"] == s) for s in STATES},
        "venues": tiles,
        "exams": {"today": _exam_rows(sessions[today], names), "tomorrow": _exam_rows(sessions[tomorrow], names)},
        "violations": _open_violations(store, scope, names),
        "offline_agents": sorted(offline, key=lambda a: (a["venue_id"], a["id"])),
        "readiness": _readiness_rows(sessions[tomorrow], ready[tomorrow], names),
        "dead_letters": store.dead_letter_counts() if authority else {},
        "events": latest_events(store, scope, names, events) if events else [],
    }


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


def _tile(v: dict[str, Any], agents: list[dict[str, Any]], counts: dict[str, int],
          sessions: dict[str, Counter[str]], ready: dict[str, dict[str, str]], today: str, tomorrow: str) -> dict[str, Any]:
    online = sum(1 for a in agents if a["online"])
    r_today, r_tomorrow = ready[today].get(v["id"]), ready[tomorrow].get(v["id"])
    violations, warnings = counts.get("violation", 0), counts.get("warning", 0)
    return {"id": v["id"], "name": v["name"],
            "state": venue_state(len(agents), online, violations, warnings, [r_today, r_tomorrow]),
            "agents_total": len(agents), "agents_online": online,
            "offline_agents": [a["id"] for a in agents if not a["online"]],
            "violations": violations, "warnings": warnings,
            "readiness_today": r_today, "readiness_tomorrow": r_tomorrow,
            "sessions_today": sessions[today][v["id"]],
            "sessions_tomorrow": sessions[tomorrow][v["id"]],
            "agents": [{"id": a["id"], "online": a["online"], "seen": a["last_seen"] is not None,
                        **{k: a[k] for k in ("last_heartbeat", "outbox_depth", "clock_offset", "acked_seq")}}
                       for a in agents]}


# -- queries -------------------------------------------------------------------------------------

def _venues(store: Store, scope: str | None) -> list[dict[str, Any]]:
    v = schema.venues.c
    q = sa.select(v.id, v.name).order_by(v.id)
    if scope is not None:
        q = q.where(v.id == scope)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def _agents(store: Store, scope: str | None) -> dict[str, list[dict[str, Any]]]:
    """Non-revoked agents per venue (a revoked agent is gone, not offline)."""
    a = schema.agents.c
    q = sa.select(a.id, a.venue_id, a.online, a.last_seen, a.last_heartbeat, a.outbox_depth, a.clock_offset,
                  a.acked_seq).where(a.revoked.is_(False)).order_by(a.id)
    if scope is not None:
        q = q.where(a.venue_id == scope)
    out: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for r in conn.execute(q).mappings():
            out.setdefault(r["venue_id"], []).append(dict(r))
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
    start, end = rd.day_bounds(day, tz)
    return [s for s in sessions_in_force(store, scope, start, end) if start <= s.start < end]


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

def data_for(c: WebContext, user: User, events: int = 0) -> dict[str, Any]:
    """The overview as ``user`` may see it (the page shows no event list: the venue page has it)."""
    return overview(c.store, auth.venue_filter(user), c.now(), c.tz, authority=user.role != "venue", events=events)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview_page(request: Request, user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> HTMLResponse:
    """总览, with live updates (see :mod:`collector.web.live`)."""
    return page(request, "overview.html", {"d": data_for(c, user)})


@router.get("/api/v1/overview", response_model=Overview, tags=["总览"], summary="Overview: venues by state, exams, cases, agents, readiness",
            description="What 总览 shows: every venue the user may see with its state (ok / warning / violation / "
                        "offline), today's and tomorrow's exams, open violation cases, offline agents and tomorrow's "
                        "readiness. A venue operator gets only its venue.")
def overview_api(limit: int = Query(50, description="how many of the newest events to include (0–500)"),
                 user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return data_for(c, user, min(max(limit, 0), 500))
