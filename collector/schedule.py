"""Exam plan import: the authority's monthly plan (.xlsx, .csv or .json), checked row by row.

Columns, headed in Chinese or English: 考点编号/venue, 考场/room, 科目/subject (also 考试项目,
操作项目), 开始时间/start, 结束时间/end and optionally 场次编号/session_id. Times such as
``2026-12-05 09:00`` are read in the configured time zone (``[schedule] timezone``); ISO times
with an offset and Excel date cells are accepted too.

The import is all or nothing. Every problem names the row as the person who wrote the file sees
it (the spreadsheet row or CSV line, header = 1; the item number for JSON) in Chinese and in
English together, whatever VENUEGUARD_LANG says: the plan often comes from the authority while
the collector is run by a contractor, and both read the message. Storage and versioning are in
:mod:`collector.schedule_store`; its public names are re-exported here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from collector.schedule_store import (ImportResult, Scope, ScheduleVersion, VenueChange, VenueSession, VersionDiff,
                                      apply_plan, diff, in_force_elsewhere, sessions_in_force, upcoming_sessions,
                                      version_diff, versions)
from collector.store import Store, schema
from protocol.strings import catalogue

__all__ = ["ImportResult", "Problem", "ScheduleError", "ScheduleVersion", "Scope", "VenueChange", "VenueSession",
           "VersionDiff", "diff", "import_plan", "parse_plan", "read_plan", "sessions_in_force", "upcoming_sessions",
           "version_diff", "versions"]

STRINGS = str(Path(__file__).parent / "strings")
FIELDS = ("venue", "room", "subject", "start", "end", "session_id")
REQUIRED = FIELDS[:5]
HEADERS = {"考点编号": "venue", "考点": "venue", "venue": "venue", "venue_id": "venue", "考场": "room", "room": "room",
           "科目": "subject", "考试项目": "subject", "操作项目": "subject", "subject": "subject",
           "开始时间": "start", "start": "start", "结束时间": "end", "end": "end",
           "场次编号": "session_id", "session_id": "session_id"}
ACCEPTED = "考点编号/venue, 考场/room, 科目/考试项目/操作项目/subject, 开始时间/start, 结束时间/end, 场次编号/session_id"
MAX_LEN = {"room": 100, "subject": 200, "session_id": 100}
TIME_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Text:
    """A catalogue entry and its placeholders, rendered in either language (placeholders may be Texts)."""

    key: str
    params: tuple[tuple[str, Any], ...] = ()

    def render(self, lang: str) -> str:
        kw = {k: v.render(lang) if isinstance(v, Text) else v for k, v in self.params}
        return catalogue(STRINGS, lang)[self.key].format(**kw)

    def bilingual(self) -> str:
        return f"{self.render('zh-CN')} / {self.render('en')}"


def text(key: str, **params: Any) -> Text:
    return Text(key, tuple(params.items()))


def where(kind: str, n: int | None) -> Text:
    """'第 4 行 / row 4', '第 2 项 / item 2' (JSON) or '文件 / file'."""
    return text("schedule_loc_file") if n is None else text(f"schedule_loc_{kind}", n=n)


@dataclass(frozen=True)
class Problem:
    """One error or warning, at one row (None = the whole file)."""

    row: int | None
    at: Text
    message: Text

    def __str__(self) -> str:
        return f"{self.at.bilingual()}: {self.message.bilingual()}"


class ScheduleError(Exception):
    """The plan was refused; ``errors`` lists every problem, in row order."""

    def __init__(self, errors: list[Problem]) -> None:
        self.errors = sorted(errors, key=lambda p: -1 if p.row is None else p.row)
        super().__init__("\n".join(map(str, self.errors)))


@dataclass(frozen=True)
class RawTable:
    """Cells as read: ``rows`` are (row number, {header: value}); ``kind`` is "row" or "item"."""

    kind: str
    header_row: int | None  # None: every item names its own fields (JSON)
    headers: tuple[str, ...]
    rows: list[tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Plan:
    """A validated plan: its sessions (with their row numbers), scope and warnings."""

    kind: str
    rows: list[tuple[int, VenueSession]]
    scope: list[Scope]
    warnings: list[Problem]

    @property
    def sessions(self) -> list[VenueSession]:
        return [s for _, s in self.rows]


# -- reading the three formats ----------------------------------------------------------------

def read_plan(path: Path) -> RawTable:
    """The file's cells, by extension; ScheduleError for an unreadable or unsupported file."""
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".json": _read_json, ".xlsx": _read_xlsx}
    if suffix not in readers:
        raise ScheduleError([Problem(None, where("row", None), text("schedule_err_format", suffix=suffix or "?"))])
    try:
        return readers[suffix](path)
    except ScheduleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault, reported as such
        raise ScheduleError([Problem(None, where("row", None), text("schedule_err_unreadable", detail=exc))]) from exc


