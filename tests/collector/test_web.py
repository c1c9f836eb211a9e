"""The minimal page: Chinese, lists venues and agents with 在线/离线, the latest events, the
dead-letter counters; the JSON API carries the same data. Message catalogues match."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from collector.store import Store
from collector.store.store import Batch, DeadLetter, NewRecord
from collector.web.app import create_app

STRINGS = Path(__file__).resolve().parents[2] / "collector" / "web" / "strings"


def _seed(store: Store) -> None:
    store.add_venue("GZ-TH01", "广州市天河区安全生产考试点")
    store.enroll_agent("srv1", "GZ-TH01", "k")
    store.enroll_agent("srv2", "GZ-TH01", "k")
    batch = Batch()
    batch.update_agent("srv1", online=True, last_seen=1.8e9, last_heartbeat=1.8e9, outbox_depth=3)
    batch.update_agent("srv2", online=False, last_seen=1.8e9)
    batch.records.append(NewRecord("srv1", "GZ-TH01", 1, "b", "ev", "host.address_changed", 1.8e9, 1.8e9,
                                   {"interface": "eth0", "mac": "02:00:00:00:00:01", "before": ["192.0.2.10/24"],
                                    "after": ["192.0.2.99/24"]}, "d", 0))
    batch.records.append(NewRecord("srv1", "GZ-TH01", 2, "b", "ev", "host.address_changed", 1.8e9, 1.8e9,
                                   {"odd": True}, "d", 1))
    batch.dead_letters.append(DeadLetter(1.8e9, "vg/v1/x/ev", "x", "bad_signature", "no", b"{}"))
    store.commit(batch)


def test_page_lists_agents_events_and_refusals_in_chinese(store: Store) -> None:
    """The page shows 在线 and 离线, the translated event, its detail, and 签名无效 with its count."""
    _seed(store)
    page = TestClient(create_app(store)).get("/").text
    assert '<html lang="zh-CN">' in page and 'http-equiv="refresh"' in page
    assert "广州市天河区安全生产考试点" in page
    row1 = page.split('data-agent="srv1"')[1].split("</tr>")[0]
    row2 = page.split('data-agent="srv2"')[1].split("</tr>")[0]
    assert "在线" in row1 and "2027-01-15" in row1 and "离线" in row2
    assert "主机 IP 地址变更" in page and "网卡 eth0（02:00:00:00:00:01）：192.0.2.10/24 → 192.0.2.99/24" in page
    assert "签名无效" in page
    assert "{&#34;odd&#34;: true}" in page or '{"odd": true}' in page  # no sentence fits: raw data, escaped


def test_api_returns_the_same_data(store: Store) -> None:
    """/api/v1/overview carries venues, agents, events and counters as JSON."""
    _seed(store)
    data = TestClient(create_app(store)).get("/api/v1/overview").json()
    agents = data["venues"][0]["agents"]
    assert [(a["id"], a["online"], a["outbox_depth"]) for a in agents] == [("srv1", True, 3), ("srv2", False, None)]
    assert [e["kind"] for e in data["events"]] == ["host.address_changed"] * 2
    assert data["dead_letters"] == {"bad_signature": 1}


def test_catalogues_have_the_same_keys() -> None:
    """Every surface's zh-CN and en catalogues define the same keys."""
    root = Path(__file__).resolve().parents[2]
    for folder in [root / "collector" / "web" / "strings", root / "collector" / "strings", root / "agent" / "strings"]:
        zh = json.loads((folder / "zh-CN.json").read_text())
        en = json.loads((folder / "en.json").read_text())
        assert set(zh) == set(en), folder


def test_page_lists_cases_open_first_in_chinese(store: Store) -> None:
    """A case the rulebook opened appears with its rule title, 违规 and 持续中; the API carries it too."""
    from collector.cases import StoreSink
    from collector.rulebook import Event, Rulebook
    from collector.rulefiles import load_rules
    from collector.rulerunner import SHIPPED_RULES
    from collector.rulewindows import MemoryCalendar

    _seed(store)
    book = Rulebook([r for r in load_rules(SHIPPED_RULES) if r.id == 510], MemoryCalendar())
    with store.engine.begin() as conn:
        book.feed(Event(1, "GZ-TH01", "srv1", "recorder.down", 1.8e9, {"recorder": "r1"}, 0), StoreSink(conn, None, 1.8e9))
    client = TestClient(create_app(store))
    row = client.get("/").text.split('data-case="1"')[1].split("</tr>")[0]
    assert "考点监控录像机未处于常开状态" in row and "违规" in row and "持续中" in row and "待处理" in row
    assert [(c["rule_id"], c["state"]) for c in client.get("/api/v1/overview").json()["cases"]] == [(510, "open")]
