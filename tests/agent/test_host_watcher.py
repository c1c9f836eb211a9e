"""The host watcher and state: edge events with before/after, snapshots, changes while stopped."""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from agent.outbox import Outbox
from agent.state import State
from agent.watchers.host import HostWatcher, ScriptedInterfaces, read_psutil

ETH = {"mac": "02:00:00:00:00:01", "up": True, "addrs": ["192.0.2.10/24"]}


def _watcher(*steps: dict) -> HostWatcher:
    state = iter(steps)
    return HostWatcher(interval=1, read=lambda: json.loads(json.dumps(next(state))))


def test_changes_become_edge_events_with_before_and_after(tmp_path: Path) -> None:
    """Address change, interface added/removed and link change each give one event."""
    w = _watcher(
        {"eth0": ETH},
        {"eth0": dict(ETH, addrs=["192.0.2.99/24"]), "wlan0": {"mac": "02:00:00:00:00:02", "up": True, "addrs": []}},
        {"eth0": dict(ETH, addrs=["192.0.2.99/24"], up=False)},
    )
    state = State(Outbox(tmp_path / "o.sqlite3"), snapshot_interval=3600)
    first = state.observe("host", w.collect(), now=0)
    assert [p.kind for p in first] == ["host.snapshot"]
    second = {p.kind: p.data for p in state.observe("host", w.collect(), now=1)}
    assert second["host.address_changed"] == {
        "interface": "eth0", "mac": ETH["mac"], "before": ["192.0.2.10/24"], "after": ["192.0.2.99/24"],
        "added": ["192.0.2.99/24"], "removed": ["192.0.2.10/24"]}
    assert second["host.interface_added"]["interface"] == "wlan0"
    third = {p.kind: p.data for p in state.observe("host", w.collect(), now=2)}
    assert third["host.interface_removed"]["before"]["mac"] == "02:00:00:00:00:02"
    assert third["host.link_changed"] == {"interface": "eth0", "mac": ETH["mac"], "before": True, "after": False}


def test_quiet_host_gives_only_periodic_snapshots(tmp_path: Path) -> None:
    """No change, no event — except a snapshot when the snapshot interval has passed."""
    w = _watcher(*[{"eth0": ETH}] * 3)
    state = State(Outbox(tmp_path / "o.sqlite3"), snapshot_interval=10)
    state.observe("host", w.collect(), now=0)
    assert state.observe("host", w.collect(), now=5) == []
    assert [p.kind for p in state.observe("host", w.collect(), now=11)] == ["host.snapshot"]


def test_change_while_agent_was_stopped_is_reported(tmp_path: Path) -> None:
    """The last view is persisted, so a new agent run reports what changed while it was down."""
    State(Outbox(tmp_path / "o.sqlite3"), 3600).observe("host", _watcher({"eth0": ETH}).collect(), now=0)
    later = State(Outbox(tmp_path / "o.sqlite3"), 3600)
    kinds = [p.kind for p in later.observe("host", _watcher({"eth0": dict(ETH, addrs=["192.0.2.7/24"])}).collect(), now=1)]
    assert "host.address_changed" in kinds


def test_reads_this_machines_real_interfaces() -> None:
    """psutil's view of this host: loopback with 127.0.0.1/8, filtered out by default."""
    real = read_psutil()
    assert real["lo"]["addrs"][0].startswith("127.0.0.1/8") or "127.0.0.1/8" in real["lo"]["addrs"]
    assert set(real) == set(psutil.net_if_addrs())
    assert "lo" not in HostWatcher().collect().interfaces


def test_scenario_without_repeat_holds_its_last_step(tmp_path: Path) -> None:
    """A scripted scenario plays its steps in order and, unless repeating, stays on the last."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"steps": [{"a": ETH}, {"b": ETH}], "repeat": False}))
    read = ScriptedInterfaces(path)
    assert [list(read()) for _ in range(4)] == [["a"], ["b"], ["b"], ["b"]]
