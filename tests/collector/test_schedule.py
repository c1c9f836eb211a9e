"""Exam plan import: three formats, bilingual per-row errors, all or nothing, versions that retire
instead of overwrite, config versions moved only where sessions changed, upcoming sessions in the
signed config, and the CLI (SQLite and PostgreSQL where a store is involved)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from collector import configpush
from collector.cli import main
from collector.configpush import ConfigPublisher
from collector.schedule import (ScheduleError, VenueSession, import_plan, parse_plan, read_plan, sessions_in_force,
                                upcoming_sessions, version_diff, versions)
from collector.store import Store, schema
from protocol import keys
from protocol.envelope import decode
from protocol.inventory import Device
from protocol.schedule import Session

SH = ZoneInfo("Asia/Shanghai")
HEAD = "考点编号,考场,科目,开始时间,结束时间,场次编号\n"
DEC = HEAD + """GZ-TH01,第1考场,电工作业,2026-12-05 09:00,2026-12-05 11:00,TH-1
GZ-TH01,第1考场,焊接作业,2026-12-05 14:00,2026-12-05 16:00,TH-2
GZ-TH01,第2考场,高处作业,2026-12-05 09:00,2026-12-05 11:00,TH-3
GZ-BY02,第1考场,电工作业,2026-12-06 09:00,2026-12-06 11:00,BY-1
"""
# TH-1 moves to 09:30, TH-2 is dropped, TH-3 stays, TH-4 is new; BY02 is as before.
DEC2 = HEAD + """GZ-TH01,第1考场,电工作业,2026-12-05 09:30,2026-12-05 11:30,TH-1
GZ-TH01,第2考场,高处作业,2026-12-05 09:00,2026-12-05 11:00,TH-3
GZ-TH01,第2考场,制冷作业,2026-12-19 14:00,2026-12-19 16:00,TH-4
GZ-BY02,第1考场,电工作业,2026-12-06 09:00,2026-12-06 11:00,BY-1
"""


def at(text: str) -> float:
    """Epoch seconds of a Shanghai wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=SH).timestamp()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def camera(mac_end: int, room: str) -> Device:
    return Device(f"00:11:22:33:44:{mac_end:02x}", f"192.0.2.{mac_end}", "camera", room, "摄像头")


def venues(store: Store, *, inventory: bool = True) -> None:
    """GZ-TH01 (rooms 第1考场, 第2考场) and GZ-BY02 (第1考场), with inventories (config version 1) unless told."""
    store.add_venue("GZ-TH01")
    store.add_venue("GZ-BY02")
    if inventory:
        store.replace_inventory("GZ-TH01", [camera(1, "第1考场"), camera(2, "第2考场")])
        store.replace_inventory("GZ-BY02", [camera(3, "第1考场")])


def errors_of(path: Path) -> list[str]:
    """Every problem of a plan file (GZ-TH01 is the only venue), as printed, in row order."""
    try:
        _, problems = parse_plan(read_plan(path), {"GZ-TH01"}, SH)
    except ScheduleError as exc:  # the file as a whole could not be read
        problems = exc.errors
    return [str(p) for p in ScheduleError(problems).errors]


# -- reading ------------------------------------------------------------------------------------

