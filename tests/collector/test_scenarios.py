"""Golden-day scenarios (tests/scenarios/*.yaml) replayed through the rulebook, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml

from collector.eventkinds import EVENT_KINDS
from collector.rulerunner import SHIPPED_RULES, RulebookRunner
from collector.rulewindows import StoreCalendar
from collector.store import Store
from collector.store import schema
from collector.store.store import Batch, NewRecord

SCENARIOS = sorted((Path(__file__).parents[1] / "scenarios").glob("*.yaml"))
ZONE = ZoneInfo("Asia/Shanghai")
VENUE = "V440100001"


def when(text: str, day: str) -> float:
    """``HH:MM[:SS]`` on the scenario's day, or a full ``YYYY-MM-DD HH:MM[:SS]``, Asia/Shanghai."""
    full = text if len(text) > 8 else f"{day} {text}"
    fmt = "%Y-%m-%d %H:%M:%S" if full.count(":") == 2 else "%Y-%m-%d %H:%M"
    return dt.datetime.strptime(full, fmt).replace(tzinfo=ZONE).timestamp()


def clock(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, ZONE).strftime("%Y-%m-%d %H:%M:%S")


def _plan(store: Store, doc: dict[str, Any], day: str) -> None:
    """The venue, its schedule and its maintenance windows, straight into the tables."""
    store.add_venue(VENUE, "广州市某考点")
    with store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=0, imported_by="scenario", source="scenario", sha256="0" * 64, months=[day[:7]],
            sessions=len(doc.get("sessions", [])))).inserted_primary_key[0]
        for s in doc.get("sessions", []):
            conn.execute(schema.exam_sessions.insert().values(
                version_id=version, session_id=s["session_id"], venue_id=VENUE, room=s["room"],
                subject=s.get("subject", ""), start=when(s["start"], day), end=when(s["end"], day)))
        for n, z in enumerate(doc.get("seals", []), start=1):
            conn.execute(schema.seals.insert().values(
                venue_id=VENUE, exam_day=day, sealed_at=when(z["sealed_at"], day), until=when(z["until"], day),
                report_id=n, baseline={}, changes=[]))
        for m in doc.get("maintenance", []):
            conn.execute(schema.maintenance_windows.insert().values(
                venue_id=VENUE, start=when(m["start"], day), end=when(m["end"], day), rules=m.get("rules", []),
                reason=m["reason"], declared_by="考点", declared_at=0, status=m.get("status", "approved")))


def _index(store: Store, n: int, ev: dict[str, Any], day: str) -> float:
    at = when(ev["at"], day)
    received = when(ev["received"], day) if "received" in ev else at
    stream = "collector" if EVENT_KINDS[ev["kind"]].source == "collector" else "ev"
    rec = NewRecord(ev.get("agent", "agent-1"), VENUE, None if stream == "collector" else n, "boot-1", stream,
                    ev["kind"], at, received, ev.get("data", {}), f"{n:064x}", n)
    store.commit(Batch(records=[rec]))
    return received


def replay(store: Store, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Index the events one by one, stepping the rulebook at each event's time, then run to ``until``."""
    day = str(doc["day"])
    _plan(store, doc, day)
    runner = RulebookRunner(store, SHIPPED_RULES, StoreCalendar(store))
    for n, ev in enumerate(doc["events"], start=1):
        runner.step(now=when(ev["tick"], day) if "tick" in ev else _index(store, n, ev, day))
    runner.step(now=when(doc["until"], day))
    c = schema.cases.c
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.cases).order_by(c.opened_at, c.id)).mappings()]


def _seen(case: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    got = {"rule": case["rule_id"], "severity": case["severity"], "opened": clock(case["opened_at"]),
           "closed": clock(case["closed_at"])}
    for key, column in (("session", "session_id"), ("subject", "subject")):
        if key in want:
            got[key] = case[column]
    return got


def _wanted(want: dict[str, Any], day: str) -> dict[str, Any]:
    out = dict(want)
    out["opened"] = clock(when(want["opened"], day))
    out["closed"] = None if want.get("closed") is None else clock(when(want["closed"], day))
    return out


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden_day(path: Path, store: Store) -> None:
    """The day's events give exactly the expected cases: rule, severity, opening and closing time."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    day = str(doc["day"])
    found = replay(store, doc)
    wanted = [_wanted(w, day) for w in doc["expect"]]
    assert [_seen(c, w) for c, w in zip(found, wanted)] == wanted[:len(found)] and len(found) == len(wanted), \
        f"{doc['name']}: cases {[_seen(c, {}) for c in found]}, expected {wanted}"
    for case in found:
        assert case["state"] == ("open" if case["closed_at"] is None else "closed")


def test_scenarios_cover_the_issue_days() -> None:
    """The days the issue names each have a scenario file."""
    names = {p.stem for p in SCENARIOS}
    assert {"camera-late", "camera-blip", "camera-down-mid-exam", "recorder-down-at-night", "unregistered-outside-exam",
            "log-rotation", "log-deleted", "agent-killed-mid-exam", "maintenance-window"} <= names
