"""``venueguard-collector schedule import|show|history``: the exam plan's operator commands.

Messages come from ``collector/strings`` (keys ``schedule_*``); the per-row errors of a refused
plan are printed in Chinese and English together (see :mod:`collector.schedule`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from zoneinfo import ZoneInfo

from collector import config
from collector.strings import t

if TYPE_CHECKING:
    from rich.console import Console

    from collector.schedule_store import VenueSession, VersionDiff

Handler = Callable[[config.CollectorConfig, argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``schedule import|show|history``."""
    schedule = sub.add_parser("schedule", help="the exam plan (考试安排): import, show, history")
    ssub = schedule.add_subparsers(dest="schedule_command", required=True)
    imp = ssub.add_parser("import", help="import a monthly exam plan (.xlsx, .csv, .json); all or nothing, versioned")
    imp.add_argument("file", type=Path, help="plan with columns 考点编号/venue, 考场/room, 科目/subject, "
                                             "开始时间/start, 结束时间/end [, 场次编号/session_id]")
    imp.add_argument("--by", default=None, help="who imports it (default: the OS user)")
    show = ssub.add_parser("show", help="sessions in force that have not ended")
    show.add_argument("--venue", default=None, help="only this venue (考点编号)")
    show.add_argument("--all", action="store_true", help="also sessions that have ended")
    history = ssub.add_parser("history", help="every import; with --diff N what version N changed")
    history.add_argument("--venue", default=None, help="only versions touching this venue (考点编号)")
    history.add_argument("--diff", type=int, default=None, metavar="N", help="the changes version N made")


def handler(args: argparse.Namespace) -> Handler:
    """The function for ``schedule <command>``; a bad ``[schedule] timezone`` is reported, not a traceback."""
    chosen = {"import": import_command, "show": show_command, "history": history_command}[args.schedule_command]

    def run(cfg: config.CollectorConfig, a: argparse.Namespace) -> int:
        from collector.schedule import ScheduleError, zone

        try:
            zone(cfg.schedule.timezone)
        except ScheduleError as exc:
            print(exc, file=sys.stderr)
            return 2
        return chosen(cfg, a)

    return run


def import_command(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Exit 1 with every problem on stderr and nothing imported, or print what changed per venue."""
    from collector.runtime import open_store
    from collector.schedule import ScheduleError, import_plan

    store = open_store(cfg)
    try:
        result, warnings = import_plan(store, args.file, by=args.by or _os_user(), timezone=cfg.schedule.timezone)
    except ScheduleError as exc:
        print(t("schedule_refused", count=len(exc.errors)), file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for w in warnings:
        print(t("schedule_warning", detail=w))
    if result.version is None:
        count = sum(c.unchanged for c in result.changes.values())
        same = t("schedule_noop_same_file", version=result.same_file_as) if result.same_file_as else ""
        print(t("schedule_noop", count=count, same=same))
        return 0
    print(t("schedule_imported", version=result.version, source=args.file.name, count=result.sessions,
            months=", ".join(result.months)))
    for venue, c in result.changes.items():
        print(t("schedule_venue_counts", venue_id=venue, added=len(c.added), changed=len(c.changed),
                removed=len(c.removed), unchanged=c.unchanged))
        if c.has_changes:
            pushed = result.config_versions.get(venue)
            print(t("schedule_venue_pushed", version=pushed) if pushed else t("schedule_venue_held", venue_id=venue))
    return 0


def show_command(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """A table of the sessions in force (upcoming only unless --all)."""
    from rich.table import Table

    from collector.runtime import open_store
    from collector.schedule import sessions_in_force, upcoming_sessions

    store = open_store(cfg)
    try:
        found = sessions_in_force(store, args.venue) if args.all else upcoming_sessions(store, args.venue, time.time())
    finally:
        store.close()
    if not found:
        print(t("schedule_show_empty"))
        return 0
    tz = _tz(cfg)
    table = Table(title=t("schedule_show_all" if args.all else "schedule_show_upcoming", count=len(found)))
    for key in ("venue", "room", "subject", "start", "end", "session_id"):
        table.add_column(t(f"schedule_col_{key}"))
    for s in found:
        table.add_row(s.venue_id, s.room, s.subject, _when(s.start, tz), _when(s.end, tz), s.session_id)
    _console().print(table)
    return 0


def history_command(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Every import (optionally of one venue), or with --diff N what version N changed."""
    from rich.table import Table

    from collector.runtime import open_store
    from collector.schedule import version_diff, versions

    store = open_store(cfg)
    try:
        if args.diff is not None:
            return _print_diff(version_diff(store, args.diff), args.diff, args.venue, _tz(cfg))
        found = versions(store, args.venue)
    finally:
        store.close()
    if not found:
        print(t("schedule_history_empty"))
        return 0
    table = Table(title=t("schedule_history_title"))
    for key in ("version", "imported_at", "imported_by", "source", "months", "sessions", "venues", "sha256"):
        table.add_column(t(f"schedule_col_{key}"))
    for v in found:
        table.add_row(str(v.id), _when(v.imported_at, _tz(cfg)), v.imported_by, v.source, ", ".join(v.months),
                      str(v.sessions), ", ".join(v.venues), v.sha256[:12])
    _console().print(table)
    return 0


def _print_diff(found: VersionDiff | None, version: int, venue: str | None, tz: ZoneInfo) -> int:
    """The sessions a version added, removed and changed, per venue."""
    if found is None:
        print(t("schedule_diff_unknown", version=version), file=sys.stderr)
        return 1
    before = ", ".join(map(str, found.before)) or t("schedule_diff_first")
    print(t("schedule_diff_title", version=version, before=before, by=found.version.imported_by,
            source=found.version.source))
    for venue_id, c in found.changes.items():
        if venue is not None and venue_id != venue:
            continue
        print(t("schedule_diff_venue", venue_id=venue_id, unchanged=c.unchanged))
        lines = ([t("schedule_diff_added", session=_line(s, tz)) for s in c.added]
                 + [t("schedule_diff_removed", session=_line(s, tz)) for s in c.removed]
                 + [t("schedule_diff_changed", old=_line(a, tz), new=_line(b, tz)) for a, b in c.changed])
        for line in lines or [t("schedule_diff_none")]:
            print(line)
    return 0


def _line(s: VenueSession, tz: ZoneInfo) -> str:
    start, end = _when(s.start, tz), _when(s.end, tz)
    return f"{s.session_id}: {s.room} {s.subject} {start}–{end[11:] if end[:10] == start[:10] else end}"


def _when(t_: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t_, tz).strftime("%Y-%m-%d %H:%M")


def _tz(cfg: config.CollectorConfig) -> ZoneInfo:
    from collector.schedule import zone

    return zone(cfg.schedule.timezone)


def _console() -> Console:
    """Wide enough when piped that Chinese cells are not wrapped mid-word."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
