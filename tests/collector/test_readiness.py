"""The collector's side of the readiness check on a real store (SQLite and PostgreSQL), a real
vault and the real ingest: rounds by the schedule and on demand, signed commands, reports
combined into venue reports (pass, a failing item, a silent agent), the seal and re-seal, fixed
items, the vault note, the printable page, the XLSX and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from collector import readiness as rd
from collector import readiness_store as rs
from collector.cli import main
from collector.config import ReadinessSection
from collector.ingest import Ingestor, Message
from collector.readinessrunner import READINESS_TOPIC, ReadinessRunner
from collector.store import Store, schema
from collector.vault import Vault, frames
from collector.web.app import create_app
from protocol import keys
from protocol.envelope import Envelope, record
from protocol.errors import ProtocolError
from protocol.readiness import ITEMS, REPORT_KIND, ItemResult, Report, parse_command
from tests.web import add_user, login

TZ = "Asia/Shanghai"
DAY = "2026-12-05"  # the exam day
EVE = rd.next_day(DAY, -1)


def at(day: str, hhmm: str) -> float:
    """Local time in the schedule's zone."""
    return dt.datetime.strptime(f"{day} {hhmm}", "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(TZ)).timestamp()


class FakeAgent:
    """Answers with signed ``rpt`` envelopes, as a real agent's outbox would send them."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id, self.key, self.seq = agent_id, keys.new_private_key(), 0

    def report(self, round_id: int, when: float, fail: dict[str, str] | None = None,
               baseline: dict[str, Any] | None = None, day: str = DAY) -> Message:
        fail = fail or {}
        items = tuple(ItemResult(i, "fail" if i in fail else "pass", fail.get(i, "正常"), "请整改" if i in fail else "")
                      for i in ITEMS)
        base = baseline if baseline is not None else {
            "devices": {"00:11:22:33:44:01": "192.0.2.21"}, "host": {"eth0": [f"192.0.2.1{self.agent_id[-1]}/24"]},
            "cameras": {"00:11:22:33:44:01": {"room": "第1考场"}}, "recorders": {"nvr1": {"channels": 4}},
            "config_version": 3}
        rep = Report(self.agent_id, round_id, day, when - 20, when - 1, items, base, 3)
        self.seq += 1
        env = Envelope(self.agent_id, "boot1", self.seq, when, "rpt",
                       (record(REPORT_KIND, when - 1, rep.to_json(), seq=self.seq),)).signed(self.key)
        return Message(f"vg/v1/{self.agent_id}/rpt", env.encode(), when)


class Setup:
    """Venues V1 (two agents, exams 09:00–11:00 and 14:00–16:00 on DAY), V2 (one agent, 10:00 on
    DAY), V3 (exams the day after), V4 (no exams); the real ingest, vault and readiness runner."""

    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.agents = {a: FakeAgent(a) for a in ("a1", "a2", "b1", "c1")}
        for venue, name in (("V1", "广州市天河区安全生产考试点"), ("V2", "越秀考点"), ("V3", "海珠考点"), ("V4", "番禺考点")):
            store.add_venue(venue, name)
        for agent_id, venue in (("a1", "V1"), ("a2", "V1"), ("b1", "V2"), ("c1", "V3")):
            store.enroll_agent(agent_id, venue, keys.public_b64(self.agents[agent_id].key))
        store.enroll_agent("a9", "V1", keys.public_b64(keys.new_private_key()))
        with store.engine.begin() as conn:  # a revoked agent is not asked
            conn.execute(schema.agents.update().where(schema.agents.c.id == "a9").values(revoked=True))
        add_sessions(store, [("V1", "第1考场", at(DAY, "09:00"), at(DAY, "11:00")),
                             ("V1", "第2考场", at(DAY, "14:00"), at(DAY, "16:00")),
                             ("V2", "第1考场", at(DAY, "10:00"), at(DAY, "11:30")),
                             ("V3", "第1考场", at(rd.next_day(DAY), "09:00"), at(rd.next_day(DAY), "11:00"))])
        self.ckey = keys.new_private_key()
        self.vault_key = keys.new_private_key()
        self.vault = Vault(tmp / "vault", self.vault_key)
        self.ingestor = Ingestor(store, self.vault, self.ckey)
        self.ingestor.load()
        self.runner = ReadinessRunner(store, self.vault, self.ckey, ReadinessSection(), TZ)

    def answer(self, agent_id: str, round_id: int, when: float, **kw: Any) -> None:
        self.ingestor.handle([self.agents[agent_id].report(round_id, when, **kw)])

    def round_for(self, venue: str, now: float, by: str = "张三") -> int:
        """An on-demand round, sent at ``now``."""
        rid = rs.request_round(self.store, venue, DAY, by, now)
        self.runner.send(now)
        return rid

    def report(self, round_id: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(schema.venue_reports).where(schema.venue_reports.c.round_id == round_id)).mappings().first()
        return dict(row) if row else None

    def seals(self, venue: str = "V1") -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(schema.seals).where(schema.seals.c.venue_id == venue)
                                                  .order_by(schema.seals.c.id)).mappings()]


def add_sessions(store: Store, sessions: list[tuple[str, str, float, float]]) -> None:
    with store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=0, imported_by="test", source="test", sha256="0" * 64, months=[], sessions=len(sessions))).inserted_primary_key[0]
        for n, (venue, room, start, end) in enumerate(sessions):
            conn.execute(schema.exam_sessions.insert().values(version_id=version, session_id=f"S{n}", venue_id=venue, room=room,
                                                              subject="低压电工作业", start=start, end=end))


@pytest.fixture
def s(store: Store, tmp_path: Path) -> Setup:
    return Setup(store, tmp_path)


# -- rounds ----------------------------------------------------------------------------------

def test_rounds_open_at_the_configured_time_for_venues_with_exams_tomorrow_only(s: Setup) -> None:
    """Nothing at 13:59 the day before; at 14:00 one round each for V1 and V2 (exams tomorrow),
    none for V3 (exams the day after) or V4 (none); a second look opens nothing more."""
    assert s.runner.schedule(at(EVE, "13:59")) == []
    opened = s.runner.schedule(at(EVE, "14:00"))
    got = {r["id"]: r for r in rs.rounds(s.store)}
    assert sorted((got[i]["venue_id"], got[i]["exam_day"], got[i]["requested_by"], got[i]["state"]) for i in opened) == [
        ("V1", DAY, "schedule", "requested"), ("V2", DAY, "schedule", "requested")]
    assert s.runner.schedule(at(EVE, "18:00")) == []
    assert s.runner.schedule(at(DAY, "08:00")) == []  # the exam day itself: already asked
    late = ReadinessRunner(s.store, s.vault, s.ckey, ReadinessSection(time="16:30"), TZ)
    assert late.schedule(at(DAY, "16:29")) == [] and len(late.schedule(at(DAY, "16:30"))) == 1  # V3, for the day after


def test_a_missed_round_is_caught_up_before_the_first_exam_only(s: Setup) -> None:
    """A collector that was down at 14:00 asks on the exam morning, but only venues whose first
    exam has not begun: V2 (10:00) at 09:30, not V1 (09:00)."""
    opened = s.runner.schedule(at(DAY, "09:30"))
    assert [(r["venue_id"], r["exam_day"]) for r in rs.rounds(s.store) if r["id"] in opened] == [("V2", DAY)]


def test_commands_are_signed_by_the_collector_and_addressed_to_each_agent(s: Setup) -> None:
    """One command per non-revoked agent of the venue, on its own cmd topic, not retained, signed by
    the collector key, carrying the round, venue, exam day and the deadline; none while offline."""
    now = at(EVE, "14:00")
    rid = rs.request_round(s.store, "V1", DAY, "市考试中心", now)
    offline = ReadinessRunner(s.store, s.vault, s.ckey, ReadinessSection(scheduled=False), TZ, connected=lambda: False)
    assert offline.tick(now) == [] and rs.rounds(s.store)[0]["state"] == "requested"
    out = s.runner.send(now + 1)
    assert [(topic, retain) for topic, _, retain in out] == [("vg/v1/a1/cmd", False), ("vg/v1/a2/cmd", False)]
    for (topic, payload, _), agent_id in zip(out, ("a1", "a2")):
        cmd = parse_command(payload, s.ckey.public_key(), agent_id)
        assert (cmd.round_id, cmd.venue_id, cmd.exam_day, cmd.deadline, cmd.issued_at) == (rid, "V1", DAY, now + 1 + 1800, now + 1)
    with pytest.raises(ProtocolError, match="command for"):
        parse_command(out[0][1], s.ckey.public_key(), "a2")
    with pytest.raises(ProtocolError) as exc:
        parse_command(out[0][1], keys.new_private_key().public_key(), "a1")
    assert exc.value.reason == "bad_signature"
    (rnd,) = rs.rounds(s.store)
    assert (rnd["state"], rnd["agents"], rnd["deadline"]) == ("sent", ["a1", "a2"], now + 1 + 1800)
    assert s.runner.send(now + 2) == []  # sent once


# -- venue reports ---------------------------------------------------------------------------

def test_every_item_passing_makes_a_pass_and_seals_until_the_last_exam(s: Setup) -> None:
    """Both agents pass → PASS at the later answer's arrival; the seal runs to 16:00 (the day's
    last exam), keeps the merged baseline and points at the report; the report is a signed vault note."""
    now = at(EVE, "14:00")
    rid = s.round_for("V1", now)
    s.answer("a1", rid, now + 30)
    s.runner.tick(now + 31)
    assert s.report(rid) is None  # a2 has not answered, the deadline is far
    s.answer("a2", rid, now + 45)
    s.runner.tick(now + 46)
    rep = s.report(rid)
    assert (rep["result"], rep["completed_at"], rep["fixed"]) == ("pass", now + 45, [])
    assert [(a["agent_id"], a["result"]) for a in rep["agents"]] == [("a1", "pass"), ("a2", "pass")]
    assert all(a["vault_index"] is not None and a["record_id"] for a in rep["agents"])
    assert [i["item"] for i in rep["items"]] == list(ITEMS) and {i["result"] for i in rep["items"]} == {"pass"}
    (seal,) = s.seals()
    assert (seal["sealed_at"], seal["until"], seal["report_id"], seal["changes"], seal["replaced_by"]) == (
        now + 45, at(DAY, "16:00"), rep["id"], [], None)
    assert seal["baseline"]["devices"] == {"00:11:22:33:44:01": "192.0.2.21"}
    assert seal["baseline"]["hosts"] == {"a1": {"eth0": ["192.0.2.11/24"]}, "a2": {"eth0": ["192.0.2.12/24"]}}
    assert seal["baseline"]["config_versions"] == {"a1": 3, "a2": 3}
    assert rs.rounds(s.store)[0]["state"] == "complete"

    leaf = rep["vault_index"]
    assert leaf is not None
    entry = next(e for e in s.vault.entries(leaf, internal=True) if e.i == leaf)
    note = json.loads(entry.payload)
    assert entry.topic == READINESS_TOPIC == "vault/readiness"
    assert frames.check_note(note, {keys.public_b64(s.vault_key): s.vault_key.public_key()}) is None
    assert (note["kind"], note["venue_id"], note["exam_day"], note["result"], note["seal"]["until"]) == (
        "readiness.venue_report", "V1", DAY, "pass", at(DAY, "16:00"))
    assert s.vault.verify() == s.vault.size
    assert s.runner.vault_reports(now + 50) == 0  # vaulted once


def test_one_failing_item_fails_the_venue_and_names_it(s: Setup) -> None:
    """a2's cameras fail: the venue fails on exactly that item, with a2's words; nothing is sealed."""
    now = at(EVE, "14:00")
    rid = s.round_for("V1", now)
    s.answer("a1", rid, now + 30)
    s.answer("a2", rid, now + 40, fail={"cameras": "第1考场摄像头 00:11:22:33:44:01 无法取流（RTSP 超时）"})
    s.runner.tick(now + 41)
    rep = s.report(rid)
    assert rep["result"] == "fail" and rd.failed_items(rep["items"]) == ["cameras"]
    cams = next(i for i in rep["items"] if i["item"] == "cameras")
    assert [(a["agent_id"], a["result"]) for a in cams["agents"]] == [("a1", "pass"), ("a2", "fail")]
    assert "RTSP 超时" in cams["agents"][1]["seen"]
    assert s.seals() == []


def test_a_silent_agent_is_no_report_after_the_deadline(s: Setup) -> None:
    """a2 never answers: the V1 report waits until the deadline, then fails with 无报告 for a2; V2's
    only agent is silent too: V2's result is no_report. Never silence, never a pass."""
    now = at(EVE, "14:00")
    r1, r2 = s.round_for("V1", now), s.round_for("V2", now)
    s.answer("a1", r1, now + 30)
    s.runner.tick(now + 1799)
    assert s.report(r1) is None and s.report(r2) is None
    s.runner.tick(now + 1800)
    v1, v2 = s.report(r1), s.report(r2)
    assert (v1["result"], v1["completed_at"]) == ("fail", now + 1800)
    assert rd.silent_agents(v1["agents"]) == ["a2"]
    assert {a["result"] for i in v1["items"] for a in i["agents"] if a["agent_id"] == "a2"} == {"no_report"}
    assert (v2["result"], rd.silent_agents(v2["agents"])) == ("no_report", ["b1"])
    s.answer("a2", r1, now + 1900)  # too late: kept as evidence, no part of the verdict
    s.runner.tick(now + 1901)
    late = [r for r in _agent_reports(s.store) if r["agent_id"] == "a2"]
    assert [(r["round_id"], r["late"]) for r in late] == [(r1, True)]
    assert s.report(r1)["result"] == "fail"


