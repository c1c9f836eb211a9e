"""Live updates without reloading: ``/api/v1/live`` is a server-sent-event stream of changed page
fragments.

How it works: the stream looks at a cheap *signature* of what the page shows every
``live_interval`` seconds (a few aggregate queries: offline agents, counts and version sums of
cases, readiness rounds and reports, schedule imports — never the page's full queries). Only when
the signature moved does it render the page's fragments again (the same Jinja macros the page
itself uses) and send each one whose HTML differs from what this stream sent before, as
``event: fragment`` with ``{"id": <element id>, "html": …}``. ``static/live.js`` swaps them in.

A stream lives ``live_seconds`` (a minute) and then ends; the browser reconnects at once. Each
connection passes the session middleware again, so a logout, a disabled user or an idle timeout
ends the live page within a minute. The script sends ``X-VG-Poll: 1``, so the stream itself does
not count as use of the session (auth.py). On connecting, every fragment is sent once, so nothing
that changed between the page load and the connection is missed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from collector import readiness as rd
from collector.store import Store, schema
from collector.web import auth, overview, venue
from collector.web.auth import User
from collector.web.render import WebContext, ctx, hm, when
from collector.web.strings import t

PING_SECONDS = 15.0  # a comment line now and then keeps proxies from closing a quiet stream
OVERVIEW_PARTS = ("counts", "grid", "exams", "violations", "offline", "readiness", "dead_letters")
VENUE_PARTS = ("agents", "cases", "events")

router = APIRouter()


# -- signatures ----------------------------------------------------------------------------------

def signature(store: Store, scope: str | None, day: str, venue_page: bool = False) -> tuple[Any, ...]:
    """A value that changes whenever something the overview (or a venue page) of ``scope`` shows
    changes, from a few aggregates on indexed columns: the open cases (the venue page: all of the
    venue's), the newest readiness round and report, the agents online, the newest schedule
    import and venue, the newest refused message (and for a venue page its newest record)."""
    a, c, r, v = schema.agents.c, schema.cases.c, schema.readiness_rounds.c, schema.venue_reports.c
    cases_q = sa.select(sa.func.count(), sa.func.max(c.id), sa.func.sum(c.version)).select_from(schema.cases)
    queries: list[Any] = [
        cases_q if venue_page else cases_q.where(c.state == "open"),
        sa.select(sa.func.max(r.id)), sa.select(sa.func.max(v.id)),
        sa.select(sa.func.count(), sa.func.sum(sa.case((a.online.is_(True), 1), else_=0))).where(a.revoked.is_(False)),
        sa.select(a.id).where(a.revoked.is_(False), a.online.is_(False)).order_by(a.id),
    ]
    if scope is not None:
        queries = [q.where(col == scope) for q, col in zip(queries, (c.venue_id, r.venue_id, v.venue_id, a.venue_id,
                                                                     a.venue_id))]
    queries += [sa.select(sa.func.max(schema.schedule_versions.c.id)), sa.select(sa.func.max(schema.venues.c.created_at)),
                sa.select(sa.func.max(schema.dead_letters.c.id))]
    if venue_page and scope is not None:
        rec = schema.records.c
        queries.append(sa.select(sa.func.max(rec.at)).where(rec.venue_id == scope))
    with store.engine.connect() as conn:
        return (day, *(tuple(tuple(row) for row in conn.execute(q)) for q in queries))


# -- fragments -----------------------------------------------------------------------------------

def _module(request: Request, name: str, user: User) -> Any:
    """The page's macro template as a module, with the page's helpers in its context."""
    c: WebContext = request.app.state.ctx
    env = request.app.state.templates.env
    return env.get_template(name).make_module({"me": user, "when": lambda ts: when(ts, c.tz),
                                               "hm": lambda ts: hm(ts, c.tz), "request": request})


def overview_fragments(request: Request, c: WebContext, user: User) -> dict[str, str]:
    """Each overview section's inner HTML, keyed by its element id."""
    data = overview.data_for(c, user)
    parts = _module(request, "overview_parts.html", user)
    shown = [p for p in OVERVIEW_PARTS if p != "dead_letters" or user.role != "venue"]  # as the page shows them
    return {f"ov-{p}": str(getattr(parts, p)(data)) for p in shown}


def venue_fragments(request: Request, c: WebContext, user: User, venue_id: str) -> dict[str, str]:
    """The venue page's agents, cases and events sections."""
    data = venue.view_for(c, user, venue_id)
    parts = _module(request, "venue_parts.html", user)
    return {f"vn-{p}": str(getattr(parts, p)(data)) for p in VENUE_PARTS}


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(request: Request, c: WebContext, sign: Callable[[], tuple[Any, ...]],
                 render: Callable[[], dict[str, str]]) -> AsyncIterator[str]:
    """Fragments whose HTML changed, for ``c.live_seconds``; store work runs in the thread pool."""
    yield "retry: 2000\n\n"
    ends, pinged = time.monotonic() + c.live_seconds, time.monotonic()
    sent: dict[str, str] = {}
    last: tuple[Any, ...] | None = None
    while time.monotonic() < ends and not await request.is_disconnected():
        current = await run_in_threadpool(sign)
        if current != last:
            for element, html in (await run_in_threadpool(render)).items():
                if sent.get(element) != html:
                    sent[element] = html
                    yield sse("fragment", {"id": element, "html": html})
            last, pinged = current, time.monotonic()
        elif time.monotonic() - pinged >= PING_SECONDS:
            pinged = time.monotonic()
            yield ": ping\n\n"
        await asyncio.sleep(c.live_interval)
    yield sse("bye", {})


@router.get("/api/v1/live", tags=["实时更新"], summary="Server-sent events: changed fragments of a page",
            description="`page=overview` (总览) or `page=venue&venue=<id>` (考点详情). Each `fragment` event carries "
                        "`{id, html}`: the new inner HTML of the element with that id. The stream ends after about a "
                        "minute (event `bye`); reconnect. Send `X-VG-Poll: 1` so it does not keep the session awake.",
            response_class=StreamingResponse)
async def live(request: Request, page: str = Query("overview", pattern="^(overview|venue)$"),
               venue_id: str | None = Query(None, alias="venue"), user: User = Depends(auth.current_user),
               c: WebContext = Depends(ctx)) -> StreamingResponse:
    scope = auth.venue_filter(user)
    if page == "venue":
        if not venue_id:
            raise HTTPException(400, t("ui_bad_filter", value="venue"))
        auth.check_venue(user, venue_id)
        scope = venue_id

    def sign() -> tuple[Any, ...]:
        return signature(c.store, scope, rd.local_day(c.now(), c.tz), venue_page=page == "venue")

    def render() -> dict[str, str]:
        if page == "venue":
            return venue_fragments(request, c, user, venue_id or "")
        return overview_fragments(request, c, user)

    return StreamingResponse(stream(request, c, sign, render), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
