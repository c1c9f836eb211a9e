"""Readiness rounds, agents' reports, venue reports and seals in the SQL store.

Writers: the CLI and pages only *request* rounds (``state = requested``); everything else is
written by the running collector's readiness runner in its writer thread, each step in one
transaction, so a collector killed mid-step neither loses nor doubles a venue report or a seal.
Readers: :func:`venue_day` and :func:`day_overview` give the CLI, the pages and the XLSX export
one view of a venue's exam day.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from collector import readiness as rd
from collector.schedule_store import VenueSession, sessions_in_force
from collector.store import Store, schema
from protocol.readiness import Report

#: Round states, in order.
REQUESTED, SENT, COMPLETE = "requested", "sent", "complete"
CURSOR = "cursor"


class ReadinessError(ValueError):
    """A round that cannot be requested (unknown venue, bad day, nobody named)."""


# -- rounds --------------------------------------------------------------------------------------

def request_round(store: Store, venue_id: str, day: str, by: str, now: float) -> int:
    """A round for ``venue_id`` and exam day ``day``; the running collector sends it within seconds."""
    if not by.strip():
        raise ReadinessError("who asks must be named (--by)")
    with store.engine.begin() as conn:
        if conn.execute(sa.select(schema.venues.c.id).where(schema.venues.c.id == venue_id)).first() is None:
            raise ReadinessError(f"unknown venue {venue_id!r}")
        return _insert_round(conn, venue_id, rd.parse_day(day), by.strip()[:100], now)


def _insert_round(conn: sa.Connection, venue_id: str, day: str, by: str, now: float) -> int:
    row = {"venue_id": venue_id, "exam_day": day, "requested_at": now, "requested_by": by, "state": REQUESTED,
           "sent_at": None, "deadline": None, "agents": None}
    return int(conn.execute(schema.readiness_rounds.insert().values(**row)).inserted_primary_key[0])


def open_scheduled_rounds(store: Store, now: float, tz: str, hhmm: str) -> list[int]:
    """Open the rounds the schedule makes due at ``now``; return their ids.

    A venue with exams on day D gets one round from ``hhmm`` on D−1 until its first exam of D
    starts, unless a round for (venue, D) was already requested since ``hhmm`` on D−1 (by the
    schedule or a person): restarts and repeated calls open nothing twice.
    """
    opened: list[int] = []
    for day in rd.candidate_days(now, tz, hhmm):
        since = rd.opens_at(day, tz, hhmm)
        first: dict[str, float] = {}
        for s in sessions_of_day(store, None, day, tz):
            first[s.venue_id] = min(first.get(s.venue_id, s.start), s.start)
        due = sorted(v for v, start in first.items() if start > now)
        if not due:
            continue
        r = schema.readiness_rounds.c
        with store.engine.begin() as conn:
            have = set(conn.execute(sa.select(r.venue_id).where(
                r.exam_day == day, r.venue_id.in_(due), r.requested_at >= since)).scalars())
            opened += [_insert_round(conn, v, day, rd.SCHEDULE, now) for v in due if v not in have]
    return opened


def rounds(store: Store, venue_id: str | None = None, day: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
    """Rounds, oldest first."""
    r = schema.readiness_rounds.c
    q = sa.select(schema.readiness_rounds).order_by(r.requested_at, r.id)
    for col, value in ((r.venue_id, venue_id), (r.exam_day, day), (r.state, state)):
        if value is not None:
            q = q.where(col == value)
    with store.engine.connect() as conn:
        return [dict(m) for m in conn.execute(q).mappings()]


def venue_agents(store: Store, venue_id: str) -> list[str]:
    """The venue's agents that are not revoked: those a round addresses."""
    return agents_by_venue(store).get(venue_id, [])


def agents_by_venue(store: Store) -> dict[str, list[str]]:
    """Every venue's non-revoked agents, sorted (one query for a whole batch of rounds)."""
    out: dict[str, list[str]] = {}
    for a in store.agents():
        if not a.revoked:
            out.setdefault(a.venue_id, []).append(a.id)
    return {v: sorted(ids) for v, ids in out.items()}


def due_rounds(store: Store, now: float) -> list[dict[str, Any]]:
    """Sent rounds that every addressed agent answered on time, or whose deadline has passed:
    two queries however many rounds are waiting."""
    a = schema.agent_reports.c
    waiting = rounds(store, state=SENT)
    if not waiting:
        return []
    with store.engine.connect() as conn:
        pairs = conn.execute(sa.select(a.round_id, a.agent_id).where(
            a.round_id.in_([r["id"] for r in waiting]), a.late.is_(False)).distinct()).all()
    answered: dict[int, set[str]] = {}
    for round_id, agent_id in pairs:
        answered.setdefault(round_id, set()).add(agent_id)
    return [r for r in waiting
            if now >= r["deadline"] or set(r["agents"] or []) <= answered.get(r["id"], set())]


