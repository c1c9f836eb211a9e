"""The minimal page and its JSON API: venues, agents and the latest events.

Later issues build the real dashboards on this; the page reads only the store.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from collector.cases import cases as case_rows
from collector.store import Store
from collector.web import readiness as readiness_routes
from collector.web.strings import t

REFRESH_SECONDS = 5
_CN = dt.timezone(dt.timedelta(hours=8), "CST")


def overview(store: Store, limit: int = 50) -> dict[str, Any]:
    """The page's data: venues with their agents, latest events, cases, dead-letter counts."""
    agents = store.agents()
    venue_rows = store.venues()
    venues = [
        {"id": v["id"], "name": v["name"], "agents": [
            {"id": a.id, "online": a.online, "seen": a.last_seen is not None, "last_heartbeat": a.last_heartbeat,
             "outbox_depth": a.outbox_depth, "clock_offset": a.clock_offset, "acked_seq": a.acked_seq}
            for a in agents if a.venue_id == v["id"]]}
        for v in venue_rows
    ]
    names = {v["id"]: v["name"] for v in venue_rows}
    events = [
        {"agent_id": r["agent_id"], "venue_id": r["venue_id"], "venue_name": names.get(r["venue_id"], r["venue_id"]), "seq": r["seq"], "kind": r["kind"], "at": r["at"],
         "received_at": r["received_at"], "data": r["data"]}
        for r in store.latest_records(limit, exclude_stream="log")
    ]
    open_first = sorted(case_rows(store, limit=limit), key=lambda c: (c["state"] != "open", -c["opened_at"]))
    return {"generated_at": time.time(), "venues": venues, "events": events, "dead_letters": store.dead_letter_counts(),
            "cases": [{**c, "venue_name": names.get(c["venue_id"], c["venue_id"])} for c in open_first]}


def create_app(store: Store, tz: str = "Asia/Shanghai") -> FastAPI:
    """The FastAPI application over ``store``; ``tz`` is the [schedule] time zone (exam days)."""
    app = FastAPI(title="VenueGuard collector", version="0.1.0")
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.globals.update(t=t, when=_when, summary=_summary, refresh=REFRESH_SECONDS)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        """总览: venues, agents, latest events; reloads itself."""
        return templates.TemplateResponse(request, "index.html", overview(store))

    @app.get("/api/v1/overview")
    def api_overview(limit: int = 50) -> dict[str, Any]:
        """The data of the page, as JSON."""
        return overview(store, min(max(limit, 1), 500))

    readiness_routes.add_routes(app, store, tz)  # /readiness, /readiness/<venue>/<day>[.xlsx]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness for service managers."""
        return {"status": "ok"}

    return app


def _when(ts: float | None) -> str:
    """A timestamp in China Standard Time, as staff read it."""
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, _CN).strftime("%Y-%m-%d %H:%M:%S")


def _summary(kind: str, data: dict[str, Any]) -> str:
    """An event's data as staff read it: the kind's sentence from the catalogue, else short JSON."""
    fields = {k: "、".join(map(str, v)) if isinstance(v, list) else v for k, v in data.items()}
    try:
        text = t(f"summary.{kind}", default="", **fields)
    except (KeyError, IndexError):
        text = ""  # the catalogue names a field this event lacks: show the raw data instead
    if not text:
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "…"