def test_csv_json_and_xlsx_read_alike(tmp_path: Path) -> None:
    """A BOM'd CSV with Chinese headers, JSON with English keys and ISO/offset times, and an Excel
    sheet with date cells and a room typed as a number give the same sessions and derived ids."""
    from openpyxl import Workbook

    csv_path = tmp_path / "plan.csv"
    csv_path.write_bytes(("\ufeff考点编号,考场,科目,开始时间,结束时间\r\n"
                          "GZ-TH01,101,电工作业,2026-12-05 09:00,2026-12-05 11:00:00\r\n"
                          "\r\n"
                          "GZ-TH01,101,焊接作业,2026/12/5 14:00,2026-12-05T16:00+08:00\r\n").encode("utf-8"))
    json_path = write(tmp_path, "plan.json", json.dumps({"sessions": [
        {"venue": "GZ-TH01", "room": "101", "subject": "电工作业", "start": "2026-12-05T09:00:00+08:00",
         "end": "2026-12-05T03:00:00Z"},
        {"venue": "GZ-TH01", "Room": "101", "subject": "焊接作业", "start": "2026-12-05 14:00", "end": "2026-12-05 16:00"},
    ]}, ensure_ascii=False))
    book = Workbook()
    sheet = book.active
    sheet.append(["考点编号", "考场", "考试项目", "开始时间", "结束时间"])
    sheet.append(["GZ-TH01", 101, "电工作业", datetime(2026, 12, 5, 9), datetime(2026, 12, 5, 11)])
    sheet.append(["GZ-TH01", 101, "焊接作业", datetime(2026, 12, 5, 14), "2026-12-05 16:00"])
    xlsx_path = tmp_path / "plan.xlsx"
    book.save(xlsx_path)

    expected = [VenueSession("GZ-TH01", "101", at("2026-12-05 09:00"), at("2026-12-05 11:00"), "电工作业",
                             "GZ-TH01-101-202612050900"),
                VenueSession("GZ-TH01", "101", at("2026-12-05 14:00"), at("2026-12-05 16:00"), "焊接作业",
                             "GZ-TH01-101-202612051400")]
    for path in (csv_path, json_path, xlsx_path):
        rows, problems = parse_plan(read_plan(path), {"GZ-TH01"}, SH)
        assert problems == [], path
        assert [s for _, s in rows] == expected, path
    assert [n for n, _ in parse_plan(read_plan(csv_path), {"GZ-TH01"}, SH)[0]] == [2, 4]  # the file's own lines
    assert json.loads(json_path.read_text())["sessions"] and [n for n, _ in parse_plan(
        read_plan(json_path), {"GZ-TH01"}, SH)[0]] == [1, 2]
    assert expected[0].session == Session("101", at("2026-12-05 09:00"), at("2026-12-05 11:00"), "电工作业",
                                          "GZ-TH01-101-202612050900")