def mark_sent(store: Store, round_id: int, agents: list[str], sent_at: float, deadline: float) -> None:
    """The command went out to ``agents`` at ``sent_at``; reports are due by ``deadline``."""
    r = schema.readiness_rounds
    with store.engine.begin() as conn:
        conn.execute(r.update().where(r.c.id == round_id).values(state=SENT, sent_at=sent_at, deadline=deadline,
                                                                  agents=agents))


# -- agents' reports -----------------------------------------------------------------------------

def take_reports(store: Store, limit_scan: int = 100_000) -> int:
    """Index the readiness reports ingest stored since the last call; return how many.

    The cursor is a vault leaf per vault, not a record id: a rebuilt index numbers records anew
    but keeps their leaves, and each vault's leaves are indexed in order by its one collector
    (``vaults.indexed_upto`` moves in the same transaction). Each call reads only records above
    the cursors, so an index of millions of events costs nothing per tick.
    """
    rec = schema.records.c
    with store.engine.begin() as conn:
        cursors = _cursors(conn)
        before = dict(cursors)
        tops = dict(conn.execute(sa.select(schema.vaults.c.id, schema.vaults.c.indexed_upto)).all())
        if "main" not in tops:  # an index written without a vaults row (tests, benches)
            tops["main"] = conn.execute(sa.select(sa.func.max(rec.vault_index)).where(rec.vault_id == "main")).scalar()
        rows = []
        for vault_id, top in sorted(tops.items()):
            cursor = cursors.get(vault_id, -1)
            if top is None or top <= cursor:
                continue
            cursors[vault_id] = top = min(int(top), cursor + limit_scan)
            rows += conn.execute(sa.select(rec.id, rec.agent_id, rec.venue_id, rec.seq, rec.received_at, rec.data,
                                           rec.vault_index, rec.vault_id)
                                 .where(rec.vault_id == vault_id, rec.vault_index > cursor, rec.vault_index <= top,
                                        rec.stream == "rpt", rec.kind == "readiness.report")
                                 .order_by(rec.vault_index, rec.id)).all()
        if cursors == before:
            return 0
        rows.sort(key=lambda row: row.received_at)
        parsed = [(row, _parse(row.data)) for row in rows]
        ids = {rep.round_id for _, rep in parsed if rep is not None and rep.round_id is not None}
        r = schema.readiness_rounds.c
        found = {m["id"]: m for m in conn.execute(sa.select(schema.readiness_rounds).where(r.id.in_(ids))).mappings()} if ids else {}
        if parsed:
            conn.execute(schema.agent_reports.insert(), [_answer_row(row, rep, found) for row, rep in parsed])
        _set_cursors(conn, cursors)
    return len(rows)


def _parse(data: Any) -> Report | None:
    try:
        return Report.from_json(data)
    except ValueError:
        return None


def _answer_row(row: Any, report: Report | None, rounds_: dict[int, Any]) -> dict[str, Any]:
    """An ``agent_reports`` row for one indexed report; a report naming a round of another venue,
    or not addressed to this agent, is kept without a round (evidence, but no part of a verdict)."""
    base = {"venue_id": row.venue_id, "agent_id": row.agent_id, "record_id": row.id, "vault_index": row.vault_index,
            "vault_id": row.vault_id, "seq": row.seq, "received_at": row.received_at}
    if report is None:
        return {**base, "round_id": None, "exam_day": str(row.data.get("exam_day", ""))[:10], "started_at": None,
                "finished_at": None, "result": "invalid", "items": [], "baseline": {}, "config_version": 0, "late": True}
    rnd = rounds_.get(report.round_id) if report.round_id is not None else None
    if rnd is not None and (rnd["venue_id"] != row.venue_id or row.agent_id not in (rnd["agents"] or [])):
        rnd = None
    late = rnd is None or rnd["state"] == COMPLETE or row.received_at > (rnd["deadline"] or 0)
    items = [{"item": i.item, "result": i.result, "seen": i.seen, "fix": i.fix, "evidence": i.evidence} for i in report.items]
    return {**base, "round_id": rnd["id"] if rnd is not None else None, "exam_day": report.exam_day[:10],
            "started_at": report.started_at, "finished_at": report.finished_at, "result": report.result,
            "items": items, "baseline": report.baseline, "config_version": report.config_version, "late": late}


