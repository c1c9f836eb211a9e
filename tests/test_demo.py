"""The demo on embedded defaults: broker, collector and simulated venues appear on the page
within a minute; Ctrl-C stops everything; a second start reuses the data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from collector.broker import free_port
from tests.support import ROOT, wait_for


def _start(cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "collector.cli", "demo", "--port", str(port)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


class Pages:
    """The demo's pages as its administrator sees them: logs in (password from the file the demo
    keeps) on first use, and again after a restart."""

    def __init__(self, port: int, demo_dir: Path) -> None:
        self.port, self.demo_dir = port, demo_dir
        self.client: httpx.Client | None = None

    def get(self, path: str) -> httpx.Response:
        if self.client is None:
            self.client = self._login()
        return self.client.get(path)

    def overview(self) -> dict | None:
        try:
            return self.get("/api/v1/overview?limit=500").json()
        except (httpx.HTTPError, OSError, ValueError):
            self.forget()
            return None

    def forget(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    def _login(self) -> httpx.Client:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        client.get("/login")
        password = (self.demo_dir / "demo-login.txt").read_text(encoding="utf-8").strip()
        r = client.post("/login", data={"username": "demo", "password": password, "next": "/",
                                        "csrf_token": client.cookies.get("vg_csrf") or ""})
        if r.status_code != 303:
            client.close()
            raise httpx.HTTPError(f"login failed: {r.status_code}")
        return client


def _ready(pages: Pages) -> bool:
    data = pages.overview()
    if not data:
        return False
    agents = [a for v in data["venues"] for a in v["agents"]]
    kinds = {e["kind"] for e in data["events"]}
    return len(agents) == 4 and all(a["online"] for a in agents) and "host.address_changed" in kinds


def test_demo_shows_venues_agents_and_events_then_stops_cleanly(tmp_path: Path) -> None:
    """Within a minute the page lists 3 venues, 4 online agents and host events; SIGINT exits 0."""
    port = free_port()
    pages = Pages(port, tmp_path / "venueguard-demo")
    proc = _start(tmp_path, port)
    try:
        wait_for(lambda: _ready(pages), 60, 0.5, "the demo page to show venues, agents and events")
        assert httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False).status_code == 303  # login first
        page, venue = pages.get("/").text, pages.get("/venues/GZ-TH01").text
        first = {a["id"]: a["acked_seq"] for v in pages.overview()["venues"] for a in v["agents"]}
        assert "广州市天河区安全生产考试点" in page and "代理在线" in page and "主机 IP 地址变更" in venue
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert "演示已停止" in out and "演示账号：demo" in out
    pages.forget()  # the second start keeps the account and its password: log in again

    # Second start: same data, no re-enrollment, sequence numbers continue.
    proc = _start(tmp_path, port)
    try:
        def resumed() -> bool:
            # Each agent's restart is an agent.started naming its previous boot. Waiting for those,
            # not only for acked_seq to pass `first`: the overview's agent figures may be a few
            # seconds old (its cache), so `first` can already lag the first run's end.
            data = pages.overview()
            if not data or not _ready(pages):
                return False
            restarted = {e["agent_id"] for e in data["events"] if e["kind"] == "agent.started" and e["data"]["previous_boot"]}
            return all(a["acked_seq"] > first[a["id"]] and a["id"] in restarted for v in data["venues"] for a in v["agents"])

        wait_for(resumed, 60, 0.5, "the demo to come back on the same data")
        data = pages.overview()
        assert len(data["venues"]) == 3
        starts = [e for e in data["events"] if e["kind"] == "agent.started"]
        assert len(starts) == 8 and sum(1 for e in starts if e["data"]["previous_boot"]) == 4
    finally:
        pages.forget()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
