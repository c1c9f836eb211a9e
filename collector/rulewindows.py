"""When rules bite: exam windows from the schedule, approved maintenance windows, sealed periods
(from a passing readiness check to the end of the exam day's last session).

The rulebook asks one question of time: in ``[a, b]``, which stretches fall in a rule's periods
(an exam window with its lead and lag, or the sealed venue) and which are excused by a venue's
approved special situation (特殊情况)? Answers come from memory; :class:`StoreCalendar` reloads
them from the store whenever they changed, so a schedule import, an approval by another process or
a new seal takes effect at the rulebook's next step, without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from collector.rulefiles import Period
from collector.store import Store
from collector.store import schema


@dataclass(frozen=True)
class Window:
    """A stretch of time in which a period holds, with the exam session that makes it."""

    start: float
    end: float
    session_id: str = ""
    room: str = ""


@dataclass(frozen=True)
class ExamSession:
    """An exam session in force (the calendar's own copy)."""

    venue_id: str
    room: str
    start: float
    end: float
    session_id: str


@dataclass(frozen=True)
class Excuse:
    """An approved maintenance window: the rules it covers (empty = all) and its reason."""

    venue_id: str
    start: float
    end: float
    rules: frozenset[int]
    reason: str

    def covers(self, rule_id: int) -> bool:
        return not self.rules or rule_id in self.rules


class Calendar(Protocol):
    """What the rulebook needs to know about time."""

    def windows(self, venue_id: str, room: str | None, period: Period, a: float, b: float) -> list[Window]:
        """Windows of ``period`` overlapping [a, b] (room None = every room of the venue)."""

    def excused(self, venue_id: str, rule_id: int, a: float, b: float) -> list[tuple[float, float]]:
        """Approved maintenance windows covering the rule that overlap [a, b]."""


class MemoryCalendar:
    """A calendar over given sessions and excuses (the store calendar fills one; scenarios too)."""

    def __init__(self, sessions: list[ExamSession] | None = None, excuses: list[Excuse] | None = None,
                 seals: dict[str, list[tuple[float, float]]] | None = None) -> None:
        self.sessions: dict[str, list[ExamSession]] = {}
        self.excuses: dict[str, list[Excuse]] = {}
        self.seals: dict[str, list[tuple[float, float]]] = {}
        self.replace(sessions or [], excuses or [], seals or {})

    def replace(self, sessions: list[ExamSession], excuses: list[Excuse],
                seals: dict[str, list[tuple[float, float]]] | None = None) -> None:
        by_venue: dict[str, list[ExamSession]] = {}
        for s in sorted(sessions, key=lambda s: s.start):
            by_venue.setdefault(s.venue_id, []).append(s)
        excused: dict[str, list[Excuse]] = {}
        for e in excuses:
            excused.setdefault(e.venue_id, []).append(e)
        self.sessions, self.excuses = by_venue, excused
        self.seals = seals or {}

    def windows(self, venue_id: str, room: str | None, period: Period, a: float, b: float) -> list[Window]:
        if period.period == "sealed":
            return [Window(s, e) for s, e in self.seals.get(venue_id, ()) if s <= b and e >= a]
        lead, lag = period.lead_minutes * 60.0, period.lag_minutes * 60.0
        return [Window(s.start - lead, s.end + lag, s.session_id, s.room)
                for s in self.sessions.get(venue_id, ())
                if (room is None or s.room == room) and s.start - lead <= b and s.end + lag >= a]

    def excused(self, venue_id: str, rule_id: int, a: float, b: float) -> list[tuple[float, float]]:
        return [(e.start, e.end) for e in self.excuses.get(venue_id, ())
                if e.covers(rule_id) and e.start <= b and e.end >= a]


class StoreCalendar(MemoryCalendar):
    """The calendar of the store: sessions in force, approved maintenance and seals.

    Each :meth:`refresh` asks the store one cheap question — have the schedule, the maintenance
    windows or the seals changed? — and reloads only then. Point rules judge an event by the
    calendar when it is evaluated, so a seal made a moment before a device appears must already
    be known: polling every few seconds would let such an event through.
    """

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self._signature: tuple[object, ...] | None = None

    def refresh(self, force: bool = False) -> None:
        """Reload when the tables the calendar reads have changed (or when forced)."""
        s, m, z = schema.exam_sessions, schema.maintenance_windows, schema.seals
        probe = sa.select(
            sa.select(sa.func.max(s.c.id)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(s).where(s.c.retired_in.is_(None)).scalar_subquery(),
            sa.select(sa.func.max(m.c.id)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(m).where(m.c.status == "approved").scalar_subquery(),
            sa.select(sa.func.max(z.c.id)).scalar_subquery(),
            sa.select(sa.func.max(z.c.until)).scalar_subquery())
        with self.store.engine.connect() as conn:
            signature = tuple(conn.execute(probe).one())
            if signature == self._signature and not force:
                return
            self._signature = signature
            self.replace(*self._load(conn))

    @staticmethod
    def _load(conn: sa.Connection) -> tuple[list[ExamSession], list[Excuse], dict[str, list[tuple[float, float]]]]:
        s, m, z = schema.exam_sessions, schema.maintenance_windows, schema.seals
        sessions = [ExamSession(r.venue_id, r.room, r.start, r.end, r.session_id) for r in conn.execute(
            sa.select(s.c.venue_id, s.c.room, s.c.start, s.c.end, s.c.session_id).where(s.c.retired_in.is_(None)))]
        excuses = [Excuse(r.venue_id, r.start, r.end, frozenset(int(x) for x in r.rules), r.reason) for r in conn.execute(
            sa.select(m.c.venue_id, m.c.start, m.c.end, m.c.rules, m.c.reason).where(m.c.status == "approved"))]
        seals: dict[str, list[tuple[float, float]]] = {}
        for r in conn.execute(sa.select(z.c.venue_id, z.c.sealed_at, z.c.until)):
            seals.setdefault(r.venue_id, []).append((r.sealed_at, r.until))
        return sessions, excuses, seals
