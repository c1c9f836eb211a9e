"""The logs watcher on real files: every operation on a watched log yields exactly its event, both
while the watcher runs (inotify + rescan) and while it is stopped (manifest diff at start)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from agent.outbox import Outbox
from agent.watchers.logmanifest import LogSource
from agent.watchers.logs import LogsWatcher
from tests.support import wait_for


def head(data: bytes) -> str:
    return hashlib.sha256(data[:4096]).hexdigest()


class LogRig:
    """A temp log folder, an outbox, and the real watcher on them (restartable)."""

    def __init__(self, tmp: Path, **options: Any) -> None:
        self.dir = tmp / "logs"
        self.dir.mkdir(parents=True)
        self.away = tmp / "elsewhere"
        self.away.mkdir()
        self.outbox = Outbox(tmp / "outbox.sqlite3")
        self.options = {"rescan_interval": 3600.0, **options}
        self.seen = 0
        self.watcher: LogsWatcher | None = None

    def start(self) -> LogsWatcher:
        sources = [LogSource("app", "application", (str(self.dir / "*.log"),))]
        self.watcher = LogsWatcher(sources=sources, outbox=self.outbox, **self.options)
        self.watcher.init()
        self.watcher.collect()
        return self.watcher

    def stop(self) -> None:
        assert self.watcher is not None
        self.watcher.stop()
        self.watcher = None

    def step(self) -> list[dict[str, Any]]:
        """Wait for inotify to notice a change, collect, and return the new ``log.*`` events."""
        assert self.watcher is not None
        wait_for(self.watcher.changed, 5, 0.01, "inotify to report the change")
        time.sleep(0.05)  # let a burst of events (rename + create) land in one rescan
        self.watcher.collect()
        return self.new_events()

    def new_events(self) -> list[dict[str, Any]]:
        rows = self.outbox.pending(self.seen, 100000)
        if rows:
            self.seen = rows[-1].seq
        return [r.record for r in rows if r.stream == "ev" and r.record["kind"].startswith("log.")]

    def lines(self) -> list[dict[str, Any]]:
        return [r.record["data"] for r in self.outbox.pending(0, 100000) if r.stream == "log"]

    def write(self, name: str, text: str, mode: str = "a") -> bytes:
        with open(self.dir / name, mode, encoding="utf-8") as fh:
            fh.write(text)
        return (self.dir / name).read_bytes()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LogRig]:
    r = LogRig(tmp_path)
    r.write("app.log", "".join(f"2026-11-28 09:00:{i:02d} login ok user{i}\n" for i in range(40)))
    r.write("app.log.1", "".join(f"2026-11-27 older line {i}\n" for i in range(10)))
    yield r
    if r.watcher is not None:
        r.stop()
    r.outbox.close()


# Each case: the operation, then the expected (kind, selected data fields) given the folder.
def op_delete(r: LogRig) -> None:
    (r.dir / "app.log.1").unlink()


def op_truncate(r: LogRig) -> None:
    os.truncate(r.dir / "app.log", 0)


def op_replace(r: LogRig) -> None:
    old = (r.dir / "app.log").read_text().splitlines(keepends=True)
    (r.dir / "app.log.tmp~").write_text("".join(old[:5] + old[20:]))  # lines 5..19 removed
    os.replace(r.dir / "app.log.tmp~", r.dir / "app.log")


def op_move(r: LogRig) -> None:
    os.rename(r.dir / "app.log.1", r.dir / "app.bak")


def op_rotate_create(r: LogRig) -> None:
    os.rename(r.dir / "app.log.1", r.dir / "app.log.2")
    os.rename(r.dir / "app.log", r.dir / "app.log.1")
    (r.dir / "app.log").write_text("")


def op_rotate_copytruncate(r: LogRig) -> None:
    os.rename(r.dir / "app.log.1", r.dir / "app.log.2")
    shutil.copyfile(r.dir / "app.log", r.dir / "app.log.1")
    os.truncate(r.dir / "app.log", 0)


def op_rotate_compress(r: LogRig) -> None:
    os.rename(r.dir / "app.log.1", r.dir / "app.log.2")
    os.rename(r.dir / "app.log", r.dir / "app.log.1")
    with open(r.dir / "app.log.1", "rb") as src, gzip.open(r.dir / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (r.dir / "app.log.1").unlink()
    (r.dir / "app.log").write_text("")


def op_rotate_dated(r: LogRig) -> None:
    os.rename(r.dir / "app.log", r.dir / "app.log-20261128")
    (r.dir / "app.log").write_text("")


CASES: dict[str, tuple[Callable[[LogRig], None], str, str, dict[str, Any]]] = {
    # name: (operation, kind, file the event is about, extra expected fields)
    "delete": (op_delete, "log.deleted", "app.log.1", {"size_after": None}),
    "truncate": (op_truncate, "log.truncated", "app.log", {"size_after": 0}),
    "replace": (op_replace, "log.replaced", "app.log", {}),
    "move": (op_move, "log.moved", "app.log.1", {"moved_to": "app.bak"}),
    "rotate_create": (op_rotate_create, "log.rotated", "app.log", {"rotated_to": "app.log.1", "mode": "rename"}),
    "rotate_copytruncate": (op_rotate_copytruncate, "log.rotated", "app.log",
                            {"rotated_to": "app.log.1", "mode": "copytruncate", "size_after": 0}),
    "rotate_compress": (op_rotate_compress, "log.rotated", "app.log", {"rotated_to": "app.log.1.gz", "mode": "compress"}),
    "rotate_dated": (op_rotate_dated, "log.rotated", "app.log", {"rotated_to": "app.log-20261128", "mode": "rename"}),
}


def check(r: LogRig, events: list[dict[str, Any]], case: str, before: dict[str, bytes],
          inodes: dict[str, int]) -> dict[str, Any]:
    """Exactly one event, of the expected kind, about the expected file, with its evidence."""
    _, kind, name, extra = CASES[case]
    assert [e["kind"] for e in events] == [kind], json.dumps(events, indent=1)
    data = events[0]["data"]
    assert data["source"] == "app" and data["type"] == "application"
    assert data["path"] == str(r.dir / name)
    assert data["size_before"] == len(before[name])
    assert data["inode"] == inodes[name] and data["dev"] == os.stat(r.dir).st_dev
    assert data["head_sha256"] == head(before[name])
    for k, v in extra.items():
        want = str(r.dir / v) if k in ("moved_to", "rotated_to") else v
        assert data[k] == want, (k, data)
    return data


def snapshot(r: LogRig) -> tuple[dict[str, bytes], dict[str, int]]:
    names = ("app.log", "app.log.1")
    return {n: (r.dir / n).read_bytes() for n in names}, {n: os.stat(r.dir / n).st_ino for n in names}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operation_while_running_yields_exactly_its_event(rig: LogRig, case: str) -> None:
    """With the watcher running, each operation yields exactly one event of its kind, carrying the
    source, path, sizes, inode and the head hash from before; rotation is told apart from tampering."""
    rig.start()
    assert rig.new_events() == []  # the first scan is a baseline, not a list of "new" files
    before, inodes = snapshot(rig)
    CASES[case][0](rig)
    data = check(rig, rig.step(), case, before, inodes)
    assert "while_down" not in data
    rig.watcher.collect()  # type: ignore[union-attr]
    assert rig.new_events() == []  # reported once, not once per run


@pytest.mark.parametrize("case", sorted(CASES))
def test_operation_while_stopped_is_reported_at_start_with_the_down_interval(rig: LogRig, case: str) -> None:
    """The same operations done while the agent is stopped are found by the manifest diff at the
    next start, each once, with ``while_down`` from the last moment the watcher was alive."""
    rig.start()
    stopped_at = time.time()
    rig.stop()
    before, inodes = snapshot(rig)
    CASES[case][0](rig)
    rig.new_events()
    started = time.time()
    rig.start()
    data = check(rig, rig.new_events(), case, before, inodes)
    assert data["while_down"]["since"] <= stopped_at
    assert started <= data["while_down"]["until"] <= time.time()
