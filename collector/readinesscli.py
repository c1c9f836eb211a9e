"""``venueguard-collector readiness run|show|report``: the day-before readiness check for the
authority's operators.

``run`` only writes a requested round: the running collector (the one process that publishes and
writes the vault) sends it within seconds, as with case actions. ``show`` is the table of all
venues with exams on a day; ``report`` one venue's report, also as the printable page (--html)
and XLSX (--xlsx) the pages serve. Messages come from ``collector/strings`` (``readiness_*``,
``seal_*``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from collector import config
from collector import readiness as rd
from collector.strings import t


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``readiness run|show|report``."""
    p = sub.add_parser("readiness", help="the day-before readiness check (考前准备检查) and seal: run, show, report")
    rsub = p.add_subparsers(dest="readiness_command", required=True)
    run = rsub.add_parser("run", help="ask every agent of a venue to run the check now (the running collector sends it)")
    run.add_argument("--venue", required=True, help="venue id (考点编号)")
    run.add_argument("--day", default=None, help="the exam day prepared for, YYYY-MM-DD (default: tomorrow)")
    run.add_argument("--by", default=None, help="who asks (default: the OS user)")
    show = rsub.add_parser("show", help="all venues with exams on a day: rounds, result, failed items, seal")
    show.add_argument("--day", default=None, help="YYYY-MM-DD (default: tomorrow)")
    rep = rsub.add_parser("report", help="one venue's readiness report of a day; --html / --xlsx write it out")
    rep.add_argument("venue", help="venue id (考点编号)")
    rep.add_argument("--day", default=None, help="YYYY-MM-DD (default: tomorrow)")
    rep.add_argument("--html", type=Path, default=None, help="write the printable A4 page (Chinese) here")
    rep.add_argument("--xlsx", type=Path, default=None, help="write the Excel workbook here")


