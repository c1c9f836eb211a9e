"""The rulebook engine alone: conditions, debounce, windows, count and absent rules, reload, restart."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from collector import cli
from collector.rulebook import Event, Rulebook
from collector.rulefiles import load_rules
from collector.rulerunner import SHIPPED_RULES, RulebookRunner
from collector.rulesamples import MemorySink, failures
from collector.rulewindows import ExamSession, MemoryCalendar
from collector.store import Store
from collector.store import schema
from collector.store.store import Batch, NewRecord

T0 = 1_800_000_000.0
CAM = {"mac": "00:11:22:33:44:01", "room": "第1考场"}


def _rule_folder(tmp: Path, *names: str) -> Path:
    folder = tmp / "rules"
    folder.mkdir()
    for name in names:
        shutil.copy(SHIPPED_RULES / name, folder / name)
    return folder


def _ev(n: int, kind: str, at: float, data: dict, agent: str = "a1") -> Event:
    return Event(n, "V1", agent, kind, at, data, n)


def _book(*names: str, sessions: list[ExamSession] | None = None, folder: Path | None = None) -> Rulebook:
    rules = [r for r in load_rules(folder or SHIPPED_RULES) if r.file.name in names]
    return Rulebook(rules, MemoryCalendar(sessions or []))


def test_a_fault_held_past_the_debounce_is_one_case_from_its_first_moment() -> None:
    """410 holds 60 s: a camera down 90 s in an exam is a case from the first failure, closed at camera.up
    once the 120 s settle time has passed without it failing again."""
    book, sink = _book("410-camera-off-in-exam.yaml", sessions=[ExamSession("V1", "第1考场", T0, T0 + 7200, "S1")]), MemorySink()
    book.feed(_ev(1, "camera.down", T0 + 600, CAM), sink)
    book.advance(T0 + 630, sink)
    assert sink.cases == {}, "not a case before the debounce"
    book.advance(T0 + 661, sink)
    assert [(c["opened"], c["closed"], c["session"]) for c in sink.cases.values()] == [(T0 + 600, None, "S1")]
    book.feed(_ev(2, "camera.up", T0 + 690, CAM), sink)
    assert sink.cases[1]["closed"] is None, "settling: a camera flapping back within 120 s stays one case"
    book.advance(T0 + 690 + 120, sink)
    assert sink.cases[1]["closed"] == T0 + 690
    assert [e[0] for e in sink.cases[1]["evidence"]] == [1, 2]
    assert book.conditions == {}, "a closed, settled condition is forgotten"


def test_other_rooms_exams_do_not_make_a_camera_fault() -> None:
    """Room-scoped: a camera of 第1考场 off during an exam in 第2考场 is no case."""
    book, sink = _book("410-camera-off-in-exam.yaml", sessions=[ExamSession("V1", "第2考场", T0, T0 + 7200, "S2")]), MemorySink()
    book.feed(_ev(1, "camera.down", T0 + 600, CAM), sink)
    book.advance(T0 + 3600, sink)
    assert sink.cases == {}


def test_a_warning_escalates_when_the_exam_window_opens() -> None:
    """110: an unregistered device present from 08:00 is a warning, then a violation from start − 15 min."""
    book, sink = _book("110-lan-unregistered-device.yaml", sessions=[ExamSession("V1", "第1考场", T0, T0 + 7200, "S1")]), MemorySink()
    dev = {"mac": "02:11:22:33:44:55", "ip": "192.0.2.77"}
    book.feed(_ev(1, "device.unregistered", T0 - 3600, dev), sink)
    assert sink.cases[1]["severity"] == "warning"
    book.advance(T0 - 900 - 1, sink)
    assert sink.cases[1]["severity"] == "warning"
    book.advance(T0 - 900, sink)
    assert (sink.cases[1]["severity"], sink.cases[1]["session"]) == ("violation", "S1")
    book.feed(_ev(2, "device.left", T0 + 60, dev), sink)
    assert sink.cases[1]["closed"] == T0 + 60 and len(sink.cases) == 1


def _custom_rule(tmp: Path, name: str, replace: dict[str, str]) -> Path:
    """A shipped rule file turned into another rule by text replacement (keeps its verified clause)."""
    folder = tmp / "custom"
    folder.mkdir(exist_ok=True)
    text = (SHIPPED_RULES / "120-lan-ip-changed.yaml").read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_count_rule_fires_on_the_nth_event_within_its_period(tmp_path: Path) -> None:
    """Wazuh-style frequency: 3 address flips of one MAC within 10 minutes open one case; 2 do not."""
    folder = _custom_rule(tmp_path, "130-ip-flapping.yaml", {
        "id: 120": "id: 130",
        "cleared_by: [device.ip_restored, host.registered_address_restored]\n": "count:\n  at_least: 3\n  within_seconds: 600\n  same: [mac]\n",
        "  - event: device.mac_changed\n  - event: host.registered_address_changed\n": "",
    })
    rules = load_rules(folder)
    book, sink = Rulebook(rules, MemoryCalendar()), MemorySink()
    flip = {"mac": "00:11:22:33:44:a1", "ip": "192.0.2.9"}
    book.feed(_ev(1, "device.ip_changed", T0, flip), sink)
    book.feed(_ev(2, "device.ip_changed", T0 + 700, flip), sink)  # the first is out of the period
    book.feed(_ev(3, "device.ip_changed", T0 + 710, flip), sink)
    assert sink.cases == {}
    book.feed(_ev(4, "device.ip_changed", T0 + 720, flip), sink)
    assert [(c["opened"], c["subject"]) for c in sink.cases.values()] == [(T0 + 720, "mac=00:11:22:33:44:a1")]


def test_absent_rule_opens_when_the_awaited_event_does_not_come(tmp_path: Path) -> None:
    """absent: no cameras.snapshot for 900 s is a case from the deadline until the next one."""
    folder = _custom_rule(tmp_path, "830-camera-watch-silent.yaml", {
        "id: 120": "id: 830",
        "match:\n  - event: device.ip_changed\n  - event: device.mac_changed\n  - event: host.registered_address_changed\n"
        "cleared_by: [device.ip_restored, host.registered_address_restored]\n":
        "absent:\n  events: [cameras.snapshot]\n  within_seconds: 900\n",
    })
    text = (folder / "830-camera-watch-silent.yaml").read_text(encoding="utf-8")
    (folder / "830-camera-watch-silent.yaml").write_text(text[:text.index("tests:")] + (
        "tests:\n  - name: 摄像头快照按时到达\n    event: {kind: cameras.snapshot, data: {}}\n    expect: none\n"), encoding="utf-8")
    book, sink = Rulebook(load_rules(folder), MemoryCalendar()), MemorySink()
    book.feed(_ev(1, "cameras.snapshot", T0, {}), sink)
    book.advance(T0 + 899, sink)
    assert sink.cases == {}
    book.advance(T0 + 1000, sink)
    assert [(c["opened"], c["closed"], c["subject"]) for c in sink.cases.values()] == [(T0 + 900, None, "agent=a1")]
    book.feed(_ev(2, "cameras.snapshot", T0 + 1200, {}), sink)
    assert sink.cases[1]["closed"] == T0 + 1200
    book.advance(T0 + 2000, sink)
    assert len(sink.cases) == 1, "the new deadline runs from the snapshot at +1200"


def test_every_shipped_sample_comes_out_as_written_and_a_wrong_one_is_caught(tmp_path: Path) -> None:
    """The rule files' own samples pass through the engine; a sample edited to expect something else fails `rules check`."""
    assert failures(load_rules(SHIPPED_RULES)) == []
    folder = _rule_folder(tmp_path, "510-recorder-off.yaml")
    path = folder / "510-recorder-off.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("    expect: violation", "    expect: warning", 1), encoding="utf-8")
    assert cli.main(["rules", "check", "--folder", str(folder)]) == 1


