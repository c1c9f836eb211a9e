"""What every page module shares: the app's context (store, time zone, vault, clock), the Jinja
environment with its formatting helpers, and small request helpers.

The page modules (overview, venue, casepages, readiness, live) read the store through plain
functions that return dicts, render them through the one environment here, and serve the same
dicts as JSON under ``/api/v1``: a page and its API never disagree.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from collector.config import NotifySection
from collector.store import Store
from collector.web.strings import t

TEMPLATES = Path(__file__).parent / "templates"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class WebContext:
    """What the routes need besides the request; kept in ``app.state.ctx``.

    ``clock`` is replaceable so tests can pin "today" (overview, timelines) to their exam days.
    """

    store: Store
    tz: str
    vault_roots: dict[str, Path]  # by vault id: this collector's and the cluster's others
    notify: NotifySection | None = None
    clock: Callable[[], float] = field(default=time.time)
    live_seconds: float = 60.0  # one live stream's lifetime; the browser reconnects (and re-authenticates)
    live_interval: float = 2.0  # how often a live stream looks for changes

    def now(self) -> float:
        return self.clock()


def ctx(request: Request) -> WebContext:
    """Dependency: the app's context."""
    return request.app.state.ctx


def make_templates() -> Jinja2Templates:
    """The pages' Jinja environment with the formatting helpers (``auth.install`` adds csrf_token)."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(t=t, summary=summary, kind_text=kind_text, case_label=case_label,
                                 as_json=as_json)
    return templates


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """Render template ``name`` with ``context`` plus the user and the time formatters of the app's zone."""
    c: WebContext = request.app.state.ctx
    templates: Jinja2Templates = request.app.state.templates
    full = {"me": request.state.user, "tz": c.tz, "when": lambda ts: when(ts, c.tz), "hm": lambda ts: hm(ts, c.tz),
            **context}
    return templates.TemplateResponse(request, name, full, status_code=status)


# -- formatting ----------------------------------------------------------------------------------

def when(ts: float | None, tz: str = "Asia/Shanghai", fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A timestamp in the schedule's time zone, as staff read it."""
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime(fmt)


def hm(ts: float | None, tz: str = "Asia/Shanghai") -> str:
    """Hours and minutes only (exam windows, timelines)."""
    return when(ts, tz, "%H:%M")


def kind_text(kind: str) -> str:
    """An event kind's Chinese name, else the kind itself."""
    return t(f"kind.{kind}", default=kind)


def case_label(group: str, value: str) -> str:
    """违规 / 持续中 / 待处理 …: severity, state and status words of the catalogue."""
    return t(f"{group}.{value}", default=value)


def as_json(data: Any) -> str:
    """An event's data as readable JSON (shown under "原始数据")."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1, default=str)


def summary(kind: str, data: dict[str, Any]) -> str:
    """An event's data as staff read it: the kind's sentence from the catalogue, else short JSON."""
    fields = {k: "、".join(map(str, v)) if isinstance(v, list) else v for k, v in (data or {}).items()}
    try:
        text = t(f"summary.{kind}", default="", **fields)
    except (KeyError, IndexError):
        text = ""  # the catalogue names a field this event lacks: show the raw data instead
    if not text:
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "…"


# -- request helpers -----------------------------------------------------------------------------

def parse_day(text: str | None, what: str = "day") -> dt.date | None:
    """``YYYY-MM-DD`` from a filter field; empty is None, anything else a 400 in Chinese."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise HTTPException(400, t("ui_bad_date", value=text)) from exc


def day_start(day: dt.date, tz: str) -> float:
    """Local midnight of ``day`` as a timestamp."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp()
