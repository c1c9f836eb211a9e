"""The pages on a seeded site (tests/web/pagekit.py), on SQLite and PostgreSQL: 总览 with its
states and live fragments, 考点详情 with camera timelines, recorders and the LAN, 违规案件 with
filters, actions, proofs and exports, 考前检查 under the same login; Chinese throughout."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from collector import readiness_store as rs
from collector.store import Store, schema
from collector.store.store import Batch
from collector.vault.prove import check
from collector.vault.wiring import vault_key
from collector.web import accounts
from protocol import keys
from tests.web.pagekit import CAM1, CAM2, NOW, NVR, STRANGER, TODAY, TOMORROW, Site, add_case, at

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "collector" / "web"


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Site]:
    made = Site(store, tmp_path / "data")
    yield made
    made.close()


def _between(html: str, start: str, end: str = "</tr>") -> str:
    """The HTML from ``start`` to the next ``end``."""
    assert start in html, start
    return html.split(start, 1)[1].split(end, 1)[0]


def _case_status(store: Store, case_id: int) -> str:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(schema.cases.c.status).where(schema.cases.c.id == case_id)).scalar_one()


# -- 总览 -------------------------------------------------------------------------------------------

def test_overview_colours_each_venue_by_its_state(site: Site) -> None:
    """违规 outranks 离线 outranks 警告 (failed readiness) outranks 正常; exams, open violations, offline
    agents and tomorrow's readiness are listed, in Chinese."""
    page = site.client("admin").get("/").text
    assert '<html lang="zh-CN">' in page and "总览" in page and "/static/pages.css" in page
    states = dict(re.findall(r'<li class="vg-tile [^"]*" data-venue="(V\d)" data-state="(\w+)"', page))
    assert states == {"V1": "violation", "V2": "offline", "V3": "warning", "V4": "ok"}
    assert "违规" in _between(page, 'data-venue="V1" data-state', "</li>")
    assert "离线" in _between(page, 'data-venue="V2" data-state', "</li>")
    assert "警告" in _between(page, 'data-venue="V3" data-state', "</li>")
    assert "正常" in _between(page, 'data-venue="V4" data-state', "</li>")
    today = _between(page, 'data-day="today"', "</table>")
    tomorrow = _between(page, 'data-day="tomorrow"', "</table>")
    assert "广州市天河区安全生产考试点" in today and "第1考场、第2考场" in today and "09:00–16:00" in today
    assert all(f'data-venue="{v}"' in tomorrow for v in ("V1", "V2", "V3")) and 'data-venue="V4"' not in tomorrow
    violations = _between(page, 'id="open-violations"', "</table>")
    assert f'data-case="{site.case_ids["v1_recorder"]}"' in violations and "考点监控录像机未处于常开状态" in violations
    assert f'data-case="{site.case_ids["v2_device"]}"' not in violations  # a warning, not a violation
    assert 'data-agent="b1"' in _between(page, 'id="offline-agents"', "</table>")
    ready = _between(page, 'id="readiness-tomorrow"', "</table>")
    assert "不通过" in _between(ready, 'data-venue="V3"') and "通过" in _between(ready, 'data-venue="V1"')
    assert "未检查" in _between(ready, 'data-venue="V2"')
    assert 'id="ov-dead_letters"' in page and 'data-live="/api/v1/live?page=overview"' in page


def test_venue_operator_sees_only_its_venue(site: Site) -> None:
    """The operator's overview has one tile, its own exams and cases, and no refused-message counters."""
    page = site.client("venue").get("/").text
    assert re.findall(r'data-venue="(V\d)" data-state', page) == ["V1"]
    assert 'id="ov-dead_letters"' not in page and 'data-agent="b1"' not in page
    data = site.client("venue").get("/api/v1/overview").json()
    assert [v["id"] for v in data["venues"]] == ["V1"] and data["dead_letters"] == {}
    assert {e["venue_id"] for e in data["events"]} == {"V1"}
    assert [r["venue_id"] for r in data["exams"]["tomorrow"]] == ["V1"]
    site.app.state.ctx = dataclasses.replace(site.app.state.ctx, live_seconds=0.2, live_interval=0.1)
    live = _events(site.client("venue").get("/api/v1/live?page=overview").text)
    ids = {d["id"] for e, d in live if e == "fragment"}
    assert "ov-grid" in ids and "ov-dead_letters" not in ids
    assert 'data-venue="V2"' not in "".join(d["html"] for e, d in live if e == "fragment")