def _read_csv(path: Path) -> RawTable:
    """UTF-8 (a BOM, as Excel writes it, is tolerated); a file that is not UTF-8 is read as GB18030,
    which is what "CSV" from Excel on Chinese Windows is."""
    raw = path.read_bytes()
    try:
        body = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        body = raw.decode("gb18030")
    reader = csv.reader(io.StringIO(body, newline=""))
    return _table(((reader.line_num, row) for row in reader), "row")


def _read_xlsx(path: Path) -> RawTable:
    """The first sheet, values as Excel holds them (dates as datetimes)."""
    from openpyxl import load_workbook

    book = load_workbook(path, data_only=True)
    try:
        sheet = book.worksheets[0]
        return _table(enumerate(sheet.iter_rows(values_only=True), start=1), "row")
    finally:
        book.close()


def _read_json(path: Path) -> RawTable:
    """A list of objects, or {"sessions": [...]}; items are numbered from 1."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ScheduleError([Problem(None, where("item", None), text("schedule_err_json", detail=exc))]) from exc
    items = doc.get("sessions") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ScheduleError([Problem(None, where("item", None), text("schedule_err_json_shape"))])
    bad = [Problem(n, where("item", n), text("schedule_err_item_type")) for n, it in enumerate(items, 1)
           if not isinstance(it, dict)]
    if bad:
        raise ScheduleError(bad)
    return RawTable("item", None, (), [(n, it) for n, it in enumerate(items, 1)])


def _table(lines: Iterable[tuple[int, Iterable[Any]]], kind: str) -> RawTable:
    """The header is the first line naming a known column (lines above it, such as a sheet title
    "2026年12月考试计划", are skipped), else the first non-empty line; empty lines are skipped and
    cells under no header dropped."""
    filled = [(n, values) for n, values in ((n, list(cells)) for n, cells in lines) if any(map(_cell, values))]
    if not filled:
        return RawTable(kind, None, (), [])
    at = next((i for i, (_, values) in enumerate(filled) if any(_known(_cell(v)) for v in values)), 0)
    header_row, headers = filled[at][0], tuple(_cell(v) for v in filled[at][1])
    rows = [(n, {h: v for h, v in zip(headers, values) if h}) for n, values in filled[at + 1:]]
    return RawTable(kind, header_row, tuple(h for h in headers if h), rows)


def _known(name: str) -> str | None:
    """The field a column (or JSON key) name stands for."""
    return HEADERS.get(name.strip()) or HEADERS.get(name.strip().lower())


def _cell(value: Any) -> str:
    """A cell as text: Excel gives 101 or 101.0 for a room typed as a number."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# -- validation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Context:
    venues: set[str]
    tz: ZoneInfo
    kind: str


def parse_plan(table: RawTable, known_venues: set[str], tz: ZoneInfo) -> tuple[list[tuple[int, VenueSession]], list[Problem]]:
    """Sessions with their row numbers, and every problem found (the plan is good when there are none)."""
    ctx = _Context(known_venues, tz, table.kind)
    problems: list[Problem] = []
    mapping: dict[str, str] | None = None
    if table.header_row is not None:
        mapping = {}
        problems += _name_problems(table.headers, table.header_row, ctx, mapping)
    if any(p.message.key == "schedule_err_missing_column" for p in problems):
        return [], problems
    good: list[tuple[int, VenueSession]] = []
    for n, raw in table.rows:
        fields = _fields(raw, mapping, n, ctx, problems)
        session = _row(fields, n, ctx, problems) if fields is not None else None
        if session is not None:
            good.append((n, session))
    if not table.rows:
        problems.append(Problem(None, where(ctx.kind, None), text("schedule_err_empty")))
    problems += _overlaps(good, ctx) + _duplicate_ids(good, ctx)
    return good, problems