def test_every_error_names_its_row_in_chinese_and_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of bad row is reported at the CSV line a spreadsheet user sees, in both languages,
    whatever VENUEGUARD_LANG says."""
    monkeypatch.setenv("VENUEGUARD_LANG", "en")
    path = write(tmp_path, "plan.csv", HEAD + "\n".join([
        "GZ-TH01,第1考场,电工作业,2026-12-05 09:00,2026-12-05 11:00,S1",   # 2 good
        "GZ-XX99,第1考场,电工作业,2026-12-05 09:00,2026-12-05 11:00,S2",   # 3 unknown venue
        "GZ-TH01,第2考场,电工作业,2026-12-05 11:00,2026-12-05 09:00,S3",   # 4 end before start
        "GZ-TH01,,电工作业,2026-12-06 09:00,2026-12-06 11:00,S4",          # 5 empty room
        "GZ-TH01,第2考场,,2026-12-06 09:00,2026-12-06 11:00,S5",           # 6 empty subject
        "GZ-TH01,第2考场,电工作业,明天上午,2026-12-07 11:00,S6",             # 7 bad start
        "GZ-TH01,第2考场,电工作业,2026-12-08 09:00,,S7",                   # 8 missing end
        "GZ-TH01,第1考场,焊接作业,2026-12-05 10:30,2026-12-05 12:00,S8",   # 9 overlaps line 2
        "GZ-TH01,第3考场,焊接作业,2026-12-09 09:00,2026-12-09 11:00,S1",   # 10 duplicate id of line 2
        "GZ-TH01,第3考场,焊接作业,2026-12-09,2026-12-09 11:00,S10",        # 11 a date without a time
    ]) + "\n")
    assert errors_of(path) == [
        "第 3 行 / row 3: 考点 GZ-XX99 未注册（先用 venueguard-collector enroll 注册该考点的代理） / "
        "venue GZ-XX99 is not registered (enroll its agent with venueguard-collector enroll first)",
        "第 4 行 / row 4: 结束时间不晚于开始时间 / end is not after start",
        "第 5 行 / row 5: 考场为空 / room is empty",
        "第 6 行 / row 6: 科目为空 / subject is empty",
        "第 7 行 / row 7: 开始时间 明天上午 不是有效的日期时间（例：2026-12-05 09:00） / "
        "start 明天上午 is not a valid date and time (e.g. 2026-12-05 09:00)",
        "第 8 行 / row 8: 结束时间为空 / end is empty",
        "第 9 行 / row 9: 与第 2 行在考场 第1考场 的场次时间重叠 / overlaps the session on row 2 in room 第1考场",
        "第 10 行 / row 10: 场次编号 S1 与第 2 行重复 / session_id S1 duplicates row 2",
        "第 11 行 / row 11: 开始时间 2026-12-09 不是有效的日期时间（例：2026-12-05 09:00） / "
        "start 2026-12-09 is not a valid date and time (e.g. 2026-12-05 09:00)",
    ]


def test_header_problems_are_named_at_the_header_row(tmp_path: Path) -> None:
    """A missing and an unknown column are errors at row 1 naming the accepted headers."""
    path = write(tmp_path, "plan.csv", "考点编号,考场,科目,开始时间,备注\nGZ-TH01,第1考场,电工作业,2026-12-05 09:00,x\n")
    found = errors_of(path)
    assert len(found) == 2 and all(e.startswith("第 1 行 / row 1: ") for e in found)
    assert "未知列 备注（可用表头：考点编号/venue, 考场/room" in found[0] and "unknown column 备注 (accepted headers:" in found[0]
    assert "缺少列 结束时间" in found[1] and "missing column end" in found[1]


def test_json_items_and_xlsx_rows_are_numbered_as_their_authors_see_them(tmp_path: Path) -> None:
    """JSON problems name the item (from 1); Excel ones the sheet row, blank rows included."""
    from openpyxl import Workbook

    path = write(tmp_path, "plan.json", json.dumps([
        {"venue": "GZ-TH01", "room": "1", "subject": "a", "start": "2026-12-05 09:00", "end": "2026-12-05 10:00"},
        {"venue": "GZ-TH01", "room": "1", "subject": "a", "start": "2026-12-05 11:00", "end": "2026-12-05 10:00"},
        {"venue": "GZ-TH01", "room": "1", "subject": "a", "start": "2026-12-06 09:00", "end": "2026-12-06 10:00", "note": 1},
    ]))
    found = errors_of(path)
    assert found[0] == "第 2 项 / item 2: 结束时间不晚于开始时间 / end is not after start"
    assert found[1].startswith("第 3 项 / item 3: 未知列 note")
    assert errors_of(write(tmp_path, "bad.json", "[1]")) == [
        "第 1 项 / item 1: 不是对象（每个场次应为一个 JSON 对象） / is not an object (each session must be a JSON object)"]

    book = Workbook()
    sheet = book.active
    for col, head in enumerate(["venue", "room", "subject", "start", "end"], start=1):
        sheet.cell(row=1, column=col, value=head)
    for col, value in enumerate(["GZ-TH01", "1", "a", datetime(2026, 12, 5, 9), datetime(2026, 12, 5, 8)], start=1):
        sheet.cell(row=4, column=col, value=value)  # rows 2 and 3 left blank
    xlsx = tmp_path / "plan.xlsx"
    book.save(xlsx)
    assert errors_of(xlsx) == ["第 4 行 / row 4: 结束时间不晚于开始时间 / end is not after start"]


def test_a_title_row_and_a_chinese_excel_csv_are_understood(tmp_path: Path) -> None:
    """Authority sheets often start with a title row; Excel on Chinese Windows saves CSV as GB18030."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["2026年12月安全生产考试计划"])
    sheet.append(["考点编号", "考场", "操作项目", "开始时间", "结束时间", "场次编号"])
    sheet.append(["GZ-TH01", "第1考场", "电工作业", "2026-12-05 09:00", "2026-12-05 11:00", "S1"])
    xlsx = tmp_path / "plan.xlsx"
    book.save(xlsx)
    gbk = tmp_path / "plan.csv"
    gbk.write_bytes((HEAD + "GZ-TH01,第1考场,电工作业,2026-12-05 09:00,2026-12-05 11:00,S1\r\n").encode("gb18030"))
    for path, row in ((xlsx, 3), (gbk, 2)):
        rows, problems = parse_plan(read_plan(path), {"GZ-TH01"}, SH)
        assert problems == [] and [(n, s.subject, s.session_id) for n, s in rows] == [(row, "电工作业", "S1")]


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    """A wrong extension, broken JSON or a file with no sessions is a whole-file error."""
    for name, body, words in (("plan.txt", "x", "不支持的文件类型 .txt"), ("plan.json", "{", "JSON 格式错误"),
                              ("plan.csv", HEAD, "计划中没有任何场次"), ("empty.csv", "", "计划中没有任何场次")):
        (found,) = errors_of(write(tmp_path, name, body))
        assert found.startswith("文件 / file: ") and words in found