def _agent_reports(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.agent_reports).order_by(schema.agent_reports.c.id)).mappings()]


def test_a_report_for_another_venues_round_is_not_counted(s: Setup) -> None:
    """b1 (V2) answering V1's round is kept without a round: it cannot make V1 pass."""
    now = at(EVE, "14:00")
    rid = s.round_for("V1", now)
    s.answer("b1", rid, now + 10)
    s.runner.tick(now + 11)
    assert [(r["agent_id"], r["round_id"]) for r in _agent_reports(s.store)] == [("b1", None)]
    assert s.report(rid) is None


def recheck_day(s: Setup) -> tuple[int, int, int]:
    """Pass (seal 1) → a re-check fails on cameras → the venue fixes it, passes again with a new
    device and a readdressed one (seal 2)."""
    now = at(EVE, "14:00")
    r1 = s.round_for("V1", now)
    s.answer("a1", r1, now + 10)
    s.answer("a2", r1, now + 20)
    s.runner.tick(now + 21)
    r2 = s.round_for("V1", now + 3600, by="市考试中心")
    s.answer("a1", r2, now + 3610, fail={"cameras": "第1考场摄像头离线"})
    s.answer("a2", r2, now + 3620)
    s.runner.tick(now + 3621)
    r3 = s.round_for("V1", now + 7200, by="考点网管")
    def changed(n: int, config_version: int) -> dict[str, Any]:
        return {"devices": {"00:11:22:33:44:01": "192.0.2.22", "02:11:22:33:44:66": "192.0.2.90"},
                "host": {"eth0": [f"192.0.2.1{n}/24"]}, "cameras": {"00:11:22:33:44:01": {"room": "第1考场"}},
                "recorders": {"nvr1": {"channels": 4}}, "config_version": config_version}

    s.answer("a1", r3, now + 7210, baseline=changed(1, 4))
    s.answer("a2", r3, now + 7220, baseline=changed(2, 3))
    s.runner.tick(now + 7221)
    return r1, r2, r3