def test_overview_api_carries_the_page_data(site: Site) -> None:
    """Counts per state, tiles with agents, events: what the page shows, as JSON."""
    data = site.client("viewer").get("/api/v1/overview?limit=3").json()
    assert data["counts"] == {"ok": 1, "warning": 1, "violation": 1, "offline": 1}
    v1 = next(v for v in data["venues"] if v["id"] == "V1")
    assert (v1["violations"], v1["warnings"], v1["readiness_tomorrow"], v1["sessions_today"]) == (1, 0, "pass", 2)
    assert [a["id"] for a in v1["agents"]] == ["a1", "a2"] and len(data["events"]) == 3
    assert (data["today"], data["tomorrow"]) == (TODAY, TOMORROW)
    assert [a["id"] for a in data["offline_agents"]] == ["b1"]


def test_overview_follows_an_agent_going_offline_and_a_case_opening(site: Site) -> None:
    """V4 turns 离线 when its agent drops, and 违规 when a violation case opens there."""
    client = site.client("admin")
    batch = Batch()
    batch.update_agent("d1", online=False)
    site.store.commit(batch)
    assert _tile_state(client, "V4") == "offline"
    add_case(site.store, "V4", 510, "open", NOW - 60)
    assert _tile_state(client, "V4") == "violation"


def _tile_state(client: TestClient, venue: str) -> str:
    return next(v["state"] for v in client.get("/api/v1/overview").json()["venues"] if v["id"] == venue)


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (event, data)."""
    out = []
    for block in body.split("\n\n"):
        name = re.search(r"^event: (.+)$", block, re.M)
        data = re.search(r"^data: (.+)$", block, re.M)
        if name and data:
            out.append((name.group(1), json.loads(data.group(1))))
    return out


def test_live_stream_sends_every_fragment_then_only_what_changed(site: Site) -> None:
    """On connecting every overview fragment comes once; when an agent drops during the stream, the
    grid, counts and offline list come again with the change, the unchanged ones do not."""
    site.app.state.ctx = dataclasses.replace(site.app.state.ctx, live_seconds=2.0, live_interval=0.1)
    client = site.client("admin")

    def drop() -> None:
        batch = Batch()
        batch.update_agent("d1", online=False)
        site.store.commit(batch)

    timer = threading.Timer(0.8, drop)
    timer.start()
    r = client.get("/api/v1/live?page=overview", headers={"X-VG-Poll": "1"})
    timer.join()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    first = [d["id"] for e, d in events[:7]]
    assert sorted(first) == sorted(f"ov-{p}" for p in ("counts", "grid", "exams", "violations", "offline",
                                                        "readiness", "dead_letters"))
    later = {d["id"]: d["html"] for e, d in events[7:] if e == "fragment"}
    assert set(later) == {"ov-counts", "ov-grid", "ov-offline"}
    assert 'data-venue="V4" data-state="offline"' in later["ov-grid"] and 'data-agent="d1"' in later["ov-offline"]
    assert events[-1][0] == "bye"


def test_live_stream_of_a_venue_page(site: Site) -> None:
    """The venue page's agents, cases and events sections; an operator cannot watch another venue."""
    site.app.state.ctx = dataclasses.replace(site.app.state.ctx, live_seconds=0.3, live_interval=0.1)
    r = site.client("venue").get("/api/v1/live?page=venue&venue=V1")
    ids = [d["id"] for e, d in _events(r.text) if e == "fragment"]
    assert ids == ["vn-agents", "vn-cases", "vn-events"]
    assert site.client("venue").get("/api/v1/live?page=venue&venue=V2").status_code == 404
    assert site.client("venue").get("/api/v1/live?page=venue").status_code == 400


# -- 考点详情 -----------------------------------------------------------------------------------------

