"""Log shipping end to end: lines written on the venue host reach the collector's index exactly
once, through agent kill -9 and a logrotate-style rotation; a deletion is an event in the store."""

from __future__ import annotations

import os
import time
from pathlib import Path

from collector.broker import Mosquitto
from tests.support import Rig, wait_for


def _logs(folder: Path) -> str:
    return f"""[watchers.logs]
enabled = true
interval = 0.2
rescan_interval = 1

[[watchers.logs.sources]]
name = "exam-app"
type = "application"
paths = ["{folder}/app.log"]
"""


def _write(path: Path, first: int, count: int) -> list[str]:
    lines = [f"2026-11-28 09:{i // 60:02d}:{i % 60:02d} 考生 {i:05d} 提交答卷" for i in range(first, first + count)]
    with path.open("a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
            fh.flush()
    return lines


def test_every_line_once_through_crash_and_rotation(tmp_path: Path, broker: Mosquitto) -> None:
    """Written lines, a kill -9 of the agent mid-shipping, a rename rotation while it is down and
    more lines after: the collector holds every line exactly once, in order, per file."""
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "app.log"
    rig = Rig(tmp_path, broker.port, agent={"steps": 1, "extra": _logs(folder)})
    rig.collector.start()
    rig.agent.start()
    written = _write(log, 0, 300)
    wait_for(lambda: len(rig.store.log_lines("a1")) >= 100, 30, 0.1, "first lines at the collector")
    rig.agent.kill()
    written += _write(log, 300, 200)
    os.rename(log, folder / "app.log.1")  # logrotate "create" mode while the agent is down
    written += _write(log, 500, 200)
    rig.agent.start()
    written += _write(log, 700, 100)
    wait_for(lambda: len(rig.store.log_lines("a1")) >= len(written), 60, 0.2, "every line at the collector")
    time.sleep(1.5)
    stored = rig.store.log_lines("a1")
    by_file: dict[str, list[str]] = {}
    for row in sorted(stored, key=lambda r: (r["file_key"], r["offset"])):
        by_file.setdefault(row["file_key"], []).append(row["text"])
    assert len(by_file) == 2
    assert sorted(t for texts in by_file.values() for t in texts) == sorted(written)  # once each
    first, second = sorted(by_file.values(), key=len, reverse=True)
    assert first == written[:500] and second == written[500:]  # in order within each file
    rotated = rig.store.records_of("a1", "log.rotated")
    assert len(rotated) == 1 and rotated[0]["data"]["while_down"]
    (folder / "app.log.1").unlink()
    (deleted,) = wait_for(lambda: rig.store.records_of("a1", "log.deleted"), 30, 0.2, "log.deleted at the collector")
    assert deleted["data"]["path"].endswith("app.log.1") and deleted["data"]["size_before"] > 0
    rig.stop()
