"""Helpers shared by the tests: real collector and agent processes, polling, outbox reads."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from collector import keys
from collector.broker import free_port
from collector.enroll import enroll
from collector.store import Store

ROOT = Path(__file__).resolve().parents[1]


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``pred`` until truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def collector_toml(data_dir: Path, broker_port: int, db_url: str = "", web_port: int | None = None, extra: str = "",
                   **ingest: Any) -> str:
    """A collector config for tests; ``extra`` is appended (further sections)."""
    lines = [
        "[collector]", f'data_dir = "{data_dir}"', f'database_url = "{db_url}"', "",
        "[broker]", f"port = {broker_port}", "",
        "[web]", f"port = {web_port or free_port()}", "",
        "[ingest]", *[f"{k} = {v}" for k, v in ingest.items()],
    ]
    return "\n".join(lines) + "\n" + extra


class Proc:
    """A VenueGuard process that a test can kill -9 and restart with the same arguments."""

    #: Every Proc made; the ``_reap`` fixture kills what a failed test left running.
    made: list["Proc"] = []

    def __init__(self, args: list[str], log: Path, netns: str | None = None) -> None:
        self.args = args
        self.log = log
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        Proc.made.append(self)

    def start(self) -> "Proc":
        fh = self.log.open("ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT), VENUEGUARD_LANG="en")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []  # ip execs: same pid
        self.proc = subprocess.Popen([*prefix, sys.executable, *self.args], stdout=fh, stderr=fh, env=env, cwd=ROOT)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def enroll_agent(store: Store, data_dir: Path, agent_id: str, venue: str, broker_port: int, out: Path) -> Path:
    """Enroll an agent the way the CLI does."""
    key = keys.load_or_create(data_dir / "collector.key")
    return enroll(store, key, agent_id, venue, venue_name=None, broker_host="127.0.0.1", broker_port=broker_port, out=out)


def flip_scenario(steps: int, repeat: bool = False) -> dict[str, Any]:
    """Host states that alternate an address every step: one ``host.address_changed`` per step."""
    a = {"eth0": {"mac": "02:00:00:00:00:01", "up": True, "addrs": ["192.0.2.10/24"]}}
    b = {"eth0": {"mac": "02:00:00:00:00:01", "up": True, "addrs": ["192.0.2.11/24"]}}
    return {"steps": [a if i % 2 == 0 else b for i in range(steps)], "repeat": repeat}


def agent_toml(home: Path, bundle: Path, *, interval: float = 0.05, heartbeat: float = 1.0, steps: int = 200,
               uplink: dict[str, Any] | None = None, outbox: dict[str, Any] | None = None, extra: str = "") -> Path:
    """Write an agent config whose host watcher plays a flip scenario; return its path."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "scenario.json").write_text(json.dumps(flip_scenario(steps)))
    up = {"reconnect_min": 0.2, "reconnect_max": 1.0, "ack_timeout": 2.0, **(uplink or {})}
    lines = ["[agent]", f'bundle = "{bundle}"', 'data_dir = "data"', f"heartbeat_interval = {heartbeat}",
             "log_level = \"debug\"", "", "[uplink]", *[f"{k} = {json.dumps(v)}" for k, v in up.items()], ""]
    if outbox:
        lines += ["[outbox]", *[f"{k} = {json.dumps(v)}" for k, v in outbox.items()], ""]
    lines += ["[watchers.host]", f"interval = {interval}", 'scenario = "scenario.json"', "", extra]
    path = home / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def outbox_state(home: Path) -> tuple[int, int]:
    """``(last_seq, depth)`` of an agent's outbox, read without disturbing the agent."""
    path = home / "data" / "outbox.sqlite3"
    if not path.exists():
        return 0, 0  # the agent process has not created it yet
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        depth = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0, 0  # created but its tables not yet
    finally:
        db.close()
    return (int(row[0]) if row else 0), depth


class Rig:
    """A broker, a collector process and one agent process (``a1`` at venue ``V1``) on real parts."""

    def __init__(self, tmp: Path, broker_port: int, db_url: str = "", *, agent: dict[str, Any] | None = None,
                 netns: str | None = None, collector_extra: str = "", **ingest: Any) -> None:
        self.tmp = tmp
        self.data = tmp / "collector"
        self.data.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{self.data / 'index.sqlite3'}"
        toml = tmp / "collector.toml"
        self.toml = toml
        toml.write_text(collector_toml(self.data, broker_port, self.db_url, extra=collector_extra, **ingest))
        self.store = Store(self.db_url)
        self.store.migrate()
        self.home = tmp / "a1"
        bundle = enroll_agent(self.store, self.data, "a1", "V1", broker_port, self.home / "agent.bundle.json")
        self.collector = Proc(["-m", "collector.cli", "--config", str(toml), "run"], tmp / "collector.log", netns)
        self.agent = Proc(["-m", "agent.cli", "run", "--config", str(agent_toml(self.home, bundle, **(agent or {})))],
                          tmp / "agent.log", netns)

    def seqs(self) -> list[int]:
        """Seqs of a1 in the store, with duplicates if there were any."""
        return self.store.record_seqs("a1")

    def drained(self) -> int:
        """The outbox's last seq when it is empty and the store holds exactly seqs 1..last, once
        each (0 otherwise). The agent may commit more right after: callers keep this ``last``."""
        last, depth = outbox_state(self.home)
        return last if depth == 0 and last > 0 and self.seqs() == list(range(1, last + 1)) else 0

    def stop(self) -> None:
        self.agent.stop()
        self.collector.stop()
        self.store.close()