def test_venue_page_shows_timelines_recorders_lan_agents_events_cases(site: Site) -> None:
    page = site.client("admin").get("/venues/V1").text
    assert "广州市天河区安全生产考试点（V1）" in page and "今日考试场次" in page
    cam1 = _between(page, f'data-camera="{CAM1}"', 'class="vg-window-note"')
    assert 'data-session="S-V1-1"' in cam1 and 'data-off-seconds="1200"' in cam1 and "s-lead" in cam1
    assert 'class="seg s-off"' in cam1 and "08:45" in cam1 and "11:00" in cam1
    assert 'data-status="stalled"' in _between(page, f'data-camera="{CAM2}"', ">")
    assert "今日该考场无考试" in _between(page, 'data-room="第2考场"', "</div>\n</div>") or "今日 1 场考试" in page
    recorder = _between(page, f'data-recorder="{NVR}"')
    assert "空间不足（剩余 12.5 GB）" in recorder and "1/2 个通道在录像" in recorder and "未在录像的通道：2" in recorder
    assert "hdd1" in recorder and "DS-7608" in recorder
    assert "离线" in recorder  # recorder.down at 09:20 is newer than the 09:00 snapshot that said 在线
    stranger = _between(page, f'data-mac="{STRANGER}"')
    assert 'class="vg-unregistered"' in page and "192.0.2.99" in stranger and "TP-Link" in stranger
    assert "未登记设备 1 台" in page
    assert "地址被变更：192.0.2.77" in _between(page, f'<tr data-mac="{CAM2}"')
    assert "未见" in _between(page, f'<tr data-mac="{NVR}"')
    assert "在线" in _between(page, 'data-agent="a1"')
    assert "摄像头离线" in _between(page, 'id="events"', "</table>")
    assert f'data-case="{site.case_ids["v1_recorder"]}"' in _between(page, 'id="venue-cases"', "</table>")


def test_venue_api_timeline_segments(site: Site) -> None:
    """Camera 1 in the 08:45–11:00 window: on, off from 08:50 (back-dated), on from 09:10, unknown future."""
    data = site.client("viewer").get("/api/v1/venues/V1").json()
    room = next(r for r in data["rooms"] if r["room"] == "第1考场")
    cam = next(c for c in room["cameras"] if c["mac"] == CAM1)
    (window,) = cam["windows"]
    assert window["lead_start"] == at(TODAY, "08:45") and window["end"] == at(TODAY, "11:00")
    assert [(s["status"], s["start"], s["end"]) for s in window["segments"]] == [
        ("on", at(TODAY, "08:45"), at(TODAY, "08:50")), ("off", at(TODAY, "08:50"), at(TODAY, "09:10")),
        ("on", at(TODAY, "09:10"), NOW)]
    assert cam["status"] == "on" and window["off_seconds"] == 1200
    assert [d["mac"] for d in data["lan"]["unregistered"]] == [STRANGER]
    assert data["recorders"][0]["disk_low"] and data["recorders"][0]["free_gb"] == 12.5
    assert site.client("viewer").get("/api/v1/venues/NOPE").status_code == 404


# -- 违规案件 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("", {"v1_recorder", "v1_camera", "v2_device", "v3_log"}),
    ("venue=V1", {"v1_recorder", "v1_camera"}),
    ("rule=510", {"v1_recorder"}),
    ("article=三(二)5", {"v1_camera", "v2_device"}),
    ("article=二(四)", {"v2_device", "v3_log"}),  # 110 quotes 二(四) as an `also` clause
    ("severity=warning", {"v2_device"}),
    ("state=closed", {"v1_camera", "v3_log"}),
    ("status=confirmed", {"v3_log"}),
    ("from=2026-12-01&to=2026-12-31", {"v1_recorder", "v1_camera", "v2_device"}),
    ("from=2025-06-01&to=2025-06-01", {"v3_log"}),
    ("venue=V1&state=open", {"v1_recorder"}),
])
def test_case_filters(site: Site, query: str, expected: set[str]) -> None:
    """Each filter narrows the page and the API alike."""
    names = {v: k for k, v in site.case_ids.items()}
    page = site.client("admin").get(f"/cases?{query}").text
    shown = {names[int(i)] for i in re.findall(r'<tr data-case="(\d+)"', _between(page, 'id="cases"', "</table>"))} \
        if 'id="cases"' in page else set()
    assert shown == expected
    api = site.client("admin").get(f"/api/v1/cases?{query}").json()
    assert {names[c["id"]] for c in api["cases"]} == expected


