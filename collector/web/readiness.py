"""Readiness pages and exports: the authority's table of all venues for an exam day, a venue's
printable A4 report (Chinese), and the same report as XLSX.

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

from jinja2 import Environment, FileSystemLoader, select_autoescape

from collector import readiness as rd
from collector import readiness_store as rs
from collector.store import Store
from collector.web.strings import t

TEMPLATES = Path(__file__).parent / "templates"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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


def render_overview(rows: list[dict[str, Any]], day: str, tz: str) -> str:
    """The authority's table of every venue with exams on ``day``."""
    return _ENV.get_template("readiness.html").render(
        rows=rows, day=day, prev_day=rd.next_day(day, -1), next_day=rd.next_day(day),
        when=lambda ts: when(ts, tz), generated=when(time.time(), tz))


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


def add_routes(app: Any, store: Store, tz: str) -> None:
    """``/readiness``, ``/readiness/<venue>/<day>`` and ``/readiness/<venue>/<day>.xlsx``."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, Response

    def checked_day(day: str | None) -> str:
        try:
            return rd.parse_day(day) if day else default_day(tz)
        except ValueError as exc:
            raise HTTPException(400, t("readiness_bad_day", day=day)) from exc

    def view_of(venue_id: str, day: str) -> dict[str, Any]:
        try:
            return rs.venue_day(store, venue_id, checked_day(day), tz)
        except rs.ReadinessError as exc:
            raise HTTPException(404, t("readiness_unknown_venue", venue=venue_id)) from exc

    # The .xlsx route first: "{day}" alone would also match "2026-12-05.xlsx".
    @app.get("/readiness/{venue_id}/{day}.xlsx")
    def readiness_xlsx(venue_id: str, day: str) -> Response:
        """The venue's report of the day as XLSX."""
        view = view_of(venue_id, day)
        name = f"readiness-{venue_id}-{view['day']}.xlsx"
        return Response(day_xlsx(view, tz), media_type=XLSX_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/readiness/{venue_id}/{day}", response_class=HTMLResponse)
    def readiness_day(venue_id: str, day: str) -> HTMLResponse:
        """The venue's printable A4 report of the day."""
        return HTMLResponse(render_day(view_of(venue_id, day), tz))

    @app.get("/readiness", response_class=HTMLResponse)
    def readiness_overview(day: str | None = None) -> HTMLResponse:
        """Every venue with exams on ``day`` (default tomorrow): rounds, result, failed items, seal."""
        d = checked_day(day)
        return HTMLResponse(render_overview(rs.day_overview(store, d, tz), d, tz))
