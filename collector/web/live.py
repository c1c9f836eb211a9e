"""Live updates without reloading: ``/api/v1/live`` is a server-sent-event stream of changed page
fragments.

How it works: the stream looks at a cheap *signature* of what the page shows (:mod:`.signature`) every
``live_interval`` seconds (a few aggregate queries: offline agents, counts and version sums of
cases, readiness rounds and reports, schedule imports — never the page's full queries). Only when
the signature moved does it take the page's fragments again (the same Jinja macros the page itself
uses; for 总览 from the overview's cache, shared with the page and every other stream) and send each one whose HTML differs from what this stream sent before, as
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

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from collector import readiness as rd
from collector.web import auth, overview, venue
from collector.web.auth import User
from collector.web.fragments import render_parts
from collector.web.render import WebContext, ctx
from collector.web.signature import signature
from collector.web.strings import t

PING_SECONDS = 15.0  # a comment line now and then keeps proxies from closing a quiet stream
VENUE_PARTS = ("agents", "cases", "events")

router = APIRouter()


# -- fragments -----------------------------------------------------------------------------------

def overview_fragments(request: Request, c: WebContext, user: User, sig: tuple[Any, ...] | None = None) -> dict[str, str]:
    """Each overview section's inner HTML, keyed by its element id: the overview's cached build for
    ``sig`` (the stream's latest signature), shared with the page and every other stream."""
    return dict(overview.snapshot(request, c, user, sig).fragments)


def venue_fragments(request: Request, c: WebContext, user: User, venue_id: str) -> dict[str, str]:
    """The venue page's agents, cases and events sections."""
    data = venue.view_for(c, user, venue_id)
    return dict(render_parts(request, "venue_parts.html", user, data, list(VENUE_PARTS), "vn-"))


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(request: Request, c: WebContext, sign: Callable[[], tuple[Any, ...]],
                 render: Callable[[tuple[Any, ...]], dict[str, str]]) -> AsyncIterator[str]:
    """Fragments whose HTML changed, for ``c.live_seconds``; store work runs in the thread pool."""
    yield "retry: 2000\n\n"
    ends, pinged = time.monotonic() + c.live_seconds, time.monotonic()
    sent: dict[str, str] = {}
    last: tuple[Any, ...] | None = None
    while time.monotonic() < ends and not await request.is_disconnected():
        current = await run_in_threadpool(sign)
        if current != last:
            for element, html in (await run_in_threadpool(render, current)).items():
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

    def render(sig: tuple[Any, ...]) -> dict[str, str]:
        if page == "venue":
            return venue_fragments(request, c, user, venue_id or "")
        return overview_fragments(request, c, user, sig)

    return StreamingResponse(stream(request, c, sign, render), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