def test_case_list_in_chinese_with_annual_counts_and_scope(site: Site) -> None:
    page = site.client("viewer").get("/cases").text
    assert "违规案件" in page and "导出 Excel" in page and "持续中" in page and "已认定" in page
    assert "2025 年" in _between(page, 'id="annual"', "</table>") and "1" in _between(page, '<tr data-venue="V3">')
    assert site.client("admin").get("/cases?from=2026-13-01").status_code == 400
    assert "日期 2026-13-01 无效" in site.client("admin").get("/cases?from=2026-13-01").text
    assert site.client("admin").get("/api/v1/cases?severity=bad").status_code == 400
    own = site.client("venue").get("/api/v1/cases?venue=V2").json()  # the operator's scope cannot be widened
    assert own["cases"] == [] and own["annual"] == {}
    assert {c["venue_id"] for c in site.client("venue").get("/api/v1/cases").json()["cases"]} == {"V1"}
    assert site.client("admin").get("/api/v1/cases").json()["annual"] == {"V3": {"2025": 1}}


def test_a_withdrawn_case_says_so_on_its_page(site: Site) -> None:
    """A case the rulebook closed because late evidence showed it was never one is marked 撤回."""
    from collector import cases

    cid = site.case_ids["v1_camera"]
    with site.store.engine.begin() as conn:
        cases.record_action(conn, cid, "closed", "rulebook", "rulebook", "", NOW, {"withdrawn": True})
    actions = _between(site.client("admin").get(f"/cases/{cid}").text, 'id="actions"', "</table>")
    assert actions.count("撤回") == 1 and "迟到的证据" in actions


def test_case_page_quotes_the_clause_session_and_evidence(site: Site) -> None:
    cid = site.case_ids["v1_camera"]
    page = site.client("admin").get(f"/cases/{cid}").text
    clause = _between(page, 'id="clause"', "</blockquote>")
    assert "考试全过程未开启或擅自关闭网络摄像机设备" in clause and "三(二)5" in clause
    assert 'class="vg-clause vg-also"' in page and "五(二)" in page
    assert "第1考场 · 低压电工作业 · 2026-12-05 09:00:00–11:00（场次 S-V1-1）" in page
    evidence = _between(page, 'id="evidence"', "</ol>")
    assert f'data-leaf="{site.leaves["camera.down"]}"' in evidence and "摄像头离线" in evidence
    assert f"证据库第 {site.leaves['camera.down']} 条" in evidence and "timed out" in evidence
    assert "立案" in _between(page, 'id="actions"', "</table>") and "规则引擎" in page
    forms = lambda role: set(re.findall(r'id="form-(\w+)"', site.client(role).get(f"/cases/{cid}").text))  # noqa: E731
    assert forms("admin") == {"acknowledge", "confirm", "dismiss"}
    assert forms("viewer") == {"confirm", "dismiss"}
    assert forms("venue") == {"acknowledge"}
    assert site.client("venue2").get(f"/cases/{cid}").status_code == 404
    detail = site.client("viewer").get(f"/api/v1/cases/{cid}").json()
    assert detail["may"] == ["confirm", "dismiss"] and detail["session"]["room"] == "第1考场"
    assert detail["evidence"][0]["data"]["error"] == "timed out"