def test_a_recheck_reseals_with_its_changes_and_shows_fixed_items(s: Setup) -> None:
    """The third report passes and lists cameras as fixed (已整改); the second seal lists what
    changed and the first points to it; all three reports are kept."""
    r1, r2, r3 = recheck_day(s)
    assert [s.report(r)["result"] for r in (r1, r2, r3)] == ["pass", "fail", "pass"]
    assert s.report(r3)["fixed"] == ["cameras"] and s.report(r2)["fixed"] == []
    first, second = s.seals()
    assert first["replaced_by"] == second["id"] and second["replaced_by"] is None
    assert second["report_id"] == s.report(r3)["id"] and second["until"] == at(DAY, "16:00")
    assert [(c["what"], c["key"], c["before"], c["after"]) for c in second["changes"]] == [
        ("device_added", "02:11:22:33:44:66", None, "192.0.2.90"),
        ("device_readdressed", "00:11:22:33:44:01", "192.0.2.21", "192.0.2.22"),
        ("config_version", "a1", 3, 4)]
    view = rs.venue_day(s.store, "V1", DAY, TZ)
    assert (view["status"], len(view["reports"]), view["seal"]["id"]) == ("pass", 3, second["id"])


def test_seal_changes_cover_hosts_cameras_and_recorders() -> None:
    """Every kind of baseline difference is named."""
    before = {"devices": {"m1": "192.0.2.1", "m2": "192.0.2.2"}, "hosts": {"a1": {"eth0": ["192.0.2.10/24"]}},
              "cameras": {"c1": {"x": 1}, "c2": {}}, "recorders": {"r1": {"ch": 4}}, "config_versions": {"a1": 1}}
    after = {"devices": {"m1": "192.0.2.1"}, "hosts": {"a1": {"eth0": ["192.0.2.11/24"], "wlan0": ["10.0.0.2/24"]}},
             "cameras": {"c1": {"x": 2}, "c3": {}}, "recorders": {}, "config_versions": {"a1": 1}}
    probed = {**after, "cameras": {"c1": {"x": 2, "level": 2, "status": "up"}, "c3": {"level": 3}}}
    assert rd.seal_changes(after, probed) == []  # what a probe reached is no change of the camera
    assert [(c["what"], c["key"]) for c in rd.seal_changes(before, after)] == [
        ("device_removed", "m2"), ("host_address", "a1/eth0"), ("host_address", "a1/wlan0"),
        ("camera_added", "c3"), ("camera_removed", "c2"), ("camera_changed", "c1"), ("recorder_removed", "r1")]


