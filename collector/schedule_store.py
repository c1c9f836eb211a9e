"""The exam schedule in the SQL store: versions, sessions in force, and what each import changed.

Nothing is ever overwritten or deleted. An import is a ``schedule_versions`` row; its scope is
the (venue, month) pairs its sessions fall in. Sessions in force in that scope are retired
(``exam_sessions.retired_in`` = the new version) and the plan's sessions are inserted, so the
plan that was in force at any past moment can be shown in a penalty case.

``venues.inventory_version`` is the venue's *config version*: the seq of the signed config its
agents receive (inventory and sessions together). Agents refuse an older one and ignore an equal
one, so an import that changes a venue's sessions moves it by one and the publisher re-sends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import sqlalchemy as sa

from collector.store import Store, schema
from protocol.schedule import Session

_SAME = ("room", "subject", "start", "end")


@dataclass(frozen=True)
class VenueSession:
    """One exam session of one venue (the protocol's Session plus the venue it belongs to)."""

    venue_id: str
    room: str
    start: float
    end: float
    subject: str = ""
    session_id: str = ""

    @property
    def session(self) -> Session:
        """The form signed into the venue's agent config."""
        return Session(self.room, self.start, self.end, self.subject, self.session_id)

    def same_as(self, other: "VenueSession") -> bool:
        """Whether nothing an agent or a rule reads differs."""
        return all(getattr(self, f) == getattr(other, f) for f in _SAME)


@dataclass(frozen=True)
class Scope:
    """One (venue, month) pair an import replaces; ``start``..``end`` is the month in the plan's zone."""

    venue_id: str
    month: str  # "2026-12"
    start: float
    end: float


@dataclass(frozen=True)
class ScheduleVersion:
    """One import."""

    id: int
    imported_at: float
    imported_by: str
    source: str
    sha256: str
    months: tuple[str, ...]
    sessions: int
    venues: tuple[str, ...]  # venues its sessions belong to


@dataclass
class VenueChange:
    """What an import changed (or would change) at one venue, matched by session_id."""

    venue_id: str
    added: list[VenueSession] = field(default_factory=list)
    removed: list[VenueSession] = field(default_factory=list)
    changed: list[tuple[VenueSession, VenueSession]] = field(default_factory=list)  # (before, after)
    unchanged: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass
class ImportResult:
    """Outcome of :func:`apply_plan`; ``version`` is None when nothing changed (no version written)."""

    version: int | None
    changes: dict[str, VenueChange]
    config_versions: dict[str, int]  # venue -> its new config version, for venues whose agents get it
    months: tuple[str, ...] = ()  # the months the plan covers
    sessions: int = 0  # sessions in the plan
    same_file_as: int | None = None  # an earlier version imported from a file with the same sha256


@dataclass
class VersionDiff:
    """What one version changed, against the sessions it retired (the plan in force just before)."""

    version: ScheduleVersion
    before: tuple[int, ...]  # versions the retired sessions came from
    changes: dict[str, VenueChange]


# -- reading ------------------------------------------------------------------------------------

def sessions_in_force(store: Store, venue_id: str | None = None, start: float | None = None,
                      end: float | None = None) -> list[VenueSession]:
    """Sessions in force (all venues when ``venue_id`` is None), optionally only those overlapping
    [start, end]; ordered by venue, start, room. The rulebook judges exam windows with these."""
    e = schema.exam_sessions.c
    q = sa.select(e.venue_id, e.room, e.start, e.end, e.subject, e.session_id).where(e.retired_in.is_(None))
    if venue_id is not None:
        q = q.where(e.venue_id == venue_id)
    if start is not None:
        q = q.where(e.end >= start)
    if end is not None:
        q = q.where(e.start <= end)
    with store.engine.connect() as conn:
        rows = conn.execute(q.order_by(e.venue_id, e.start, e.room)).all()
    return [_session(r) for r in rows]


def upcoming_sessions(store: Store, venue_id: str | None, now: float) -> list[VenueSession]:
    """Sessions in force that have not ended (end > now): what a venue's agents need to know."""
    return [s for s in sessions_in_force(store, venue_id, start=now) if s.end > now]


def versions(store: Store, venue_id: str | None = None) -> list[ScheduleVersion]:
    """Every import, oldest first; with ``venue_id`` only those that added or retired its sessions."""
    v, e = schema.schedule_versions, schema.exam_sessions.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(v).order_by(v.c.id)).mappings().all()
        venues_of: dict[int, set[str]] = {}
        for vid, ven in conn.execute(sa.select(e.version_id, e.venue_id).distinct()).all():
            venues_of.setdefault(vid, set()).add(ven)
        touched: set[int] = set()
        if venue_id is not None:
            touched = {r[0] for r in conn.execute(sa.select(e.retired_in).where(
                e.venue_id == venue_id, e.retired_in.is_not(None)).distinct()).all()}
    out = [ScheduleVersion(r["id"], r["imported_at"], r["imported_by"], r["source"], r["sha256"], tuple(r["months"]),
                           r["sessions"], tuple(sorted(venues_of.get(r["id"], ())))) for r in rows]
    if venue_id is None:
        return out
    return [x for x in out if venue_id in x.venues or x.id in touched]


def version_diff(store: Store, version_id: int) -> VersionDiff | None:
    """What ``version_id`` changed: its sessions against those it retired (None if no such version)."""
    found = [x for x in versions(store) if x.id == version_id]
    if not found:
        return None
    e = schema.exam_sessions.c
    cols = (e.venue_id, e.room, e.start, e.end, e.subject, e.session_id)
    with store.engine.connect() as conn:
        new = [_session(r) for r in conn.execute(sa.select(*cols).where(e.version_id == version_id)).all()]
        old_rows = conn.execute(sa.select(*cols, e.version_id).where(e.retired_in == version_id)).all()
    old = [_session(r[:6]) for r in old_rows]
    return VersionDiff(found[0], tuple(sorted({r[6] for r in old_rows})), diff(old, new))


