"""Shipping log lines from the real agent process: kill -9, restarts, and rotations in create and
copytruncate modes lose no line, and deduping by (file_key, offset) gives exactly the lines written."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from protocol.keys import make_bundle, new_private_key, write_bundle
from collector.broker import free_port
from tests.support import Proc, wait_for


class Shipper:
    """A broker-less agent (its outbox just fills) with only the logs watcher, and a log writer."""

    def __init__(self, tmp: Path) -> None:
        self.home, self.logs = tmp / "agent", tmp / "logs"
        self.home.mkdir()
        self.logs.mkdir()
        bundle = make_bundle("a1", "V1", new_private_key(), "127.0.0.1", free_port())  # nothing listens there
        write_bundle(self.home / "agent.bundle.json", bundle)
        toml = f"""
[agent]
bundle = "agent.bundle.json"
data_dir = "data"
log_level = "debug"

[uplink]
reconnect_min = 0.5
reconnect_max = 1

[watchers.host]
enabled = false

[watchers.logs]
enabled = true
interval = 0.1
rescan_interval = 0.5
read_bytes = 65536
close_inactive = 2

[[watchers.logs.sources]]
name = "app"
type = "application"
paths = ["{self.logs}/*.log"]
"""
        (self.home / "agent.toml").write_text(toml)
        self.agent = Proc(["-m", "agent.cli", "run", "--config", str(self.home / "agent.toml")], tmp / "agent.log")
        self.written: list[str] = []
        self.lock = threading.Lock()

    def write(self, name: str, n: int, pause: float = 0.0) -> None:
        """Append ``n`` numbered lines to ``name`` (one open, like an application holding its log)."""
        with open(self.logs / name, "a", encoding="utf-8") as fh:
            for _ in range(n):
                with self.lock:
                    line = f"{len(self.written):06d} 考生登录 seat=A{len(self.written) % 60:02d} ok"
                    self.written.append(line)
                fh.write(line + "\n")
                fh.flush()
                if pause:
                    time.sleep(pause)

    def records(self) -> list[dict[str, Any]]:
        """Every record in the outbox, read-only, oldest first."""
        path = self.home / "data" / "outbox.sqlite3"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [json.loads(b) for (b,) in db.execute("SELECT body FROM records ORDER BY seq")]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def shipped(self) -> dict[tuple[str, int], str]:
        """Lines deduped by (file_key, offset), as the collector does; duplicates must agree."""
        out: dict[tuple[str, int], str] = {}
        for rec in self.records():
            if rec["kind"] != "log.lines":
                continue
            for offset, text in rec["data"]["lines"]:
                key = (rec["data"]["file_key"], offset)
                assert out.setdefault(key, text) == text, f"{key} shipped with two texts"
        return out

    def all_shipped(self) -> bool:
        with self.lock:
            return len(self.shipped()) >= len(self.written)

    def kill_when_shipping(self) -> None:
        """kill -9 as soon as some (not necessarily all) new lines are in the outbox."""
        have = len(self.shipped())
        wait_for(lambda: len(self.shipped()) > have, 30, 0.02, "lines to be shipped")
        self.agent.kill()


def test_no_line_lost_across_kill_and_rotation(tmp_path: Path) -> None:
    """Lines written before and while the agent is killed (-9), moved by a create-mode rotation
    while it is down (with lines still written to the rotated file), and by a copytruncate rotation
    while it runs, all reach the outbox; deduped by (file_key, offset) they are exactly the lines
    written, once each, at contiguous offsets from 0 in every file, in the order written."""
    s = Shipper(tmp_path)
    s.write("app.log", 3000)
    s.agent.start()
    s.kill_when_shipping()

    s.write("app.log", 500)  # while down
    os.rename(s.logs / "app.log", s.logs / "app.log.1")  # create-mode rotation while down …
    s.write("app.log.1", 300)  # … the application still writes to the renamed file …
    s.write("app.log", 200)  # … until it reopens its log
    s.agent.start()
    writer = threading.Thread(target=s.write, args=("app.log", 1500, 0.0005))
    writer.start()
    s.kill_when_shipping()  # killed while lines are being written
    s.agent.start()
    writer.join()
    wait_for(s.all_shipped, 30, 0.1, "every line to be shipped")

    os.rename(s.logs / "app.log.1", s.logs / "app.log.2")  # copytruncate rotation while running
    shutil.copyfile(s.logs / "app.log", s.logs / "app.log.1")
    os.truncate(s.logs / "app.log", 0)
    s.write("app.log", 400)
    wait_for(s.all_shipped, 30, 0.1, "the lines after copytruncate")
    s.agent.stop()

    shipped = s.shipped()
    texts = list(shipped.values())
    assert len(texts) == len(set(texts)) == len(s.written)  # once each, none under two keys
    assert set(texts) == set(s.written)
    for key in {k for k, _ in shipped}:
        mine = sorted((o, t) for (k, o), t in shipped.items() if k == key)
        assert mine[0][0] == 0, f"{key} does not start at offset 0"
        for (o1, t1), (o2, t2) in zip(mine, mine[1:]):
            assert o2 == o1 + len(t1.encode()) + 1, f"{key}: gap or overlap after offset {o1}"
            assert t2 > t1  # written order
    events = [(r["kind"], r["data"].get("mode")) for r in s.records() if r["kind"].startswith("log.") and r["kind"] != "log.lines"]
    assert events == [("log.rotated", "rename"), ("log.rotated", "copytruncate")], events