def answers(conn: sa.Connection, round_id: int) -> dict[str, rd.Answer]:
    """Each agent's first on-time report for the round."""
    a = schema.agent_reports.c
    out: dict[str, rd.Answer] = {}
    for m in conn.execute(sa.select(schema.agent_reports).where(a.round_id == round_id, a.late.is_(False))
                          .order_by(a.received_at, a.id)).mappings():
        out.setdefault(m["agent_id"], rd.Answer(m["agent_id"], m["id"], m["record_id"], m["vault_index"], m["seq"],
                                                m["received_at"], m["started_at"], m["finished_at"], m["result"],
                                                tuple(m["items"]), m["baseline"], m["config_version"]))
    return out


def _cursors(conn: sa.Connection) -> dict[str, int]:
    """The last leaf read per vault (a cursor saved before clusters is one leaf of the vault "main")."""
    s = schema.readiness_state.c
    value = conn.execute(sa.select(s.value).where(s.key == CURSOR)).scalar() or {}
    if "vault_index" in value:
        return {"main": int(value["vault_index"])}
    return {k: int(v) for k, v in value.get("vaults", {}).items()}


def _set_cursors(conn: sa.Connection, cursors: dict[str, int]) -> None:
    s = schema.readiness_state
    conn.execute(s.delete().where(s.c.key == CURSOR))
    conn.execute(s.insert().values(key=CURSOR, value={"vaults": cursors}))


# -- completing a round --------------------------------------------------------------------------

def complete_round(store: Store, rnd: dict[str, Any], tz: str, now: float) -> int | None:
    """Write the venue report of ``rnd`` when every agent answered or its deadline passed, and the
    seal when it passed; return the report id (None: still waiting). One transaction."""
    ends = [s.end for s in sessions_of_day(store, rnd["venue_id"], rnd["exam_day"], tz)]
    with store.engine.begin() as conn:
        got = answers(conn, rnd["id"])
        addressed = list(rnd["agents"] or [])
        everyone = all(a in got for a in addressed)
        if not everyone and now < rnd["deadline"]:
            return None
        completed_at = max([rnd["sent_at"], *(a.received_at for a in got.values())]) if everyone else rnd["deadline"]
        result = rd.combine(addressed, got)
        previous = _previous_report(conn, rnd["venue_id"], rnd["exam_day"])
        row = {"round_id": rnd["id"], "venue_id": rnd["venue_id"], "exam_day": rnd["exam_day"],
               "completed_at": completed_at, "result": result.result, "items": result.items, "agents": result.agents,
               "fixed": rd.fixed_items(previous["items"] if previous else None, result.items), "vault_index": None}
        report_id = int(conn.execute(schema.venue_reports.insert().values(**row)).inserted_primary_key[0])
        r = schema.readiness_rounds
        conn.execute(r.update().where(r.c.id == rnd["id"]).values(state=COMPLETE))
        if result.result == "pass":
            _seal(conn, rnd, report_id, completed_at, list(got.values()), ends)
    return report_id


def _previous_report(conn: sa.Connection, venue_id: str, day: str) -> dict[str, Any] | None:
    v = schema.venue_reports.c
    return conn.execute(sa.select(schema.venue_reports).where(v.venue_id == venue_id, v.exam_day == day)
                        .order_by(v.completed_at.desc(), v.id.desc()).limit(1)).mappings().first()


def _seal(conn: sa.Connection, rnd: dict[str, Any], report_id: int, sealed_at: float, got: list[rd.Answer],
          ends: list[float]) -> int | None:
    """Seal the venue until the end of the day's last exam (``ends``: the day's session ends); a
    re-seal lists what changed and the seal it replaces points to it. No exam that day (or it is
    over): nothing to keep closed."""
    if not ends or max(ends) <= sealed_at:
        return None
    baseline = rd.merge_baselines(got)
    z = schema.seals
    prev = conn.execute(sa.select(z).where(z.c.venue_id == rnd["venue_id"], z.c.exam_day == rnd["exam_day"],
                                           z.c.replaced_by.is_(None)).order_by(z.c.id.desc()).limit(1)).mappings().first()
    changes = rd.seal_changes(prev["baseline"], baseline) if prev is not None else []
    seal_id = int(conn.execute(z.insert().values(venue_id=rnd["venue_id"], exam_day=rnd["exam_day"], sealed_at=sealed_at,
                                                 until=max(ends), report_id=report_id, baseline=baseline,
                                                 changes=changes, replaced_by=None)).inserted_primary_key[0])
    if prev is not None:
        conn.execute(z.update().where(z.c.id == prev["id"]).values(replaced_by=seal_id))
    return seal_id


