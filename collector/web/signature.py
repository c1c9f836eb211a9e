"""A cheap probe of what 总览 (or a venue page) shows: a value that changes whenever the page would.

The live stream (:mod:`.live`) polls it to know when to render again, and the overview's cache
(:mod:`.overview`) checks it on every request. So it must cost far less than the page: it is one
statement of aggregates on indexed columns (one round trip to the database), built once per shape
and reused with the venue as a bound parameter.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from collector.store import Store, schema

OFFLINE_SEP = "\n"  # between offline agent ids in the aggregate (protocol.topics.AGENT_ID_RE excludes it)
OFFLINE_COLUMN = 7  # where that aggregate is in the statement


def signature(store: Store, scope: str | None, day: str, venue_page: bool = False) -> tuple[Any, ...]:
    """A value that changes whenever something the overview (or a venue page) of ``scope`` shows
    changes: the open cases (the venue page: all of the venue's) by count, newest id and version
    sum; the newest readiness round and report; the agents and those online; which agents are
    offline; the newest schedule import, venue and refused message; for a venue page its newest
    record. ``day`` is part of it, so the page moves at midnight."""
    stmt = _statement(scope is not None, venue_page and scope is not None)
    with store.engine.connect() as conn:
        row = conn.execute(stmt, {"scope": scope} if scope is not None else {}).one()
    values = list(row)
    offline = values[OFFLINE_COLUMN]
    values[OFFLINE_COLUMN] = tuple(sorted(offline.split(OFFLINE_SEP))) if offline else ()  # the aggregate's order is not defined
    return (day, *values)



@lru_cache(maxsize=4)
def _statement(scoped: bool, venue_page: bool) -> sa.Select[Any]:
    """The probe as one SELECT of scalar subqueries; ``:scope`` is the venue when ``scoped``."""
    a, c, r, v = schema.agents.c, schema.cases.c, schema.readiness_rounds.c, schema.venue_reports.c
    scope = sa.bindparam("scope", type_=sa.String)

    def only(q: sa.Select[Any], venue_col: Any) -> Any:
        return (q.where(venue_col == scope) if scoped else q).scalar_subquery()

    case_filter = [] if venue_page else [c.state == "open"]
    agents = [a.revoked.is_(False)]
    columns = [
        only(sa.select(sa.func.count()).select_from(schema.cases).where(*case_filter), c.venue_id),
        only(sa.select(sa.func.max(c.id)).where(*case_filter), c.venue_id),
        only(sa.select(sa.func.sum(c.version)).where(*case_filter), c.venue_id),
        only(sa.select(sa.func.max(r.id)), r.venue_id),
        only(sa.select(sa.func.max(v.id)), v.venue_id),
        only(sa.select(sa.func.count()).select_from(schema.agents).where(*agents), a.venue_id),
        only(sa.select(sa.func.count()).select_from(schema.agents).where(*agents, a.online.is_(True)), a.venue_id),
        only(sa.select(sa.func.aggregate_strings(a.id, OFFLINE_SEP)).where(*agents, a.online.is_(False)), a.venue_id),
        sa.select(sa.func.max(schema.schedule_versions.c.id)).scalar_subquery(),
        sa.select(sa.func.max(schema.venues.c.created_at)).scalar_subquery(),
        sa.select(sa.func.max(schema.dead_letters.c.id)).scalar_subquery(),
    ]
    if venue_page:
        rec = schema.records.c
        columns.append(sa.select(sa.func.max(rec.at)).where(rec.venue_id == scope).scalar_subquery())
    return sa.select(*columns)