def in_force_elsewhere(store: Store, scope: Iterable[Scope]) -> dict[tuple[str, str], int]:
    """(venue, session_id) → version of sessions in force at the scope's venues but outside its
    months: an import must not reuse their ids, or cases naming a session would be ambiguous."""
    by_venue: dict[str, list[Scope]] = {}
    for s in scope:
        by_venue.setdefault(s.venue_id, []).append(s)
    e = schema.exam_sessions.c
    out: dict[tuple[str, str], int] = {}
    with store.engine.connect() as conn:
        for venue, pairs in by_venue.items():
            inside = sa.or_(*[sa.and_(e.start >= p.start, e.start < p.end) for p in pairs])
            q = sa.select(e.session_id, e.version_id).where(e.venue_id == venue, e.retired_in.is_(None), sa.not_(inside))
            out.update({(venue, sid): ver for sid, ver in conn.execute(q).all()})
    return out


# -- writing ------------------------------------------------------------------------------------

def apply_plan(store: Store, sessions: list[VenueSession], scope: list[Scope], *, source: str, sha256: str,
               by: str, now: float | None = None) -> ImportResult:
    """Make ``sessions`` the plan in force for ``scope`` in one transaction (validated beforehand).

    Nothing is written when the plan equals what is in force: a repeated import must not create
    versions or wake every agent. Config versions move only for venues whose sessions changed and
    that already have a config (version > 0): a first config without the registered inventory would
    make the agent judge every device on the LAN as unregistered.
    """
    now = time.time() if now is None else now
    with store.engine.begin() as conn:
        _lock_venues(conn, {s.venue_id for s in scope})
        old_ids, old = _in_scope(conn, scope)
        changes = diff(old, sessions)
        months = tuple(sorted({p.month for p in scope}))
        if not any(c.has_changes for c in changes.values()):
            return ImportResult(None, changes, {}, months, len(sessions), _same_file(conn, sha256))
        version = _insert_version(conn, len(sessions), months, source, sha256, by, now)
        if old_ids:
            e = schema.exam_sessions
            conn.execute(e.update().where(e.c.id.in_(old_ids)).values(retired_in=version))
        conn.execute(schema.exam_sessions.insert(), [{"version_id": version, "retired_in": None, **s.__dict__}
                                                     for s in sessions])
        bumped = _bump_config_versions(conn, sorted(v for v, c in changes.items() if c.has_changes))
    return ImportResult(version, changes, bumped, months, len(sessions))


def diff(old: Iterable[VenueSession], new: Iterable[VenueSession]) -> dict[str, VenueChange]:
    """Per venue: sessions added, removed, changed (same session_id, other room/subject/time), unchanged."""
    before = {(s.venue_id, s.session_id): s for s in old}
    after = {(s.venue_id, s.session_id): s for s in new}
    out: dict[str, VenueChange] = {}
    for key in sorted(before.keys() | after.keys()):
        change = out.setdefault(key[0], VenueChange(key[0]))
        a, b = before.get(key), after.get(key)
        if a is None:
            change.added.append(b)  # type: ignore[arg-type]
        elif b is None:
            change.removed.append(a)
        elif a.same_as(b):
            change.unchanged += 1
        else:
            change.changed.append((a, b))
    return out


def _session(row: Any) -> VenueSession:
    venue, room, start, end, subject, sid = row
    return VenueSession(venue, room, float(start), float(end), subject, sid)


def _lock_venues(conn: sa.Connection, venue_ids: set[str]) -> None:
    """Serialise concurrent imports touching the same venues (PostgreSQL row locks; SQLite locks the file)."""
    v = schema.venues.c
    conn.execute(sa.select(v.id).where(v.id.in_(sorted(venue_ids))).with_for_update()).all()


def _in_scope(conn: sa.Connection, scope: list[Scope]) -> tuple[list[int], list[VenueSession]]:
    """Row ids and sessions in force inside the scope's (venue, month) pairs."""
    e = schema.exam_sessions.c
    ids: list[int] = []
    found: list[VenueSession] = []
    for p in scope:
        q = sa.select(e.id, e.venue_id, e.room, e.start, e.end, e.subject, e.session_id).where(
            e.venue_id == p.venue_id, e.retired_in.is_(None), e.start >= p.start, e.start < p.end)
        for row in conn.execute(q).all():
            ids.append(row[0])
            found.append(_session(row[1:]))
    return ids, found


def _same_file(conn: sa.Connection, sha256: str) -> int | None:
    v = schema.schedule_versions.c
    return conn.execute(sa.select(sa.func.max(v.id)).where(v.sha256 == sha256)).scalar()


def _insert_version(conn: sa.Connection, count: int, months: tuple[str, ...], source: str, sha256: str, by: str,
                    now: float) -> int:
    row = {"imported_at": now, "imported_by": by[:100], "source": source[:300], "sha256": sha256,
           "months": list(months), "sessions": count}
    return int(conn.execute(schema.schedule_versions.insert().values(**row)).inserted_primary_key[0])


def _bump_config_versions(conn: sa.Connection, venue_ids: list[str]) -> dict[str, int]:
    """Move the config version of venues that have one, so their agents get the new sessions."""
    v = schema.venues.c
    if not venue_ids:
        return {}
    cond = sa.and_(v.id.in_(venue_ids), v.inventory_version > 0)
    conn.execute(schema.venues.update().where(cond).values(inventory_version=v.inventory_version + 1))
    return {vid: int(ver) for vid, ver in conn.execute(sa.select(v.id, v.inventory_version).where(cond)).all()}