# -- pages, XLSX, CLI ------------------------------------------------------------------------

def test_printable_page_overview_and_xlsx(s: Setup) -> None:
    """The A4 page is Chinese, names the sessions, each item per agent, the fixed item, the seal and its
    changes and all three reports; the overview lists V1 and V2 for the day; the XLSX holds the rows."""
    from openpyxl import load_workbook

    recheck_day(s)
    client = TestClient(create_app(s.store, tz=TZ))
    add_user(s.store, "kaowu", "viewer")  # the pages need a login (issue 8)
    assert login(client, "kaowu").status_code == 303
    page = client.get(f"/readiness/V1/{DAY}").text
    assert '<html lang="zh-CN">' in page and "@page" in page and "size: A4" in page
    assert "考点考前准备检查报告" in page and "广州市天河区安全生产考试点" in page and "第2考场" in page and "14:00–16:00" in page
    items = page.split('id="items"')[1].split("</table>")[0]
    assert all(t in items for t in ("考场摄像头", "监控录像机", "录像进度", "通过", "a1", "a2"))
    assert "已整改" in items.split('data-item="cameras"')[1].split("</tr>")[0]
    assert "新增设备 02:11:22:33:44:66（192.0.2.90）" in page and "设备 00:11:22:33:44:01 地址变更：192.0.2.21 → 192.0.2.22" in page
    history = page.split('id="history"')[1].split("</table>")[0]
    assert history.count("data-round=") == 3 and "不通过" in history and "第1考场摄像头离线" in history
    assert "考点网管" in history and "已签名写入证据库" in page

    overview = client.get(f"/readiness?day={DAY}").text
    v1 = overview.split('data-venue="V1"')[1].split("</tr>")[0]
    v2 = overview.split('data-venue="V2"')[1].split("</tr>")[0]
    assert "通过" in v1 and "2026-12-04 16:00:20" in v1 and 'data-venue="V3"' not in overview
    # The scheduler in the runner's ticks asked V2 at 14:00:21; b1 never answered.
    assert "无报告" in v2 and "无报告的代理：b1" in v2 and "考场摄像头" not in v2
    assert 'href="/readiness"' in client.get("/").text
    assert client.get("/readiness?day=2026-13-01").status_code == 400
    assert client.get(f"/readiness/NOPE/{DAY}").status_code == 404

    resp = client.get(f"/readiness/V1/{DAY}.xlsx")
    assert resp.headers["content-type"].startswith("application/vnd.openxmlformats")
    wb = load_workbook(io.BytesIO(resp.content))
    rows = [tuple(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
    assert ("检查结果", "通过") in [r[:2] for r in rows]
    assert ("考场摄像头", "通过", "a1", "通过", "正常", None, "已整改") in rows
    assert len([r for r in rows if r[2] in ("a1", "a2")]) == 2 * len(ITEMS)
    assert [r[0] for r in wb["考试场次"].iter_rows(min_row=2, values_only=True)] == ["第1考场", "第2考场"]
    assert any("新增设备" in str(r[4]) for r in wb["封闭"].iter_rows(values_only=True))
    assert len(list(wb["历次检查"].iter_rows(min_row=2))) == 3


def test_cli_run_show_and_report(s: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` writes a requested round (the running collector sends it); `show` lists the day's
    venues with 进行中 then 通过 / 无报告; `report` prints the items and writes the page and XLSX."""
    s.runner = ReadinessRunner(s.store, s.vault, s.ckey, ReadinessSection(scheduled=False), TZ)  # on demand only
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'[collector]\ndata_dir = "data"\ndatabase_url = "{s.store.url}"\n[readiness]\ndeadline_minutes = 10\n')
    base = ["--config", str(cfg), "readiness"]
    assert main([*base, "run", "--venue", "V1", "--day", DAY, "--by", "市考试中心张三"]) == 0
    out = capsys.readouterr().out
    assert "已登记考点 V1 考试日 2026-12-05" in out and "2 个代理" in out and "10 分钟" in out
    (rnd,) = rs.rounds(s.store)
    assert (rnd["requested_by"], rnd["state"]) == ("市考试中心张三", "requested")
    assert main([*base, "run", "--venue", "V4", "--day", DAY]) == 0
    assert "没有考试场次" in capsys.readouterr().out
    assert main([*base, "run", "--venue", "NOPE"]) == 1
    assert "unknown venue" in capsys.readouterr().err
    assert main([*base, "show", "--day", "12/05"]) == 2
    assert main([*base, "show", "--day", DAY]) == 0
    assert "进行中" in capsys.readouterr().out

    now = at(EVE, "15:00")
    s.runner.send(now)
    s.answer("a1", rnd["id"], now + 5, fail={"logs": "日志 /var/log/exam.log 被删除"})
    s.answer("a2", rnd["id"], now + 6)
    s.runner.tick(now + 7)
    s.runner.tick(now + 601)  # V4's round: no agents, no report
    assert main([*base, "show", "--day", DAY]) == 0
    out = capsys.readouterr().out
    assert "不通过" in out and "日志留存" in out and "无报告" in out and "V2" in out

    html, xlsx = tmp_path / "r.html", tmp_path / "r.xlsx"
    assert main([*base, "report", "V1", "--day", DAY, "--html", str(html), "--xlsx", str(xlsx)]) == 0
    out = capsys.readouterr().out
    assert "检查结果：不通过" in out and "日志 /var/log/exam.log 被删除" in out and "未封闭" in out
    assert "size: A4" in html.read_text(encoding="utf-8") and xlsx.stat().st_size > 0
    assert main([*base, "report", "NOPE", "--day", DAY]) == 1