def _name_problems(names: Iterable[str], n: int, ctx: _Context, mapping: dict[str, str]) -> list[Problem]:
    """Map column (or JSON key) names to fields, filling ``mapping``; the problems they have."""
    out: list[Problem] = []
    at = where(ctx.kind, n)
    for name in names:
        field_name = _known(name)
        if field_name is None:
            out.append(Problem(n, at, text("schedule_err_unknown_column", column=name, accepted=ACCEPTED)))
        elif field_name in mapping.values():
            out.append(Problem(n, at, text("schedule_err_duplicate_column", column=_field(field_name))))
        else:
            mapping[name] = field_name
    for f in REQUIRED:
        if f not in mapping.values():
            out.append(Problem(n, at, text("schedule_err_missing_column", column=_field(f), accepted=ACCEPTED)))
    return out


def _fields(raw: dict[str, Any], mapping: dict[str, str] | None, n: int, ctx: _Context,
            problems: list[Problem]) -> dict[str, Any] | None:
    """Field → value for one row; JSON items map their own keys (None when that fails)."""
    if mapping is None:
        mapping = {}
        found = _name_problems(raw.keys(), n, ctx, mapping)
        problems += found
        if any(p.message.key == "schedule_err_missing_column" for p in found):
            return None
    return {f: raw.get(name) for name, f in mapping.items()}


def _row(fields: dict[str, Any], n: int, ctx: _Context, problems: list[Problem]) -> VenueSession | None:
    """One row → a session, or None with its problems added (all of them, not just the first)."""
    at = where(ctx.kind, n)
    found: list[Text] = []
    venue = _cell(fields.get("venue"))
    if not venue:
        found.append(text("schedule_err_empty_field", column=_field("venue")))
    elif venue not in ctx.venues:
        found.append(text("schedule_err_unknown_venue", venue=venue))
    room, subject, sid = (_cell(fields.get(f)) for f in ("room", "subject", "session_id"))
    for f, value in (("room", room), ("subject", subject)):
        if not value:
            found.append(text("schedule_err_empty_field", column=_field(f)))
    for f, value in (("room", room), ("subject", subject), ("session_id", sid)):
        if len(value) > MAX_LEN[f]:
            found.append(text("schedule_err_too_long", column=_field(f), max=MAX_LEN[f]))
    start, end = (_time(fields.get(f), f, ctx.tz, found) for f in ("start", "end"))
    if start is not None and end is not None and end <= start:
        found.append(text("schedule_err_end_not_after_start"))
    problems += [Problem(n, at, t) for t in found]
    if found:
        return None
    assert start is not None and end is not None
    return VenueSession(venue, room, start, end, subject, sid or derived_id(venue, room, start, ctx.tz))


def _time(value: Any, f: str, tz: ZoneInfo, found: list[Text]) -> float | None:
    """Epoch seconds of one time cell, or None with the problem added."""
    if _cell(value) == "":
        found.append(text("schedule_err_empty_field", column=_field(f)))
        return None
    t = parse_time(value, tz)
    if t is None:
        found.append(text("schedule_err_bad_time", column=_field(f), value=_cell(value)))
    return t


