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


def _overview(port: int) -> dict | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/overview", timeout=2).json()
    except httpx.HTTPError:
        return None


def _ready(port: int) -> bool:
    data = _overview(port)
    if not data:
        return False
    agents = [a for v in data["venues"] for a in v["agents"]]
    kinds = {e["kind"] for e in data["events"]}
    return len(agents) == 4 and all(a["online"] for a in agents) and "host.address_changed" in kinds


def test_demo_shows_venues_agents_and_events_then_stops_cleanly(tmp_path: Path) -> None:
    """Within a minute the page lists 3 venues, 4 online agents and host events; SIGINT exits 0."""
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        wait_for(lambda: _ready(port), 60, 0.5, "the demo page to show venues, agents and events")
        page = httpx.get(f"http://127.0.0.1:{port}/").text
        first = {a["id"]: a["acked_seq"] for v in _overview(port)["venues"] for a in v["agents"]}
        assert "广州市天河区安全生产考试点" in page and "在线" in page and "主机 IP 地址变更" in page
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert "演示已停止" in out

    # Second start: same data, no re-enrollment, sequence numbers continue.
    proc = _start(tmp_path, port)
    try:
        def resumed() -> bool:
            data = _overview(port)
            return bool(data) and _ready(port) and all(
                a["acked_seq"] > first[a["id"]] for v in data["venues"] for a in v["agents"])

        wait_for(resumed, 60, 0.5, "the demo to come back on the same data")
        data = httpx.get(f"http://127.0.0.1:{port}/api/v1/overview?limit=500").json()
        assert len(data["venues"]) == 3
        starts = [e for e in data["events"] if e["kind"] == "agent.started"]
        assert len(starts) == 8 and sum(1 for e in starts if e["data"]["previous_boot"]) == 4
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
