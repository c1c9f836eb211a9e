"""考前检查: the table of all venues for an exam day, a venue's printable A4 report (Chinese), the
same report as XLSX, the form to ask for a check now, and their JSON under ``/api/v1/readiness``.

The CLI (`readiness report --html/--xlsx`) and the pages render through the same functions here,
from :func:`collector.readiness_store.venue_day`, so a printed report and a downloaded one never
disagree. Text comes from the pages' catalogue (keys ``readiness_*`` and ``seal_*``).
"""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from collector import readiness as rd
from collector import readiness_store as rs
from collector.web import auth
from collector.web.auth import User
from collector.web.render import XLSX_TYPE, WebContext, ctx, page
from collector.web.strings import t

TEMPLATES = Path(__file__).parent / "templates"


def when(ts: float | None, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A timestamp in the schedule's time zone, as staff read it."""
    return "—" if ts is None else dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime(fmt)


def result_text(result: str) -> str:
    """通过 / 不通过 / 无报告 / 进行中 / 无法检查 …"""
    return t(f"readiness_result_{result}", default=result)


def item_text(item: str) -> str:
    """The Chinese name of a readiness item."""
    return t(f"readiness_item_{item}", default=item)


def change_text(change: dict[str, Any]) -> str:
    """One seal change as a sentence (e.g. 新增设备 02:…（192.0.2.90）)."""
    return rd.describe_change(change, t)


def requester(by: str) -> str:
    """Who asked for a round, as shown."""
    return t("readiness_by_schedule") if by == rd.SCHEDULE else by


def item_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per item and agent of a venue report, with the Chinese texts, for page and XLSX."""
    if report is None:
        return []
    fixed = set(report.get("fixed") or [])
    rows = []
    for item in report["items"]:
        per = item["agents"] or [{"agent_id": "—", "result": "no_report", "seen": "", "fix": ""}]
        for k, a in enumerate(per):
            seen, fix = a.get("seen", ""), a.get("fix", "")
            if a["result"] == "no_report":
                seen, fix = t("readiness_no_report_seen"), t("readiness_no_report_fix")
            elif a.get("missing"):
                seen = t("readiness_missing_item")
            rows.append({"item": item["item"], "label": item_text(item["item"]), "item_result": item["result"],
                         "agent_id": a["agent_id"], "result": a["result"], "seen": seen, "fix": fix,
                         "fixed": item["item"] in fixed, "first": k == 0, "span": len(per)})
    return rows


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.globals.update(t=t, result_text=result_text, item_text=item_text, change_text=change_text,
                       requester=requester, item_rows=item_rows)
    return env


_ENV = _environment()


def render_day(view: dict[str, Any], tz: str) -> str:
    """A venue's printable A4 readiness report for one exam day (Chinese)."""
    return _ENV.get_template("readiness_day.html").render(
        v=view, when=lambda ts: when(ts, tz), hm=lambda ts: when(ts, tz, "%H:%M"), generated=when(time.time(), tz))


def day_xlsx(view: dict[str, Any], tz: str) -> bytes:
    """The same report as an Excel workbook: the latest result per item and agent, the sessions,
    the seal and its changes, and every report of the day."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = t("readiness_sheet_items")
    latest = view["latest"]
    ws.append([t("readiness_day_title")])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append([t("readiness_venue_label"), f"{view['venue']['name']}（{view['venue']['id']}）"])
    ws.append([t("readiness_day_label"), view["day"]])
    ws.append([t("readiness_col_result"), result_text(view["status"])])
    ws.append([t("readiness_completed"), when(latest["completed_at"], tz) if latest else "—"])
    ws.append([])
    header = ["item", "item_result", "agent", "result", "seen", "fix", "fixed"]
    ws.append([t(f"readiness_col_{h}") for h in header])
    for row in item_rows(latest):
        ws.append([row["label"], result_text(row["item_result"]), row["agent_id"], result_text(row["result"]),
                   row["seen"], row["fix"] if row["result"] != "pass" else None,
                   t("readiness_fixed") if row["fixed"] else None])
    _sessions_sheet(wb.create_sheet(t("readiness_sheet_sessions")), view, tz)
    _seal_sheet(wb.create_sheet(t("readiness_sheet_seal")), view, tz)
    _history_sheet(wb.create_sheet(t("readiness_sheet_history")), view, tz)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _sessions_sheet(ws: Any, view: dict[str, Any], tz: str) -> None:
    ws.append([t(f"readiness_col_{h}") for h in ("room", "subject", "start", "end", "session_id")])
    for s in view["sessions"]:
        ws.append([s.room, s.subject, when(s.start, tz), when(s.end, tz), s.session_id])


def _seal_sheet(ws: Any, view: dict[str, Any], tz: str) -> None:
    ws.append([t(f"readiness_col_{h}") for h in ("seal", "sealed_at", "until", "report", "change")])
    for seal in view["seals"]:
        changes = [change_text(c) for c in seal["changes"]] or [t("seal_no_changes")]
        for text in changes:
            ws.append([seal["id"], when(seal["sealed_at"], tz), when(seal["until"], tz), seal["report_id"], text])


def _history_sheet(ws: Any, view: dict[str, Any], tz: str) -> None:
    ws.append([t(f"readiness_col_{h}") for h in ("round", "requested_by", "requested_at", "completed", "result",
                                                 "failed", "fixed")])
    for rnd in view["rounds"]:
        rep = rnd["report"]
        ws.append([rnd["id"], requester(rnd["requested_by"]), when(rnd["requested_at"], tz),
                   when(rep["completed_at"], tz) if rep else "—", result_text(rep["result"] if rep else "pending"),
                   "、".join(item_text(i) for i in rd.failed_items(rep["items"])) if rep else "",
                   "、".join(item_text(i) for i in rep["fixed"]) if rep else ""])


def default_day(tz: str, now: float | None = None) -> str:
    """Tomorrow in the schedule's time zone: the day the readiness check prepares for."""
    return rd.next_day(rd.local_day(time.time() if now is None else now, tz))


def page_helpers() -> dict[str, Any]:
    """The names the readiness templates use, for the pages' environment."""
    return {"result_text": result_text, "item_text": item_text, "change_text": change_text, "requester": requester,
            "item_rows": item_rows}


def json_view(view: dict[str, Any]) -> dict[str, Any]:
    """A :func:`collector.readiness_store.venue_day` view as JSON (sessions are dataclasses there)."""
    from dataclasses import asdict

    return {**view, "sessions": [asdict(s) for s in view["sessions"]]}


# -- routes --------------------------------------------------------------------------------------
# Who may do what: everybody reads (a venue operator only its venue: another venue is 404, and
# the table lists only its row); the venue's operator and the admin may ask for a check now
# (`readiness run`); the authority's viewer reads only.

RUN_ROLES = ("admin", "venue")
router = APIRouter()


def _day(day: str | None, c: WebContext) -> str:
    try:
        return rd.parse_day(day) if day else default_day(c.tz, c.now())
    except ValueError as exc:
        raise HTTPException(400, t("readiness_bad_day", day=day)) from exc


def _view(c: WebContext, user: User, venue_id: str, day: str) -> dict[str, Any]:
    auth.check_venue(user, venue_id)
    try:
        return rs.venue_day(c.store, venue_id, _day(day, c), c.tz)
    except rs.ReadinessError as exc:
        raise HTTPException(404, t("readiness_unknown_venue", venue=venue_id)) from exc


def _rows(c: WebContext, user: User, day: str) -> list[dict[str, Any]]:
    return rs.day_overview(c.store, day, c.tz, venue_id=auth.venue_filter(user))


def may_run(user: User, venue_id: str) -> bool:
    """Whether ``user`` may ask ``venue_id``'s agents for a check now."""
    return user.role in RUN_ROLES and (user.role != "venue" or user.venue_id == venue_id)


def request_check(request: Request, c: WebContext, user: User, venue_id: str, day: str) -> dict[str, Any]:
    """Record a round for (venue, day) as ``readiness run`` does; the running collector sends it.
    Refusals: 404 another venue's, 403 a role that may not; each request is audited."""
    auth.check_venue(user, venue_id)
    d = _day(day, c)
    if not may_run(user, venue_id):
        auth.audit(request, "readiness.run", f"{venue_id} {d}", "role may not", ok=False)
        raise auth.Forbidden()
    try:
        round_id = rs.request_round(c.store, venue_id, d, user.username, c.now())
    except rs.ReadinessError as exc:
        raise HTTPException(404, t("readiness_unknown_venue", venue=venue_id)) from exc
    auth.audit(request, "readiness.run", f"{venue_id} {d}", f"round {round_id}")
    return {"round_id": round_id, "venue_id": venue_id, "day": d, "state": rs.REQUESTED}


@router.get("/readiness/{venue_id}/{day}.xlsx", tags=["考前检查"], summary="A venue's readiness report of a day as XLSX")
def readiness_xlsx(venue_id: str, day: str, user: User = Depends(auth.current_user),
                   c: WebContext = Depends(ctx)) -> Response:
    """The venue's report of the day as XLSX (declared before the page: "{day}" would match "….xlsx")."""
    view = _view(c, user, venue_id, day)
    name = f"readiness-{venue_id}-{view['day']}.xlsx"
    return Response(day_xlsx(view, c.tz), media_type=XLSX_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/readiness/{venue_id}/{day}", response_class=HTMLResponse, include_in_schema=False)
def readiness_day(venue_id: str, day: str, request: Request, requested: int | None = None,
                  user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> HTMLResponse:
    """The venue's printable A4 report of the day, with the request-a-check form when allowed."""
    view = _view(c, user, venue_id, day)
    return page(request, "readiness_day_page.html", {
        "v": view, "may_run": may_run(user, venue_id), "requested": requested, "generated": when(c.now(), c.tz),
        **page_helpers()})


@router.post("/readiness/{venue_id}/{day}/run", include_in_schema=False, dependencies=[Depends(auth.csrf_protect)])
def readiness_run_form(venue_id: str, day: str, request: Request, user: User = Depends(auth.current_user),
                       c: WebContext = Depends(ctx)) -> Response:
    """The form's request for a check; back to the report, which shows the round as 进行中."""
    done = request_check(request, c, user, venue_id, day)
    return RedirectResponse(f"/readiness/{venue_id}/{done['day']}?requested={done['round_id']}", status_code=303)


@router.get("/readiness", response_class=HTMLResponse, include_in_schema=False)
def readiness_overview(request: Request, day: str | None = None, user: User = Depends(auth.current_user),
                       c: WebContext = Depends(ctx)) -> HTMLResponse:
    """Every venue (the operator: its own) with exams on ``day`` (default tomorrow): rounds, result, seal."""
    d = _day(day, c)
    return page(request, "readiness.html", {
        "rows": _rows(c, user, d), "day": d, "prev_day": rd.next_day(d, -1), "next_day": rd.next_day(d),
        "generated": when(c.now(), c.tz), "own_venue": user.venue_id if user.role == "venue" else None,
        **page_helpers()})


@router.get("/api/v1/readiness", tags=["考前检查"], summary="Readiness of every venue for an exam day",
            description="One row per venue with exams on `day` (default tomorrow in the [schedule] time zone) or a "
                        "round for it: sessions, rounds, status (pass / fail / no_report / pending / none), failed "
                        "items, silent agents, seal. A venue operator gets only its venue.")
def readiness_api(day: str | None = Query(None, description="YYYY-MM-DD"), user: User = Depends(auth.current_user),
                  c: WebContext = Depends(ctx)) -> dict[str, Any]:
    d = _day(day, c)
    return {"day": d, "venues": _rows(c, user, d)}


@router.get("/api/v1/readiness/{venue_id}/{day}", tags=["考前检查"], summary="A venue's readiness for an exam day",
            description="Sessions, every round with its report (items per agent), the seals and the status; 404 for "
                        "another venue's (venue operators).")
def readiness_day_api(venue_id: str, day: str, user: User = Depends(auth.current_user),
                      c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return json_view(_view(c, user, venue_id, day))


@router.post("/api/v1/readiness/{venue_id}/{day}/run", tags=["考前检查"], summary="Ask a venue's agents for a check now",
             description="Records a round as `venueguard-collector readiness run` does; the running collector sends the "
                         "signed command within seconds. The venue's operator or an admin; X-CSRF-Token required.",
             dependencies=[Depends(auth.csrf_protect)])
def readiness_run_api(venue_id: str, day: str, request: Request, user: User = Depends(auth.current_user),
                      c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return request_check(request, c, user, venue_id, day)