def unvaulted_reports(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Venue reports not yet in the vault, with their round and seal (what the vault note holds)."""
    v = schema.venue_reports.c
    with store.engine.connect() as conn:
        reports = [dict(m) for m in conn.execute(sa.select(schema.venue_reports).where(v.vault_index.is_(None))
                                                 .order_by(v.id).limit(limit)).mappings()]
        for rep in reports:
            rep["round"] = dict(conn.execute(sa.select(schema.readiness_rounds).where(
                schema.readiness_rounds.c.id == rep["round_id"])).mappings().one())
            seal = conn.execute(sa.select(schema.seals).where(schema.seals.c.report_id == rep["id"])).mappings().first()
            rep["seal"] = dict(seal) if seal is not None else None
    return reports


def set_vault_index(store: Store, pairs: list[tuple[int, int]], vault_id: str = "main") -> None:
    """Record where each venue report went in the vault (``vault_id``'s)."""
    v = schema.venue_reports
    with store.engine.begin() as conn:
        for report_id, index in pairs:
            conn.execute(v.update().where(v.c.id == report_id).values(vault_index=index, vault_id=vault_id))


# -- views ---------------------------------------------------------------------------------------

def sessions_of_day(store: Store, venue_id: str | None, day: str, tz: str) -> list[VenueSession]:
    """Sessions in force that start on ``day`` (local), of one venue or all."""
    start, end = rd.day_bounds(day, tz)
    return [s for s in sessions_in_force(store, venue_id, start, end) if start <= s.start < end]


def venue_day(store: Store, venue_id: str, day: str, tz: str) -> dict[str, Any]:
    """Everything about one venue's readiness for one exam day, for the CLI, the page and XLSX:
    the venue, its sessions, every round with its report (oldest first), the seals, the status."""
    v, r, z = schema.venue_reports.c, schema.readiness_rounds.c, schema.seals.c
    with store.engine.connect() as conn:
        venue = conn.execute(sa.select(schema.venues).where(schema.venues.c.id == venue_id)).mappings().first()
        if venue is None:
            raise ReadinessError(f"unknown venue {venue_id!r}")
        rounds_ = [dict(m) for m in conn.execute(sa.select(schema.readiness_rounds).where(
            r.venue_id == venue_id, r.exam_day == day).order_by(r.requested_at, r.id)).mappings()]
        reports = {m["round_id"]: dict(m) for m in conn.execute(sa.select(schema.venue_reports).where(
            v.venue_id == venue_id, v.exam_day == day)).mappings()}
        seals = [dict(m) for m in conn.execute(sa.select(schema.seals).where(
            z.venue_id == venue_id, z.exam_day == day).order_by(z.id)).mappings()]
    for rnd in rounds_:
        rnd["report"] = reports.get(rnd["id"])
    done = [x["report"] for x in rounds_ if x["report"] is not None]
    return {"venue": dict(venue), "day": day, "sessions": sessions_of_day(store, venue_id, day, tz), "rounds": rounds_,
            "reports": done, "latest": done[-1] if done else None, "status": _status(rounds_), "seals": seals,
            "seal": next((s for s in reversed(seals) if s["replaced_by"] is None), None)}


def _status(rounds_: list[dict[str, Any]]) -> str:
    """pass / fail / no_report of the newest round, ``pending`` while it runs, ``none`` without rounds."""
    if not rounds_:
        return "none"
    last = rounds_[-1]
    return last["report"]["result"] if last["report"] is not None else "pending"


def day_overview(store: Store, day: str, tz: str, venue_id: str | None = None) -> list[dict[str, Any]]:
    """One row per venue with exams on ``day`` (or a round for it): the authority's table; with
    ``venue_id`` only that venue's row (a venue operator's view)."""
    sessions: dict[str, int] = {}
    for s in sessions_of_day(store, venue_id, day, tz):
        sessions[s.venue_id] = sessions.get(s.venue_id, 0) + 1
    r = schema.readiness_rounds.c
    q = sa.select(r.venue_id).where(r.exam_day == day).distinct()
    if venue_id is not None:
        q = q.where(r.venue_id == venue_id)
    with store.engine.connect() as conn:
        with_rounds = set(conn.execute(q).scalars())
    rows = []
    for vid in sorted(sessions.keys() | with_rounds):
        view = venue_day(store, vid, day, tz)
        latest = view["latest"]
        rows.append({"venue_id": vid, "venue_name": view["venue"]["name"], "sessions": sessions.get(vid, 0),
                     "rounds": len(view["rounds"]), "status": view["status"],
                     "failed": rd.failed_items(latest["items"]) if latest and view["status"] != "pending" else [],
                     "silent": rd.silent_agents(latest["agents"]) if latest and view["status"] != "pending" else [],
                     "sealed_at": view["seal"]["sealed_at"] if view["seal"] else None,
                     "until": view["seal"]["until"] if view["seal"] else None})
    return rows