def parse_time(value: Any, tz: ZoneInfo) -> float | None:
    """Epoch seconds of '2026-12-05 09:00' (also :ss, 2026/12/5 9:00, ISO with an offset, an Excel
    date cell); a time without an offset is in ``tz``. None when it is not a date with a time."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and ":" in value:
        dt = _parse_text(value.strip().replace("/", "-"))
    else:
        return None  # a bare number or a date without a time says nothing certain
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()


def _parse_text(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return None


def derived_id(venue: str, room: str, start: float, tz: ZoneInfo) -> str:
    """venue-room-YYYYMMDDHHMM: stable across re-imports of the same session (a long room name is hashed)."""
    stamp = datetime.fromtimestamp(start, tz).strftime("%Y%m%d%H%M")
    sid = f"{venue}-{room}-{stamp}"
    if len(sid) > MAX_LEN["session_id"]:
        sid = f"{venue}-{hashlib.sha256(room.encode()).hexdigest()[:12]}-{stamp}"
    return sid


def _overlaps(rows: list[tuple[int, VenueSession]], ctx: _Context) -> list[Problem]:
    """Two sessions in one room at once are a typo in the plan; reported at the later row."""
    out = []
    by_room: dict[tuple[str, str], list[tuple[int, VenueSession]]] = {}
    for n, s in rows:
        by_room.setdefault((s.venue_id, s.room), []).append((n, s))
    for group in by_room.values():
        group.sort(key=lambda r: (r[1].start, r[0]))
        for i, (n, s) in enumerate(group):
            for m, other in group[:i]:
                if other.end > s.start:
                    first, later = sorted((n, m))
                    out.append(Problem(later, where(ctx.kind, later),
                                       text("schedule_err_overlap", other=where(ctx.kind, first), room=s.room)))
    return out


def _duplicate_ids(rows: list[tuple[int, VenueSession]], ctx: _Context) -> list[Problem]:
    """A session_id names one session of a venue; reported at every repeat."""
    out = []
    first: dict[tuple[str, str], int] = {}
    for n, s in sorted(rows, key=lambda r: r[0]):
        key = (s.venue_id, s.session_id)
        if key in first:
            out.append(Problem(n, where(ctx.kind, n), text("schedule_err_duplicate_id", session_id=s.session_id,
                                                           other=where(ctx.kind, first[key]))))
        first.setdefault(key, n)
    return out


def _field(name: str) -> Text:
    return text(f"schedule_field_{name}")


# -- import -------------------------------------------------------------------------------------

def zone(name: str) -> ZoneInfo:
    """The plan's time zone; ScheduleError for a name the system does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError([Problem(None, where("row", None), text("schedule_err_timezone", tz=name))]) from exc


def load_plan(store: Store, path: Path, tz: ZoneInfo) -> Plan:
    """Read and check ``path`` against the store's venues, inventories and sessions in force."""
    table = read_plan(path)
    rows, problems = parse_plan(table, {v["id"] for v in store.venues()}, tz)
    scope = plan_scope([s for _, s in rows], tz)
    if not problems:
        problems = _ids_in_force(rows, in_force_elsewhere(store, scope), table.kind)
    if problems:
        raise ScheduleError(problems)
    return Plan(table.kind, rows, scope, room_warnings(store, rows, table.kind))


def plan_scope(sessions: list[VenueSession], tz: ZoneInfo) -> list[Scope]:
    """The (venue, month) pairs the sessions start in, with each month's bounds in ``tz``."""
    pairs = {(s.venue_id, datetime.fromtimestamp(s.start, tz).date().replace(day=1)) for s in sessions}
    return [Scope(venue, first.strftime("%Y-%m"), _midnight(first, tz), _midnight(_next_month(first), tz))
            for venue, first in sorted(pairs)]


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _midnight(d: date, tz: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def _ids_in_force(rows: list[tuple[int, VenueSession]], taken: dict[tuple[str, str], int], kind: str) -> list[Problem]:
    return [Problem(n, where(kind, n), text("schedule_err_id_in_force", session_id=s.session_id,
                                            version=taken[(s.venue_id, s.session_id)]))
            for n, s in rows if (s.venue_id, s.session_id) in taken]


def room_warnings(store: Store, rows: list[tuple[int, VenueSession]], kind: str) -> list[Problem]:
    """A room the venue's registered inventory does not know (once per venue and room, at its first
    row): probably a typo, or an inventory not updated yet; the plan is still imported."""
    d = schema.devices.c
    with store.engine.connect() as conn:
        known = conn.execute(sa.select(d.venue_id, d.room).distinct()).all()
    rooms: dict[str, set[str]] = {}
    for venue, room in known:
        rooms.setdefault(venue, set()).add(room)
    out, seen = [], set()
    for n, s in rows:
        registered = rooms.get(s.venue_id)
        if registered is not None and s.room not in registered and (s.venue_id, s.room) not in seen:
            seen.add((s.venue_id, s.room))
            listed = "、".join(sorted(r for r in registered if r)) or "-"
            out.append(Problem(n, where(kind, n), text("schedule_warn_room", room=s.room, venue=s.venue_id,
                                                       rooms=listed)))
    return out


def import_plan(store: Store, path: Path, *, by: str, timezone: str = "Asia/Shanghai",
                now: float | None = None) -> tuple[ImportResult, list[Problem]]:
    """Check and import ``path`` (all or nothing); the result and the warnings. Raises ScheduleError."""
    tz = zone(timezone)
    plan = load_plan(store, path, tz)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    result = apply_plan(store, plan.sessions, plan.scope, source=path.name, sha256=digest, by=by, now=now)
    return result, plan.warnings
