"""The logs watcher beyond single operations: moves out of the folder, lines drained from a deleted
file, over-long and binary lines, and retention shorter than the rule asks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent.state import State
from agent.watchers.logs import YEAR
from tests.agent.test_logs_events import LogRig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LogRig]:
    r = LogRig(tmp_path)
    r.write("app.log", "first\n")
    r.write("app.log.1", "archived\n")
    yield r
    if r.watcher is not None:
        r.stop()
    r.outbox.close()


def test_move_to_another_folder_names_the_destination_when_it_can(rig: LogRig) -> None:
    """A live log moved out of the watched folder is ``log.moved`` with its new path (read from the
    descriptor the watcher holds); an archive moved out is ``log.moved`` with ``moved_to`` null
    (inotify saw it leave, not where to)."""
    rig.start()
    os.rename(rig.dir / "app.log", rig.away / "app.log")
    [ev] = rig.step()
    assert (ev["kind"], ev["data"]["moved_to"]) == ("log.moved", str(rig.away / "app.log"))
    os.rename(rig.dir / "app.log.1", rig.away / "app.log.1")
    [ev] = rig.step()
    assert (ev["kind"], ev["data"]["path"], ev["data"]["moved_to"]) == ("log.moved", str(rig.dir / "app.log.1"), None)


def test_lines_written_just_before_deletion_are_still_shipped(rig: LogRig) -> None:
    """Lines appended and the file deleted between two runs are read from the held descriptor and
    shipped in the same commit as the ``log.deleted`` event, which says how much was unshipped."""
    rig.start()
    rig.write("app.log", "".join(f"last words {i}\n" for i in range(5)))
    (rig.dir / "app.log").unlink()
    [ev] = rig.step()
    assert ev["kind"] == "log.deleted" and ev["data"]["shipped_offset"] == len("first\n")
    texts = [t for rec in rig.lines() for _, t in rec["lines"]]
    assert texts == ["first"] + [f"last words {i}" for i in range(5)]


def test_long_binary_and_unterminated_lines(tmp_path: Path) -> None:
    """A line longer than max_line_bytes is cut and the cut recorded with its original length;
    non-UTF-8 bytes are replaced and the line flagged; a line without its newline waits for it."""
    rig = LogRig(tmp_path, max_line_bytes=256)
    long = "x" * 1000
    rig.write("app.log", f"ok\n{long}\n")
    with open(rig.dir / "app.log", "ab") as fh:
        fh.write(b"bad \xff\xfe bytes\nhalf a li")
    rig.start()
    [rec] = rig.lines()
    assert [o for o, _ in rec["lines"]] == [0, 3, 1004]
    assert rec["lines"][1][1] == "x" * 256 and rec["cut"] == [[3, 1000]]
    assert rec["lines"][2][1] == "bad \ufffd\ufffd bytes" and rec["binary"] == [1004]
    assert rec["end"] == 1004 + len(b"bad \xff\xfe bytes\n")
    rig.write("app.log", "ne\n")
    rig.step()
    assert rig.lines()[-1]["lines"] == [[rec["end"], "half a line"]]
    rig.stop()
    rig.outbox.close()


def test_retention_short_when_the_oldest_log_goes_or_logs_start_after_install(tmp_path: Path) -> None:
    """Deleting the oldest archive (kept 1 year of the 3) makes the source's retention short, once,
    as State edges; with an install date 2 years back, logs that start today are short at once."""
    rig = LogRig(tmp_path)
    rig.write("app.log", "today\n")
    rig.write("app.log.1", "last year\n")
    year_ago = time.time() - YEAR
    os.utime(rig.dir / "app.log.1", (year_ago, year_ago))
    state = State(rig.outbox, snapshot_interval=3600)
    w = rig.start()
    assert state.observe("logs", w.collect()) and rig.new_events() == []
    (rig.dir / "app.log.1").unlink()
    rig.step()
    edges = state.observe("logs", w.collect())
    assert [(p.kind, p.data["reason"], p.data["oldest_path"]) for p in edges] == [
        ("log.retention_short", "oldest_removed", str(rig.dir / "app.log"))]
    assert state.observe("logs", w.collect()) == []
    rig.stop()

    rig2 = LogRig(tmp_path / "b", install_date=time.time() - 2 * YEAR)
    rig2.write("app.log", "today\n")
    w2 = rig2.start()
    [edge] = State(rig2.outbox, 3600).observe("logs", w2.collect())[:1]
    assert (edge.kind, edge.data["reason"]) == ("log.retention_short", "younger_than_install")
    rig2.stop()
    rig.outbox.close()
    rig2.outbox.close()