# -- importing and versions ---------------------------------------------------------------------

def _import(store: Store, tmp_path: Path, text: str, name: str = "plan.csv", now: float = 1_000.0):  # noqa: ANN202
    return import_plan(store, write(tmp_path, name, text), by="张三", now=now)


def test_a_bad_plan_imports_nothing(store: Store, tmp_path: Path) -> None:
    """One bad row and nothing changes: no version, no session, no config version moved."""
    venues(store)
    with pytest.raises(ScheduleError) as info:
        _import(store, tmp_path, DEC + "GZ-TH01,第1考场,电工作业,2026-12-20 09:00,2026-12-20 08:00,TH-9\n")
    assert [e.row for e in info.value.errors] == [6]
    assert versions(store) == [] and sessions_in_force(store) == []
    assert store.inventory_versions() == {"GZ-TH01": 1, "GZ-BY02": 1}


def test_a_changed_plan_retires_and_adds_and_keeps_the_old_rows(store: Store, tmp_path: Path) -> None:
    """The second December plan makes a new version: TH-1 changed, TH-2 removed, TH-4 added, TH-3
    and BY-1 unchanged; only GZ-TH01's config version moves; every old row is still stored."""
    venues(store)
    first, warnings = _import(store, tmp_path, DEC)
    assert first.version == 1 and warnings == [] and first.months == ("2026-12",) and first.sessions == 4
    assert {v: (len(c.added), c.unchanged) for v, c in first.changes.items()} == {"GZ-TH01": (3, 0), "GZ-BY02": (1, 0)}
    assert first.config_versions == {"GZ-TH01": 2, "GZ-BY02": 2}

    second, _ = _import(store, tmp_path, DEC2, name="plan-v2.csv", now=2_000.0)
    assert second.version == 2 and second.config_versions == {"GZ-TH01": 3}
    assert store.inventory_versions() == {"GZ-TH01": 3, "GZ-BY02": 2}
    th = second.changes["GZ-TH01"]
    assert [s.session_id for s in th.added] == ["TH-4"] and [s.session_id for s in th.removed] == ["TH-2"]
    assert [(a.start, b.start) for a, b in th.changed] == [(at("2026-12-05 09:00"), at("2026-12-05 09:30"))]
    assert th.unchanged == 1 and not second.changes["GZ-BY02"].has_changes

    assert [(s.session_id, s.start) for s in sessions_in_force(store, "GZ-TH01")] == [
        ("TH-3", at("2026-12-05 09:00")), ("TH-1", at("2026-12-05 09:30")), ("TH-4", at("2026-12-19 14:00"))]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.exam_sessions.c.version_id, schema.exam_sessions.c.retired_in)).all()
    assert sorted(rows, key=lambda r: (r[0], r[1] or 0)) == [(1, 2)] * 4 + [(2, None)] * 4

    diff = version_diff(store, 2)
    assert diff is not None and diff.before == (1,) and diff.version.source == "plan-v2.csv"
    assert diff.changes["GZ-TH01"].added == th.added and diff.changes["GZ-TH01"].removed == th.removed
    assert diff.changes["GZ-TH01"].changed == th.changed and diff.changes["GZ-BY02"].unchanged == 1
    assert version_diff(store, 1).before == () and version_diff(store, 9) is None  # type: ignore[union-attr]
    listed = versions(store)
    assert [(v.id, v.imported_by, v.months, v.sessions, v.venues) for v in listed] == [
        (1, "张三", ("2026-12",), 4, ("GZ-BY02", "GZ-TH01")), (2, "张三", ("2026-12",), 4, ("GZ-BY02", "GZ-TH01"))]