def test_acknowledge_then_confirm_through_the_forms(site: Site) -> None:
    """The operator explains, the viewer confirms: status moves, case_actions and the audit trail get
    a row each, the annual count moves; a third action is refused with the reason in Chinese."""
    cid = site.case_ids["v1_recorder"]
    op = site.client("venue")
    r = op.post(f"/cases/{cid}/actions", data={"action": "acknowledge", "reason": "录像机电源故障，已更换",
                                               "csrf_token": site.csrf("venue")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{cid}?done=acknowledge"
    assert "已记录考点说明" in op.get(r.headers["location"]).text
    assert _case_status(site.store, cid) == "acknowledged"
    viewer = site.client("viewer")
    empty = viewer.post(f"/cases/{cid}/actions", data={"action": "confirm", "reason": " ", "csrf_token": site.csrf("viewer")})
    assert empty.status_code == 400 and "请填写理由" in empty.text
    r = viewer.post(f"/cases/{cid}/actions", data={"action": "confirm", "reason": "非特殊情况关机",
                                                   "csrf_token": site.csrf("viewer")}, follow_redirects=False)
    assert r.status_code == 303 and _case_status(site.store, cid) == "confirmed"
    with site.store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.case_actions.c.action, schema.case_actions.c.actor, schema.case_actions.c.role,
                                      schema.case_actions.c.reason).where(schema.case_actions.c.case_id == cid)
                            .order_by(schema.case_actions.c.id)).all()
    assert [tuple(r) for r in rows[1:]] == [("acknowledge", "th-operator", "venue", "录像机电源故障，已更换"),
                                            ("confirm", "kaowu-viewer", "viewer", "非特殊情况关机")]
    audit = [(a["username"], a["action"], a["ok"]) for a in accounts.audit_rows(site.store, 100) if a["action"].startswith("case.")]
    assert ("th-operator", "case.acknowledge", True) in audit and ("kaowu-viewer", "case.confirm", True) in audit
    again = viewer.post(f"/cases/{cid}/actions", data={"action": "dismiss", "reason": "改判", "csrf_token": site.csrf("viewer")})
    assert again.status_code == 409 and "不允许该操作" in again.text and "已认定" in again.text
    assert site.client("admin").get("/api/v1/cases").json()["annual"]["V1"] == {"2026": 1}


def test_an_admin_acknowledging_is_recorded_as_admin(site: Site) -> None:
    """An authority admin may acknowledge for a venue; the record names the admin's real role, not
    "venue", and the case page shows who acted in which role."""
    cid = site.case_ids["v1_recorder"]
    r = site.client("admin").post(f"/cases/{cid}/actions", data={"action": "acknowledge", "reason": "电话核实：停电",
                                                                  "csrf_token": site.csrf("admin")}, follow_redirects=False)
    assert r.status_code == 303
    with site.store.engine.connect() as conn:
        a = schema.case_actions.c
        row = conn.execute(sa.select(a.actor, a.role).where(a.case_id == cid, a.action == "acknowledge")).one()
    assert tuple(row) == ("kaowu-admin", "admin")
    actions = _between(site.client("viewer").get(f"/cases/{cid}").text, 'data-action="acknowledge"')
    assert "kaowu-admin（考试机构管理员）" in actions


def test_act_through_the_api(site: Site) -> None:
    """JSON with X-CSRF-Token; the case as it is now comes back."""
    cid = site.case_ids["v2_device"]
    r = site.client("admin").post(f"/api/v1/cases/{cid}/actions", json={"action": "dismiss", "reason": "经核实为考务人员设备"},
                                  headers={"X-CSRF-Token": site.csrf("admin")})
    assert r.status_code == 200 and r.json()["status"] == "dismissed"
    r = site.client("admin").post(f"/api/v1/cases/{cid}/actions", json={"action": "confirm", "reason": "x"},
                                  headers={"X-CSRF-Token": site.csrf("admin")})
    assert r.status_code == 409


def test_proofs_download_checks_against_the_vault_key(site: Site) -> None:
    """Each evidence leaf comes with a proof a third party can check with the vault's public key;
    actions not sealed yet are listed as unavailable, not faked."""
    cid = site.case_ids["v1_recorder"]
    r = site.client("viewer").get(f"/cases/{cid}/proofs.json")
    assert r.status_code == 200 and 'filename="case-' in r.headers["content-disposition"]
    body = r.json()
    (proof,) = body["proofs"]
    assert proof["what"] == "evidence" and proof["leaf_index"] == site.leaves["recorder.down"]
    assert check(proof, keys.public_b64(vault_key(site.cfg)))
    assert body["unavailable"] == []  # the opened action is not in the vault yet: nothing to prove, nothing claimed
    assert 'href="/cases/%d/proofs.json"' % cid in site.client("viewer").get(f"/cases/{cid}").text