def _index(store: Store, n: int, kind: str, at: float, data: dict) -> None:
    store.commit(Batch(records=[NewRecord("a1", "V1", n, "b1", "ev", kind, at, at, data, f"{n:064x}", n)]))


def test_rules_reload_without_restart_and_bad_edits_are_refused(tmp_path: Path, store: Store) -> None:
    """An edited rule file takes effect at the next check; a broken edit is reported and the rules in force stay."""
    folder = _rule_folder(tmp_path, "510-recorder-off.yaml")
    store.add_venue("V1")
    runner = RulebookRunner(store, folder, MemoryCalendar(), reload_seconds=0)
    path = folder / "510-recorder-off.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("severity: violation", "severity: warning", 1)
                    .replace("    expect: violation", "    expect: warning"), encoding="utf-8")
    assert runner.reload_if_changed()
    _index(store, 1, "recorder.down", T0, {"recorder": "r1"})
    runner.step(now=T0)
    path.write_text(path.read_text(encoding="utf-8").replace("id: 510", "id: 5100"), encoding="utf-8")
    assert not runner.reload_if_changed()
    assert "outside 500-599" in str(runner.errors[0]) and runner.errors[0].line == 2
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.cases.c.severity)).scalars().all() == ["warning"]


def test_a_restarted_rulebook_continues_where_it_stopped(tmp_path: Path, store: Store) -> None:
    """Conditions and the cursor survive a new runner: the camera.up after a restart closes the case opened before it."""
    store.add_venue("V1")
    cal = MemoryCalendar([ExamSession("V1", "第1考场", T0, T0 + 7200, "S1")])
    first = RulebookRunner(store, SHIPPED_RULES, cal)
    _index(store, 1, "camera.down", T0 + 600, CAM)
    first.step(now=T0 + 700)
    second = RulebookRunner(store, SHIPPED_RULES, cal)
    assert second.cursors == {"main": 1} and list(second.rulebook.conditions) == list(first.rulebook.conditions)
    _index(store, 2, "camera.up", T0 + 800, CAM)
    assert second.step(now=T0 + 800 + 120) == 1
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.cases.c.opened_at, schema.cases.c.closed_at)).all()
    assert [tuple(r) for r in rows] == [(T0 + 600, T0 + 800)]


