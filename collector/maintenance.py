"""Special situations (特殊情况): maintenance a venue declares and the authority approves.

The notice allows the recorder off only in a special situation (「非特殊情况不得关机」). A venue
declares the window ahead (what, when, which rules it touches); only once the authority approves
it does the rulebook excuse matching conditions inside it. A declared window that was never
approved excuses nothing, and both the declaration and the decision keep who and when.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from collector.store import Store
from collector.store import schema

#: Longest window one declaration may cover: maintenance, not a standing exemption.
MAX_HOURS = 72


class MaintenanceError(ValueError):
    """A declaration or decision that cannot be accepted."""


def declare(store: Store, venue_id: str, start: float, end: float, rules: list[int], reason: str, by: str,
            now: float) -> int:
    """Record a venue's declaration; returns its id (status ``declared`` until decided)."""
    if end <= start:
        raise MaintenanceError("the window must end after it starts")
    if end - start > MAX_HOURS * 3600:
        raise MaintenanceError(f"a window may last at most {MAX_HOURS} hours; declare several if needed")
    if not reason.strip() or not by.strip():
        raise MaintenanceError("a declaration needs a reason (--reason) and who declares it (--by)")
    with store.engine.begin() as conn:
        if conn.execute(sa.select(schema.venues.c.id).where(schema.venues.c.id == venue_id)).first() is None:
            raise MaintenanceError(f"unknown venue {venue_id!r}")
        res = conn.execute(schema.maintenance_windows.insert().values(
            venue_id=venue_id, start=start, end=end, rules=sorted(set(rules)), reason=reason, declared_by=by,
            declared_at=now, status="declared"))
        return int(res.inserted_primary_key[0])


def decide(store: Store, window_id: int, approve: bool, by: str, reason: str, now: float) -> dict[str, Any]:
    """The authority's decision on a declared window; a rejection needs a reason."""
    if not by.strip():
        raise MaintenanceError("who decides must be named (--by)")
    if not approve and not reason.strip():
        raise MaintenanceError("a rejection needs a reason (--reason)")
    m = schema.maintenance_windows
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(m).where(m.c.id == window_id)).mappings().first()
        if row is None:
            raise MaintenanceError(f"no maintenance window {window_id}")
        if row["status"] != "declared":
            raise MaintenanceError(f"window {window_id} is already {row['status']}")
        conn.execute(m.update().where(m.c.id == window_id).values(
            status="approved" if approve else "rejected", decided_by=by, decided_at=now, decision_reason=reason))
        return dict(conn.execute(sa.select(m).where(m.c.id == window_id)).mappings().one())


def windows(store: Store, venue_id: str | None = None) -> list[dict[str, Any]]:
    """Every declared window, newest first."""
    m = schema.maintenance_windows
    q = sa.select(m).order_by(m.c.start.desc())
    if venue_id is not None:
        q = q.where(m.c.venue_id == venue_id)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