def test_exports_open_with_openpyxl_and_csv(site: Site) -> None:
    """The exports take the list's filters; Chinese headers and words."""
    from openpyxl import load_workbook

    client = site.client("admin")
    page = client.get("/cases?venue=V1").text
    assert 'href="/cases.xlsx?venue=V1"' in page and 'href="/cases.csv?venue=V1"' in page
    r = client.get("/cases.csv?venue=V1")
    assert r.headers["content-type"].startswith("text/csv") and r.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["编号", "考点编号", "考点名称", "规则编号"]
    assert sorted(int(x[0]) for x in rows[1:]) == sorted([site.case_ids["v1_recorder"], site.case_ids["v1_camera"]])
    assert {x[6] for x in rows[1:]} == {"违规"} and {x[7] for x in rows[1:]} == {"持续中", "已消除"}
    wb = load_workbook(io.BytesIO(client.get("/cases.xlsx?state=open").content))
    sheet = [tuple(x) for x in wb["违规案件"].iter_rows(values_only=True)]
    assert sheet[0][0] == "编号" and {x[1] for x in sheet[1:]} == {"V1", "V2"}
    assert client.get("/cases.csv?venue=V1", headers={}).status_code == 200
    assert len(list(csv.reader(io.StringIO(site.client("venue").get("/cases.csv").content.decode("utf-8-sig"))))) == 3


# -- 考前检查 -----------------------------------------------------------------------------------------

def test_readiness_pages_under_login(site: Site) -> None:
    """The table lists tomorrow's venues for the authority and only its own for an operator; the
    report is printable; the operator asks for its own check with the form."""
    table = site.client("viewer").get(f"/readiness?day={TOMORROW}").text
    assert all(f'data-venue="{v}"' in table for v in ("V1", "V2", "V3")) and "考前准备检查" in table
    own = site.client("venue").get(f"/readiness?day={TOMORROW}").text
    assert re.findall(r'<tr data-venue="(V\d)"', own) == ["V1"]
    report = site.client("venue").get(f"/readiness/V1/{TOMORROW}").text
    assert "@page" in report and "size: A4" in report and 'id="print-button"' in report and 'id="run-form"' in report
    assert 'id="run-form"' not in site.client("viewer").get(f"/readiness/V1/{TOMORROW}").text
    r = site.client("venue").post(f"/readiness/V1/{TOMORROW}/run", data={"csrf_token": site.csrf("venue")},
                                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/readiness/V1/{TOMORROW}?requested=")
    assert "已登记第" in site.client("venue").get(r.headers["location"]).text
    newest = rs.rounds(site.store, "V1", TOMORROW)[-1]
    assert (newest["requested_by"], newest["state"]) == ("th-operator", "requested")
    assert any(a["action"] == "readiness.run" and a["username"] == "th-operator" for a in accounts.audit_rows(site.store))
    api = site.client("venue").get(f"/api/v1/readiness?day={TOMORROW}").json()
    assert [v["venue_id"] for v in api["venues"]] == ["V1"] and api["venues"][0]["status"] == "pending"
    detail = site.client("admin").get(f"/api/v1/readiness/V3/{TOMORROW}").json()
    assert detail["status"] == "fail" and detail["sessions"][0]["room"] == "第1考场"


# -- API documentation, assets, layout ---------------------------------------------------------------

def test_openapi_documents_every_api(site: Site) -> None:
    spec = site.client("admin").get("/openapi.json").json()
    for path, method in (("/api/v1/overview", "get"), ("/api/v1/venues/{venue_id}", "get"), ("/api/v1/cases", "get"),
                         ("/api/v1/cases/{case_id}", "get"), ("/api/v1/cases/{case_id}/actions", "post"),
                         ("/api/v1/readiness", "get"), ("/api/v1/readiness/{venue_id}/{day}", "get"),
                         ("/api/v1/readiness/{venue_id}/{day}/run", "post"), ("/api/v1/live", "get"),
                         ("/cases/{case_id}/proofs.json", "get"), ("/cases.xlsx", "get"), ("/cases.csv", "get")):
        op = spec["paths"][path][method]
        assert op.get("summary") and op.get("description"), path
    assert "Overview" in spec["components"]["schemas"] and "VenueView" in spec["components"]["schemas"]
    assert site.client("admin").get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_assets_are_served_locally_and_nothing_comes_from_outside(site: Site) -> None:
    """pages.css and pages.js come from the collector; no template or asset names another host."""
    anon = site.anonymous()
    for asset in ("/static/pages.css", "/static/pages.js"):
        assert anon.get(asset).status_code == 200
    mine = [*WEB.glob("templates/overview*.html"), *WEB.glob("templates/venue*.html"), *WEB.glob("templates/case*.html"),
            *WEB.glob("templates/readiness*.html"), WEB / "static" / "pages.css", WEB / "static" / "pages.js"]
    for path in mine:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text(encoding="utf-8")), path
    css = (WEB / "static" / "pages.css").read_text()
    assert "@media (max-width: 1024px)" in css  # tablets get one column


