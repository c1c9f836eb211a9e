"""Helpers for the browser tests (test_browser.py): Debian's Chromium driven by Playwright, the real
app served by uvicorn on a loopback port over the seeded site of :mod:`tests.web.pagekit`, a guard
that refuses every request leaving 127.0.0.1, login through the form, the folder screenshots go
to, and what the tests write into the store while a page is open (an agent dropping, a recorder
going down judged by the real rulebook, readiness rounds combined by the real readiness store).

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``apt-get install
chromium fonts-noto-cjk``, as ``deploy/dev.sh`` does), headless, without the sandbox (CI runs
as root).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import uvicorn

from collector import readiness_store as rs
from collector.broker import free_port
from collector.ingest import COLLECTOR_TOPIC
from collector.rulebook import Event
from collector.rulerunner import RulebookRunner
from collector.store import schema
from collector.store.store import Batch, NewRecord
from protocol.readiness import ITEMS, REPORT_KIND, ItemResult, Report
from tests.web import PASSWORD
from tests.web.pagekit import TZ, Site, at

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = "127.0.0.1"
DESKTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}  # portrait: the pages' one-column layout (under 1024 px)


def require_chromium() -> Path:
    """Debian's Chromium, or a failure that says how to install it (never a skip: CI must run these)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
                    "(apt-get install chromium fonts-noto-cjk; deploy/dev.sh installs both)", pytrace=False)
    return CHROMIUM


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and the printed PDF go: $VENUEGUARD_ARTIFACTS, else a pytest tmp folder."""
    given = os.environ.get("VENUEGUARD_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("browser-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


class LiveServer:
    """The app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-browser-tests", daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(site: Site) -> LiveServer:
    """Serve ``site``'s app; its live streams look for changes every 0.5 s instead of 2 s."""
    site.app.state.ctx = dataclasses.replace(site.app.state.ctx, live_interval=0.5)
    return LiveServer(site.app).start()


class OutsideGuard:
    """Routes every request of a browser context: loopback ones go on, anything else is aborted and
    remembered (the exam authority's network is closed; no asset may come from outside)."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def __call__(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOOPBACK:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()


def login(page: Any, base: str, username: str) -> None:
    """Log in through the form; the overview follows."""
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{base}/")


# -- writes made while a page is open ----------------------------------------------------------------

def _append(site: Site, rows: list[tuple[str, str, int | None, str, str, float, dict[str, Any]]]) -> list[int]:
    """Records (agent, venue, seq, stream, kind, at, data) into the vault and the index, as ingest
    writes them; return their record ids."""
    texts = [json.dumps({"agent": a, "kind": k, "at": t, "data": d}, ensure_ascii=False, sort_keys=True)
             for a, _, _, _, k, t, d in rows]
    topics = [COLLECTOR_TOPIC + "/" + a if stream == "collector" else f"vg/v1/{a}/{stream}"
              for a, _, _, stream, _, _, _ in rows]
    leaves = site.vault.append([(row[5], topic, text) for row, topic, text in zip(rows, topics, texts)])
    batch = Batch()
    for (agent, venue, seq, stream, kind, when, data), text, leaf in zip(rows, texts, leaves):
        batch.records.append(NewRecord(agent, venue, seq, "boot-browser", stream, kind, when, when + 1, data,
                                       hashlib.sha256(text.encode()).hexdigest(), leaf))
    site.store.commit(batch)
    r = schema.records.c
    with site.store.engine.connect() as conn:
        return [int(conn.execute(sa.select(r.id).where(r.vault_index == leaf)).scalar_one()) for leaf in leaves]


def agent_goes_offline(site: Site, agent: str, venue: str, when: float) -> None:
    """What ingest does on a Last Will: the agent offline and an ``agent.offline`` event, one commit."""
    _append(site, [(agent, venue, None, "collector", "agent.offline", when, {"boot": "boot1", "reason": "will"})])
    batch = Batch()
    batch.update_agent(agent, online=False)
    site.store.commit(batch)


def recorder_goes_down(site: Site, agent: str, venue: str, seq: int, recorder: str, when: float) -> int:
    """A ``recorder.down`` event indexed and judged by the shipped rulebook (rule 510, always in
    force); return the id of the case it opened."""
    data = {"recorder": recorder, "ip": "192.0.2.130", "error": "timed out", "since": when - 30}
    (record_id,) = _append(site, [(agent, venue, seq, "ev", "recorder.down", when, data)])
    with site.store.engine.connect() as conn:
        leaf = int(conn.execute(sa.select(schema.records.c.vault_index).where(schema.records.c.id == record_id)).scalar_one())
    runner = RulebookRunner(site.store)
    # Hand the runner the new event only: the seeded history already has its cases (pagekit).
    runner.feed([Event(record_id, venue, agent, "recorder.down", when, data, leaf, seq)], when + 5)
    c = schema.cases.c
    with site.store.engine.connect() as conn:
        return int(conn.execute(sa.select(c.id).where(c.venue_id == venue, c.rule_id == 510, c.state == "open")
                                .order_by(c.id.desc()).limit(1)).scalar_one())


def readiness_day(site: Site, venue: str, day: str, agents: tuple[str, ...], eve: str) -> None:
    """Two rounds for ``venue``'s exam ``day`` through the readiness store, as the running collector
    makes them: the scheduled one at 14:00 on ``eve`` fails (the last agent's 考场摄像头), a re-check
    at 16:00 passes (the cameras 已整改) and seals the venue."""
    seq = 500
    for hhmm, failing in (("14:00", {"cameras": "第1考场 2号摄像头 00:11:22:33:44:02 无法取流（RTSP 超时）"}), ("16:00", {})):
        now = at(eve, hhmm)
        round_id = rs.request_round(site.store, venue, day, "市考试中心张三" if failing else "考点网管李四", now)
        rs.mark_sent(site.store, round_id, list(agents), now + 1, now + 1800)
        rows = []
        for n, agent in enumerate(agents):
            fail = failing if n == len(agents) - 1 else {}
            items = tuple(ItemResult(i, "fail" if i in fail else "pass", fail.get(i, "正常"),
                                     "检查摄像头供电和网线，恢复取流后重新检查" if i in fail else "") for i in ITEMS)
            baseline = {"devices": {"00:11:22:33:44:01": "192.0.2.21"}, "host": {"eth0": [f"192.0.2.1{n}/24"]},
                        "cameras": {"00:11:22:33:44:01": {"room": "第1考场"}}, "recorders": {"nvr1": {"channels": 4}},
                        "config_version": 3}
            report = Report(agent, round_id, day, now + 10, now + 40 + n, items, baseline, 3)
            seq += 1
            rows.append((agent, venue, seq, "rpt", REPORT_KIND, now + 40 + n, report.to_json()))
        _append(site, rows)
        rs.take_reports(site.store)
        (rnd,) = [r for r in rs.rounds(site.store, venue, day) if r["id"] == round_id]
        assert rs.complete_round(site.store, rnd, TZ, now + 60) is not None


def case_actions(site: Site, case_id: int) -> list[tuple[str, str, str, str]]:
    """(action, actor, role, reason) of a case, in order."""
    a = schema.case_actions.c
    with site.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(a.action, a.actor, a.role, a.reason)
                                                 .where(a.case_id == case_id).order_by(a.id))]