def test_identical_reimport_is_a_noop_and_other_months_are_untouched(store: Store, tmp_path: Path) -> None:
    """The same file again writes nothing and says which version it equals; a January plan leaves
    December in force; re-importing an older December plan is a real change (a revert)."""
    venues(store)
    _import(store, tmp_path, DEC)
    again, _ = _import(store, tmp_path, DEC)
    assert again.version is None and again.same_file_as == 1 and again.config_versions == {}
    assert len(versions(store)) == 1 and store.inventory_versions() == {"GZ-TH01": 2, "GZ-BY02": 2}

    jan, _ = _import(store, tmp_path, HEAD + "GZ-TH01,第1考场,电工作业,2027-01-09 09:00,2027-01-09 11:00,TH-J1\n",
                     name="jan.csv")
    assert jan.version == 2 and jan.months == ("2027-01",) and jan.config_versions == {"GZ-TH01": 3}
    assert len(sessions_in_force(store, "GZ-TH01")) == 4  # 3 in December + 1 in January

    _import(store, tmp_path, DEC2, name="dec2.csv")
    back, _ = _import(store, tmp_path, DEC)
    assert back.version == 4 and back.same_file_as is None
    assert {s.session_id for s in sessions_in_force(store, "GZ-TH01")} == {"TH-1", "TH-2", "TH-3", "TH-J1"}


def test_a_session_id_in_force_in_another_month_is_refused(store: Store, tmp_path: Path) -> None:
    """A case names its session by id, so an id must not name two sessions of one venue."""
    venues(store)
    _import(store, tmp_path, DEC)
    with pytest.raises(ScheduleError) as info:
        _import(store, tmp_path, HEAD + "GZ-TH01,第1考场,电工作业,2027-01-09 09:00,2027-01-09 11:00,TH-1\n")
    assert str(info.value) == ("第 2 行 / row 2: 场次编号 TH-1 已被现行计划（版本 1）中其他月份的场次使用 / "
                               "session_id TH-1 is already used by a session of another month in force (version 1)")


def test_rooms_unknown_to_the_inventory_warn_and_venues_without_one_wait(store: Store, tmp_path: Path) -> None:
    """A room the inventory lacks is a warning (once); a venue with no inventory gets no config yet:
    an empty signed inventory would make its agents flag every device."""
    venues(store, inventory=False)
    store.replace_inventory("GZ-TH01", [camera(1, "第1考场")])
    result, warnings = _import(store, tmp_path, DEC)
    assert [(w.row, str(w)) for w in warnings] == [(4, "第 4 行 / row 4: 考场 第2考场 不在考点 GZ-TH01 登记设备清单的考场中"
                                                       "（第1考场），仍将导入 / room 第2考场 is not among the rooms of venue "
                                                       "GZ-TH01's registered inventory (第1考场); imported anyway")]
    assert result.version == 1 and result.config_versions == {"GZ-TH01": 2}
    assert store.inventory_versions() == {"GZ-TH01": 2, "GZ-BY02": 0}


def test_sessions_in_force_filters_by_venue_and_time(store: Store, tmp_path: Path) -> None:
    """start/end select sessions overlapping [start, end]; upcoming means not ended yet."""
    venues(store)
    _import(store, tmp_path, DEC)
    assert len(sessions_in_force(store)) == 4 and len(sessions_in_force(store, "GZ-BY02")) == 1
    ids = [s.session_id for s in sessions_in_force(store, "GZ-TH01", at("2026-12-05 11:00"), at("2026-12-05 13:00"))]
    assert ids == ["TH-1", "TH-3"]  # both end at 11:00, TH-2 starts at 14:00
    assert [s.session_id for s in sessions_in_force(store, None, at("2026-12-05 15:00"), at("2026-12-06 09:00"))] == [
        "BY-1", "TH-2"]
    assert [s.session_id for s in upcoming_sessions(store, "GZ-TH01", at("2026-12-05 11:00"))] == ["TH-2"]


# -- the signed config --------------------------------------------------------------------------

