"""People's actions on cases and maintenance windows: who may do what, with which reason, sealed in the vault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from collector import cases, maintenance
from collector.cases import CASE_TOPIC, CaseError
from collector.maintenance import MaintenanceError
from collector.rulebook import Event, Rulebook
from collector.rulefiles import load_rules
from collector.rulerunner import SHIPPED_RULES
from collector.rulewindows import MemoryCalendar
from collector.store import Store
from collector.store import schema
from tests.collector.vaultkit import T0, Kit

DEC_2026 = 1_796_486_400.0  # 2026-12-06 00:00 Asia/Shanghai


def _open_case(store: Store, at: float = DEC_2026) -> int:
    """A 510 case (recorder down) written by the rulebook's own sink."""
    store.add_venue("V1")
    book = Rulebook([r for r in load_rules(SHIPPED_RULES) if r.id == 510], MemoryCalendar())
    with store.engine.begin() as conn:
        sink = cases.StoreSink(conn, None, at)
        book.feed(Event(1, "V1", "a1", "recorder.down", at, {"recorder": "r1"}, 7), sink)
        sink.flush()
    return cases.cases(store)[0]["id"]


def test_the_venue_explains_and_the_authority_confirms(store: Store) -> None:
    """acknowledge → confirm, each with who and why; the annual count moves only on confirmation."""
    cid = _open_case(store)
    assert cases.annual_counts(store) == {}
    assert cases.act(store, cid, "acknowledge", "考点网管李四", "录像机电源故障，已更换", DEC_2026 + 60)["status"] == "acknowledged"
    assert cases.act(store, cid, "confirm", "市考试中心张三", "非特殊情况关机", DEC_2026 + 120)["status"] == "confirmed"
    actions = cases.case_detail(store, cid)["actions"]
    assert [(a["action"], a["role"], a["actor"]) for a in actions] == [
        ("opened", "rulebook", "rulebook"), ("acknowledge", "venue", "考点网管李四"), ("confirm", "authority", "市考试中心张三")]
    assert cases.annual_counts(store) == {"V1": {2026: 1}}
    assert cases.annual_counts(store, year=2027) == {}


@pytest.mark.parametrize("first, then, words", [
    ("confirm", "dismiss", "is confirmed"),
    ("dismiss", "acknowledge", "is dismissed"),
])
def test_a_decided_case_cannot_be_decided_again(store: Store, first: str, then: str, words: str) -> None:
    cid = _open_case(store)
    cases.act(store, cid, first, "张三", "理由", DEC_2026)
    with pytest.raises(CaseError, match=words):
        cases.act(store, cid, then, "张三", "理由", DEC_2026)


@pytest.mark.parametrize("action, actor, reason, words", [
    ("dismiss", "张三", " ", "needs a reason"),
    ("confirm", "", "理由", "must be named"),
    ("approve", "张三", "理由", "unknown action"),
])
def test_actions_without_reason_or_actor_are_refused(store: Store, action: str, actor: str, reason: str, words: str) -> None:
    cid = _open_case(store)
    with pytest.raises(CaseError, match=words):
        cases.act(store, cid, action, actor, reason, DEC_2026)
    with pytest.raises(CaseError, match="no case 999"):
        cases.act(store, 999, "confirm", "张三", "理由", DEC_2026)


def test_actions_are_sealed_as_signed_vault_notes(store: Store, tmp_path: Path) -> None:
    """seal_actions writes each pending action once, signed by the vault key; verify accepts them."""
    cid = _open_case(store)
    cases.act(store, cid, "dismiss", "张三", "经核实为计划内断电", DEC_2026 + 10)
    kit = Kit(tmp_path / "vault", tmp_path / "witness")
    vault = kit.open()
    assert cases.seal_actions(store, vault, T0) == 2
    assert cases.seal_actions(store, vault, T0) == 0, "sealed once"
    leaves = {a["vault_index"] for a in cases.case_detail(store, cid)["actions"]}
    notes = [json.loads(e.payload) for e in vault.entries(0, internal=True) if e.topic == CASE_TOPIC]
    assert {n["action"] for n in notes} == {"opened", "dismiss"} and None not in leaves
    assert next(n for n in notes if n["action"] == "dismiss")["reason"] == "经核实为计划内断电"
    vault.checkpoint()
    vault.close()
    assert kit.verify().problems == []


def test_maintenance_is_declared_then_decided(store: Store) -> None:
    """Declared windows wait for the authority; a rejection needs a reason; a decision is final."""
    store.add_venue("V1")
    wid = maintenance.declare(store, "V1", DEC_2026, DEC_2026 + 3600, [510], "更换硬盘", "李四", DEC_2026 - 86400)
    assert maintenance.windows(store, "V1")[0]["status"] == "declared"
    with pytest.raises(MaintenanceError, match="needs a reason"):
        maintenance.decide(store, wid, False, "张三", "", DEC_2026)
    assert maintenance.decide(store, wid, True, "张三", "", DEC_2026)["status"] == "approved"
    with pytest.raises(MaintenanceError, match="already approved"):
        maintenance.decide(store, wid, False, "张三", "改变主意", DEC_2026)


@pytest.mark.parametrize("start, end, reason, venue, words", [
    (DEC_2026, DEC_2026, "维护", "V1", "end after"),
    (DEC_2026, DEC_2026 + 73 * 3600, "维护", "V1", "at most 72 hours"),
    (DEC_2026, DEC_2026 + 60, " ", "V1", "needs a reason"),
    (DEC_2026, DEC_2026 + 60, "维护", "V9", "unknown venue"),
])
def test_bad_declarations_are_refused(store: Store, start: float, end: float, reason: str, venue: str, words: str) -> None:
    store.add_venue("V1")
    with pytest.raises(MaintenanceError, match=words):
        maintenance.declare(store, venue, start, end, [], reason, "李四", DEC_2026)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.maintenance_windows)).scalar() == 0