def handler(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Run ``readiness <command>``; a bad day is reported in Chinese, not a traceback."""
    from collector.runtime import open_store

    tz = cfg.schedule.timezone
    try:
        day = rd.parse_day(args.day) if args.day else rd.next_day(rd.local_day(time.time(), tz))
    except ValueError:
        print(t("readiness_bad_day", day=args.day), file=sys.stderr)
        return 2
    store = open_store(cfg)
    try:
        command = {"run": _run, "show": _show, "report": _report}[args.readiness_command]
        return command(store, cfg, args, day)
    finally:
        store.close()


def _when(ts: float | None, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "—" if ts is None else dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime(fmt)


def _result(result: str) -> str:
    return t(f"readiness_result_{result}", default=result)


def _items(items: list[str]) -> str:
    return "、".join(t(f"readiness_item_{i}", default=i) for i in items)


def _run(store: Any, cfg: config.CollectorConfig, args: argparse.Namespace, day: str) -> int:
    from collector import readiness_store as rs

    by = args.by or getpass.getuser()
    try:
        round_id = rs.request_round(store, args.venue, day, by, time.time())
    except rs.ReadinessError as exc:
        print(t("readiness_refused", detail=exc), file=sys.stderr)
        return 1
    agents = rs.venue_agents(store, args.venue)
    print(t("readiness_requested", venue=args.venue, day=day, id=round_id, by=by, agents=len(agents),
            minutes=f"{cfg.readiness.deadline_minutes:g}"))
    if not agents:
        print(t("readiness_no_agents_warning", venue=args.venue))
    if not rs.sessions_of_day(store, args.venue, day, cfg.schedule.timezone):
        print(t("readiness_no_sessions_warning", venue=args.venue, day=day))
    return 0


def _show(store: Any, cfg: config.CollectorConfig, _args: argparse.Namespace, day: str) -> int:
    from collector import readiness_store as rs

    tz = cfg.schedule.timezone
    rows = rs.day_overview(store, day, tz)
    if not rows:
        print(t("readiness_none_day", day=day))
        return 0
    table = Table(title=t("readiness_show_title", day=day, count=len(rows)))
    for key in ("venue", "sessions", "rounds", "result", "failed", "sealed_at"):
        table.add_column(t(f"readiness_col_{key}"))
    for r in rows:
        failed = _items(r["failed"])
        if r["silent"]:
            failed = "；".join(x for x in (failed, t("readiness_silent", agents="、".join(r["silent"]))) if x)
        table.add_row(f"{r['venue_name']}（{r['venue_id']}）", str(r["sessions"]), str(r["rounds"]), _result(r["status"]),
                      failed or "—", _when(r["sealed_at"], tz))
    Console(width=160).print(table)
    return 0


def _report(store: Any, cfg: config.CollectorConfig, args: argparse.Namespace, day: str) -> int:
    from collector import readiness_store as rs

    tz = cfg.schedule.timezone
    try:
        view = rs.venue_day(store, args.venue, day, tz)
    except rs.ReadinessError as exc:
        print(t("readiness_refused", detail=exc), file=sys.stderr)
        return 1
    console = Console(width=160)
    console.print(t("readiness_report_header", venue=view["venue"]["id"], name=view["venue"]["name"], day=day,
                    result=_result(view["status"])), highlight=False)
    sessions = "；".join(f"{s.room} {s.subject} {_when(s.start, tz, '%H:%M')}–{_when(s.end, tz, '%H:%M')}"
                        for s in view["sessions"]) or "—"
    console.print(t("readiness_sessions_line", sessions=sessions), highlight=False)
    for n, rnd in enumerate(view["rounds"], 1):
        rep = rnd["report"]
        by = t("readiness_by_schedule") if rnd["requested_by"] == rd.SCHEDULE else rnd["requested_by"]
        console.print(t("readiness_report_round", n=n, id=rnd["id"], by=by, requested=_when(rnd["requested_at"], tz),
                        completed=_when(rep["completed_at"], tz) if rep else "—",
                        result=_result(rep["result"] if rep else "pending")), highlight=False)
        if rep and rep["fixed"]:
            console.print("  " + t("readiness_fixed_line", items=_items(rep["fixed"])), highlight=False)
    if view["latest"] is not None:
        console.print(_items_table(view["latest"]))
        leaf = view["latest"]["vault_index"]
        console.print(t("readiness_vaulted", leaf=leaf) if leaf is not None else t("readiness_unvaulted"), highlight=False)
    _print_seal(console, view, tz)
    return _exports(view, tz, args)


def _items_table(report: dict[str, Any]) -> Table:
    table = Table(title=t("readiness_report_items_title"))
    for key in ("item", "agent", "result", "seen", "fix"):
        table.add_column(t(f"readiness_col_{key}"))
    fixed = set(report["fixed"])
    for item in report["items"]:
        label = t(f"readiness_item_{item['item']}", default=item["item"])
        if item["item"] in fixed:
            label += f"（{t('readiness_fixed')}）"
        for k, a in enumerate(item["agents"]):
            seen = t("readiness_no_report_seen") if a["result"] == "no_report" else a.get("seen", "")
            table.add_row(label if k == 0 else "", a["agent_id"], _result(a["result"]), seen,
                          a.get("fix", "") if a["result"] != "pass" else "")
    return table


def _print_seal(console: Console, view: dict[str, Any], tz: str) -> None:
    seal = view["seal"]
    if seal is None:
        console.print(t("seal_none"), highlight=False)
        return
    console.print(t("seal_line", id=seal["id"], sealed=_when(seal["sealed_at"], tz), until=_when(seal["until"], tz)),
                  highlight=False)
    if len(view["seals"]) > 1:
        console.print(t("seal_changes_title"), highlight=False)
        for change in seal["changes"] or []:
            console.print("  " + rd.describe_change(change, t), highlight=False)
        if not seal["changes"]:
            console.print("  " + t("seal_no_changes"), highlight=False)


def _exports(view: dict[str, Any], tz: str, args: argparse.Namespace) -> int:
    from collector.web.readiness import day_xlsx, render_day

    if args.html is not None:
        args.html.write_text(render_day(view, tz), encoding="utf-8")
        print(t("readiness_html_written", path=args.html))
    if args.xlsx is not None:
        args.xlsx.write_bytes(day_xlsx(view, tz))
        print(t("readiness_xlsx_written", path=args.xlsx))
    return 0