def test_a_backlog_worked_off_in_slices_does_not_move_time_before_it_is_read(store: Store) -> None:
    """An agent's backlog (camera down 30 s, then up) read one event per step an hour later: no case.

    Moving time to "now" after the first slice would see the camera down for an hour and open a
    case that the next slice withdraws; cases must not depend on how the backlog is sliced.
    """
    store.add_venue("V1")
    runner = RulebookRunner(store, SHIPPED_RULES, MemoryCalendar([ExamSession("V1", "第1考场", T0, T0 + 7200, "S1")]))
    _index(store, 1, "camera.down", T0 + 600, CAM)
    _index(store, 2, "camera.up", T0 + 630, CAM)
    later = T0 + 4200
    assert [runner.step(now=later, limit=1) for _ in range(3)] == [1, 1, 0]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.cases)).scalar() == 0


def test_a_long_day_is_evaluated_quickly_enough_to_notice_a_regression(store: Store) -> None:
    """Not a benchmark (bench/rules.py is): 2,000 events of a busy day step through in one go."""
    store.add_venue("V1")
    runner = RulebookRunner(store, SHIPPED_RULES, MemoryCalendar([ExamSession("V1", "第1考场", T0, T0 + 7200, "S1")]))
    recs = [NewRecord("a1", "V1", n, "b1", "ev", "camera.down" if n % 2 else "camera.up", T0 + n * 10, T0 + n * 10,
                      {**CAM, "mac": f"00:11:22:33:{n % 40:02x}:01"}, f"{n:064x}", n) for n in range(1, 2001)]
    store.commit(Batch(records=recs))
    started = time.monotonic()
    assert runner.step(now=T0 + 30000) == 2000
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("where, data, expected", [
    ({"port": 3389}, {"port": 3389}, True),
    ({"port": 3389}, {}, False),
    ({"address": {"ne": "127.0.0.1"}}, {}, True),
    ({"address": {"ne": "127.0.0.1"}}, {"address": "127.0.0.1"}, False),
    ({"port": {"in": [22, 3389]}}, {"port": 22}, True),
    ({"port": {"in": [22, 3389]}}, {"port": 80}, False),
    ({"address": {"not_in": ["127.0.0.1", "::1"]}}, {"address": "::1"}, False),
    ({"address": {"not_in": ["127.0.0.1", "::1"]}}, {"address": "192.0.2.5"}, True),
    ({"pid": {"exists": True}}, {"pid": 0}, True),
    ({"pid": {"exists": False}}, {"pid": 0}, False),
    ({"port": 3389, "address": {"not_in": ["127.0.0.1"]}}, {"port": 3389, "address": "127.0.0.1"}, False),
])
def test_filters_hold_as_the_rules_readme_says(where: dict, data: dict, expected: bool) -> None:
    from collector.rulebook import matches
    from collector.rulefiles import Match

    assert matches(Match.model_validate({"event": "host.remote_listener", "where": where}), data) is expected


def test_a_failed_step_leaves_no_half_memory(tmp_path: Path, store: Store) -> None:
    """A step whose transaction fails is redone whole: no case id from the rolled-back write survives."""
    store.add_venue("V1")
    runner = RulebookRunner(store, SHIPPED_RULES, MemoryCalendar())
    _index(store, 1, "recorder.down", T0, {"recorder": "r1"})

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("database went away")

    runner._save = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        runner.step(now=T0)
    assert runner.cursors.get("main", 0) == 0 and runner.rulebook.conditions == {}
    del runner._save
    assert runner.step(now=T0) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.cases)).scalar() == 1


def test_a_condition_saved_and_restored_is_the_same() -> None:
    """to_json is written by hand (no deep copy): it must carry every field, cases included."""
    import dataclasses
    import json

    from collector.rulebook import CaseRef, Condition

    cond = Condition("V1", 410, "mac=aa", "a1", "第1考场", 100.0, until=200.0, last_seen=190.0, events=3,
                     hits=[100.0, 190.0, "violation", "S1"], evidence=[[1, 7, "camera.down", 100.0, "a1", 5]],
                     cases=[CaseRef(9, "violation", True, 1, 3, "S1")])
    doc = json.loads(json.dumps(cond.to_json()))
    assert set(doc) == {f.name for f in dataclasses.fields(Condition)}
    assert Condition.from_json(doc) == cond