def test_ui_strings_exist_in_both_catalogues() -> None:
    """Every ui_ key a page module or template names is in zh-CN and en."""
    zh = json.loads((WEB / "strings" / "zh-CN.json").read_text(encoding="utf-8"))
    en = json.loads((WEB / "strings" / "en.json").read_text(encoding="utf-8"))
    sources = [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]
    used = {k for p in sources for k in re.findall(r"[\"'](ui_[a-z0-9_]+)[\"']", p.read_text(encoding="utf-8"))}
    prefixes = {k for k in used if k.endswith("_")}  # "ui_state_" ~ state: each value is checked below
    assert used and not (used - prefixes - set(zh)) and not (used - prefixes - set(en))
    for prefix, values in (("ui_state_", ("ok", "warning", "violation", "offline")),
                           ("ui_cam_", ("on", "off", "stalled", "path", "auth", "unknown")),
                           ("ui_action_", ("opened", "escalated", "closed", "acknowledge", "confirm", "dismiss")),
                           ("ui_action_help_", ("acknowledge", "confirm", "dismiss")),
                           ("ui_case_done_", ("acknowledge", "confirm", "dismiss")), ("ui_rec_", ("up", "down", "unknown")),
                           ("ui_role_", ("camera", "recorder", "exam_server", "exam_terminal", "switch", "other"))):
        assert prefix in prefixes and all(prefix + v in zh and prefix + v in en for v in values), prefix


# -- moved from tests/collector/test_web.py (the spine's page) ---------------------------------------

def test_event_sentences_and_refused_messages_in_chinese(site: Site) -> None:
    """An event's data reads as its catalogue sentence on the venue page (raw JSON, escaped, when no
    sentence fits); the authority's overview counts refused messages by their Chinese reason."""
    from collector.store.store import DeadLetter, NewRecord

    batch = Batch()
    batch.records.append(NewRecord("d1", "V4", 1, "b", "ev", "host.address_changed", NOW - 5, NOW - 5,
                                   {"interface": "eth0", "mac": "02:00:00:00:00:01", "before": ["192.0.2.10/24"],
                                    "after": ["192.0.2.99/24"]}, "d", 100))
    batch.records.append(NewRecord("d1", "V4", 2, "b", "ev", "host.address_changed", NOW - 4, NOW - 4, {"odd": True}, "d", 101))
    batch.dead_letters.append(DeadLetter(NOW, "vg/v1/x/ev", "x", "bad_signature", "no", b"{}"))
    site.store.commit(batch)
    events = _between(site.client("admin").get("/venues/V4").text, 'id="events"', "</table>")
    assert "主机 IP 地址变更" in events and "网卡 eth0（02:00:00:00:00:01）：192.0.2.10/24 → 192.0.2.99/24" in events
    assert "{&#34;odd&#34;: true}" in events or "{&quot;odd&quot;: true}" in events
    refused = _between(site.client("admin").get("/").text, 'id="dead-letters"', "</table>")
    assert "签名无效" in refused and "<td>1</td>" in refused


def test_catalogues_have_the_same_keys() -> None:
    """Every surface's zh-CN and en catalogues define the same keys."""
    for folder in [ROOT / "collector" / "web" / "strings", ROOT / "collector" / "strings", ROOT / "agent" / "strings"]:
        zh = json.loads((folder / "zh-CN.json").read_text())
        en = json.loads((folder / "en.json").read_text())
        assert set(zh) == set(en), folder