def test_the_publisher_sends_the_upcoming_sessions(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import re-sends the venue's config under the next version, with only the sessions that
    have not ended; nothing is re-sent while nothing changes."""
    monkeypatch.setattr(configpush, "CHECK_EVERY", 0.0)
    venues(store)
    store.enroll_agent("a1", "GZ-TH01", keys.public_b64(keys.new_private_key()))
    key = keys.new_private_key()
    publisher = ConfigPublisher(store, key)
    now = at("2026-12-05 12:00")
    assert len(publisher.due(now)) == 1  # version 1: the inventory, no sessions yet
    _import(store, tmp_path, DEC)

    def sent() -> tuple[int, list[dict]]:
        (out,) = publisher.due(now)
        env = decode(out[1])
        assert out[0] == "vg/v1/a1/cfg" and out[2] is True and env.verify(key.public_key())
        return env.seq, env.records[0]["data"]["sessions"]

    seq, sessions = sent()
    assert seq == 2 and [s["session_id"] for s in sessions] == ["TH-2"]  # TH-1 and TH-3 ended at 11:00
    assert sessions[0] == Session("第1考场", at("2026-12-05 14:00"), at("2026-12-05 16:00"), "焊接作业", "TH-2").to_json()
    assert publisher.due(now) == []
    _import(store, tmp_path, DEC2, name="dec2.csv")
    seq, sessions = sent()
    assert seq == 3 and [s["session_id"] for s in sessions] == ["TH-4"]


# -- the CLI ------------------------------------------------------------------------------------

def test_cli_import_show_history(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import prints the version and counts, refuses a bad file with exit 1 and both languages on
    stderr; show lists upcoming sessions (all with --all); history lists versions and a diff."""
    store = Store(db_url)
    store.migrate()
    venues(store)
    store.close()
    cfg = write(tmp_path, "collector.toml", f'[collector]\ndata_dir = "data"\ndatabase_url = "{db_url}"\n')
    run = lambda *argv: main(["--config", str(cfg), "schedule", *argv])  # noqa: E731
    future = HEAD + ("GZ-TH01,第1考场,电工作业,2099-12-05 09:00,2099-12-05 11:00,F-1\n"
                     "GZ-TH01,第1考场,焊接作业,2000-12-05 09:00,2000-12-05 11:00,P-1\n")
    assert run("import", str(write(tmp_path, "plan.csv", future)), "--by", "李四") == 0
    out = capsys.readouterr().out
    assert "已导入考试安排版本 1（plan.csv，月份 2000-12, 2099-12，共 2 场）" in out
    assert "考点 GZ-TH01：新增 2，变更 0，撤销 0，未变 0" in out and "配置版本 2" in out

    assert run("import", str(write(tmp_path, "bad.csv", HEAD + "GZ-TH01,第1考场,x,2099-12-06 11:00,2099-12-06 10:00,\n"))) == 1
    captured = capsys.readouterr()
    assert "考试安排未导入" in captured.err and "第 2 行 / row 2: 结束时间不晚于开始时间 / end is not after start" in captured.err

    assert run("import", str(tmp_path / "plan.csv")) == 0
    assert "未生成新版本（文件与版本 1 完全相同）" in capsys.readouterr().out

    assert run("show") == 0
    out = capsys.readouterr().out
    assert "待进行的考试场次" in out and "F-1" in out and "P-1" not in out and "2099-12-05 09:00" in out
    assert run("show", "--all", "--venue", "GZ-TH01") == 0
    assert "P-1" in capsys.readouterr().out
    assert run("show", "--venue", "GZ-BY02") == 0
    assert "没有待进行的考试场次" in capsys.readouterr().out

    changed = future.replace("2099-12-05 09:00,2099-12-05 11:00", "2099-12-05 10:00,2099-12-05 12:00")
    assert run("import", str(write(tmp_path, "plan2.csv", changed)), "--by", "王五") == 0
    assert "变更 1" in capsys.readouterr().out
    assert run("history") == 0
    out = capsys.readouterr().out
    assert "考试安排导入历史" in out and "李四" in out and "王五" in out and "plan2.csv" in out
    assert run("history", "--diff", "2") == 0
    out = capsys.readouterr().out
    assert "版本 2（plan2.csv，导入人 王五）相对于此前现行版本 1 的变更" in out
    assert "~ 变更 F-1: 第1考场 电工作业 2099-12-05 09:00–11:00  →  F-1: 第1考场 电工作业 2099-12-05 10:00–12:00" in out
    assert run("history", "--diff", "7") == 1
    assert "没有考试安排版本 7" in capsys.readouterr().err
