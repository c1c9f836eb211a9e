"""A seeded site for the page tests: four venues in every state, agents, inventory, today's and
tomorrow's exams, camera/LAN/recorder records in a real vault, cases, a readiness report, users
of every role, and the real app on a clock pinned to the exam day (2026-12-05 10:00 in Guangzhou).

| venue | agents | what is going on | expected state |
|---|---|---|---|
| V1 天河 | a1, a2 online | open violation case (510), exams today and tomorrow | 违规 |
| V2 越秀 | b1 offline | open warning case (110), exams tomorrow | 离线 |
| V3 海珠 | c1 online | tomorrow's readiness report failed; a case confirmed in 2025 | 警告 |
| V4 番禺 | d1 online | nothing | 正常 |
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi.testclient import TestClient

from collector import cases
from collector.config import CollectorConfig, CollectorSection
from collector.rulefiles import load_rules
from collector.rulerunner import SHIPPED_RULES
from collector.store import Store, schema
from collector.store.store import Batch, NewRecord
from collector.vault.wiring import open_vault
from collector.web.app import create_app
from protocol.inventory import Device
from collector.web import accounts
from tests.web import PASSWORD, csrf_of, login

TZ = "Asia/Shanghai"
TODAY, TOMORROW = "2026-12-05", "2026-12-06"
CAM1, CAM2, NVR, STRANGER = "00:11:22:33:44:01", "00:11:22:33:44:02", "00:11:22:33:44:30", "02:aa:bb:cc:dd:ee"
USERS = {"admin": ("kaowu-admin", None), "viewer": ("kaowu-viewer", None), "venue": ("th-operator", "V1"),
         "venue2": ("yx-operator", "V2")}


def at(day: str, hhmm: str) -> float:
    """Local time in Guangzhou."""
    return dt.datetime.strptime(f"{day} {hhmm}", "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(TZ)).timestamp()


NOW = at(TODAY, "10:00")


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    """The seeded store, its vault, the app and a logged-in client per role."""

    store: Store
    data_dir: Path
    clock: Clock = field(default_factory=Clock)
    case_ids: dict[str, int] = field(default_factory=dict)
    leaves: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cfg = CollectorConfig(collector=CollectorSection(data_dir=self.data_dir))
        self.vault = open_vault(self.cfg)
        _registry(self.store)
        _sessions(self.store)
        self._records()
        self.vault.checkpoint(NOW)
        self._cases()
        _readiness(self.store)
        for role, (name, venue) in USERS.items():
            add_account(self.store, name, "venue" if role.startswith("venue") else role, venue)
        self.app = create_app(self.store, self.cfg, clock=self.clock)
        self._clients: dict[str, TestClient] = {}

    def close(self) -> None:
        self.vault.close()

    def client(self, role: str) -> TestClient:
        """A client logged in as ``role`` (admin, viewer, venue = V1's operator, venue2 = V2's)."""
        if role not in self._clients:
            c = TestClient(self.app)
            assert login(c, USERS[role][0]).status_code == 303
            self._clients[role] = c
        return self._clients[role]

    def anonymous(self) -> TestClient:
        return TestClient(self.app)

    def csrf(self, role: str) -> str:
        """The session's CSRF token of ``role``'s client, from the layout."""
        return csrf_of(self.client(role).get("/cases").text)

    # -- records in the vault and the index ---------------------------------------------------------

    def _records(self) -> None:
        rows = [
            ("a1", "V1", "cameras.snapshot", at(TODAY, "07:00"), {"cameras": {
                CAM1: {"status": "up", "since": at(TODAY, "06:00"), "data": {}},
                CAM2: {"status": "up", "since": at(TODAY, "06:00"), "data": {}}}}),
            ("a1", "V1", "camera.down", at(TODAY, "08:55"), {"mac": CAM1, "ip": "192.0.2.21", "room": "第1考场",
                                                            "name": "1号摄像头", "error": "timed out",
                                                            "since": at(TODAY, "08:50")}),
            ("a1", "V1", "lan.snapshot", at(TODAY, "09:00"), {"episodes": {}, "devices": {
                CAM1: {"mac": CAM1, "ip": "192.0.2.21", "vendor": "Hikvision"},
                CAM2: {"mac": CAM2, "ip": "192.0.2.77", "vendor": "Hikvision"},
                STRANGER: {"mac": STRANGER, "ip": "192.0.2.99", "vendor": "TP-Link", "hostname": "laptop-x",
                           "first_seen": at(TODAY, "08:40")}}}),
            ("a1", "V1", "recorders.snapshot", at(TODAY, "09:00"), {
                "recorders": {NVR: {"state": "up", "model": "DS-7608", "disks": {"1": {"name": "hdd1", "status": "ok", "fault": False}},
                                    "channels": {"1": {"online": True}, "2": {"online": False}},
                                    "recording": {"1": {"recording": True}, "2": {"recording": False}}}},
                "episodes": {f"disk_low|{NVR}": {"recorder": NVR}}}),
            ("a1", "V1", "recorder.disk_low", at(TODAY, "09:01"), {"recorder": NVR, "free_gb": 12.5, "min_free_gb": 50}),
            ("a1", "V1", "camera.up", at(TODAY, "09:12"), {"mac": CAM1, "since": at(TODAY, "09:10")}),
            ("a1", "V1", "recorder.down", at(TODAY, "09:20"), {"recorder": NVR, "ip": "192.0.2.30", "error": "timed out",
                                                               "since": at(TODAY, "09:19")}),
            ("a2", "V1", "camera.stream_stalled", at(TODAY, "09:31"), {"mac": CAM2, "since": at(TODAY, "09:29")}),
            ("b1", "V2", "device.unregistered", at(TODAY, "08:00"), {"mac": "02:00:00:00:00:09", "ip": "198.51.100.9",
                                                                     "vendor": "", "how": "arp-reply"}),
            ("c1", "V3", "log.deleted", at("2025-06-01", "10:00"), {"path": "/var/log/exam.log", "type": "system",
                                                                    "size_before": 100}),
        ]
        texts = [json.dumps({"agent": a, "kind": k, "at": t_, "data": d}, ensure_ascii=False, sort_keys=True)
                 for a, _, k, t_, d in rows]
        indexes = self.vault.append([(t_, f"vg/v1/{a}/ev", text) for (a, _, _, t_, _), text in zip(rows, texts)])
        batch = Batch()
        for n, ((agent, venue, kind, when, data), leaf) in enumerate(zip(rows, indexes), start=1):
            batch.records.append(NewRecord(agent, venue, n, "boot1", "ev", kind, when, when + 1, data,
                                           hashlib.sha256(texts[n - 1].encode()).hexdigest(), leaf))
            self.leaves.setdefault(kind, leaf)
        self.store.commit(batch)

    def record_id(self, kind: str) -> int:
        r = schema.records.c
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(r.id).where(r.kind == kind).order_by(r.id).limit(1)).scalar_one())

    # -- cases ------------------------------------------------------------------------------------

    def _cases(self) -> None:
        self.case_ids["v1_recorder"] = add_case(self.store, "V1", 510, "open", at(TODAY, "09:19"), session_id="S-V1-1",
                                                room="", evidence=[self._evidence("recorder.down")])
        self.case_ids["v1_camera"] = add_case(self.store, "V1", 410, "closed", at(TODAY, "08:50"), session_id="S-V1-1",
                                              room="第1考场", evidence=[self._evidence("camera.down")],
                                              closed_at=at(TODAY, "09:10"))
        self.case_ids["v2_device"] = add_case(self.store, "V2", 110, "open", at(TODAY, "08:00"),
                                              evidence=[self._evidence("device.unregistered")])
        self.case_ids["v3_log"] = add_case(self.store, "V3", 610, "closed", at("2025-06-01", "10:00"),
                                           evidence=[self._evidence("log.deleted")], closed_at=at("2025-06-01", "10:00"))
        cases.act(self.store, self.case_ids["v3_log"], "confirm", "市考试中心", "删除考试日志", at("2025-06-10", "10:00"))

    def _evidence(self, kind: str) -> list[Any]:
        r = schema.records.c
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(r.id, r.vault_index, r.kind, r.at, r.agent_id, r.seq).where(r.kind == kind)).one()
        return list(row)


@lru_cache(maxsize=1)
def _password_hash() -> str:
    """One argon2 hash per test run: hashing costs ~0.2 s, and every site has four accounts."""
    return accounts.hash_password(PASSWORD)


def add_account(store: Store, name: str, role: str, venue: str | None) -> None:
    """An account row as ``accounts.add_user`` writes it (the same hash for all: logins still verify it)."""
    with store.engine.begin() as conn:
        conn.execute(schema.users.insert().values(username=name, password_hash=_password_hash(), role=role,
                                                  venue_id=venue, created_at=NOW, disabled=False))


@lru_cache(maxsize=1)
def _rules() -> dict[int, Any]:
    return {r.id: r for r in load_rules(SHIPPED_RULES)}


def add_case(store: Store, venue: str, rule_id: int, state: str, opened: float, *, session_id: str = "",
             room: str = "", evidence: list[list[Any]] | None = None, closed_at: float | None = None) -> int:
    """A case as the rulebook's sink writes it, with the shipped rule's title, clause and severity."""
    rule = _rules()[rule_id]
    clause = {**rule.clause.model_dump(), "also": [c.model_dump() for c in rule.also]}
    row = {"venue_id": venue, "rule_id": rule_id, "title": rule.title, "clause": clause, "severity": rule.severity,
           "subject": "", "room": room, "session_id": session_id, "agent_id": "a1", "state": state, "status": "new",
           "first_seen": opened, "last_seen": closed_at or opened, "opened_at": opened, "closed_at": closed_at,
           "events": len(evidence or []), "version": 1}
    with store.engine.begin() as conn:
        case_id = int(conn.execute(schema.cases.insert().values(**row)).inserted_primary_key[0])
        for rid, leaf, kind, when, agent, seq in evidence or []:
            conn.execute(schema.case_evidence.insert().values(case_id=case_id, record_id=rid, vault_index=leaf, kind=kind,
                                                              at=when, agent_id=agent, seq=seq))
        cases.record_action(conn, case_id, "opened", "rulebook", "rulebook", "", opened, {"severity": rule.severity})
    return case_id


def _registry(store: Store) -> None:
    for venue, name in (("V1", "广州市天河区安全生产考试点"), ("V2", "越秀考点"), ("V3", "海珠考点"), ("V4", "番禺考点")):
        store.add_venue(venue, name)
    for agent, venue, online in (("a1", "V1", True), ("a2", "V1", True), ("b1", "V2", False), ("c1", "V3", True),
                                 ("d1", "V4", True)):
        store.enroll_agent(agent, venue, "k")
        batch = Batch()
        batch.update_agent(agent, online=online, last_seen=NOW - 30, last_heartbeat=NOW - 30, outbox_depth=0,
                           clock_offset=0.1)
        store.commit(batch)
    store.replace_inventory("V1", [
        Device(CAM1, "192.0.2.21", "camera", "第1考场", "1号摄像头"),
        Device(CAM2, "192.0.2.22", "camera", "第1考场", "2号摄像头"),
        Device("00:11:22:33:44:03", "192.0.2.23", "camera", "第2考场", "3号摄像头"),
        Device(NVR, "192.0.2.30", "recorder", "机房", "录像机"),
    ])


def _sessions(store: Store) -> None:
    rows = [("S-V1-1", "V1", "第1考场", at(TODAY, "09:00"), at(TODAY, "11:00")),
            ("S-V1-2", "V1", "第2考场", at(TODAY, "14:00"), at(TODAY, "16:00")),
            ("S-V1-3", "V1", "第1考场", at(TOMORROW, "09:00"), at(TOMORROW, "11:00")),
            ("S-V2-1", "V2", "第1考场", at(TOMORROW, "09:00"), at(TOMORROW, "11:00")),
            ("S-V3-1", "V3", "第1考场", at(TOMORROW, "14:00"), at(TOMORROW, "16:00"))]
    with store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=0, imported_by="test", source="test", sha256="0" * 64, months=["2026-12"],
            sessions=len(rows))).inserted_primary_key[0]
        for sid, venue, room, start, end in rows:
            conn.execute(schema.exam_sessions.insert().values(version_id=version, session_id=sid, venue_id=venue, room=room,
                                                              subject="低压电工作业", start=start, end=end))


def _readiness(store: Store) -> None:
    """V3's check for tomorrow failed (an item); V1's passed."""
    with store.engine.begin() as conn:
        for venue, result in (("V3", "fail"), ("V1", "pass")):
            rid = conn.execute(schema.readiness_rounds.insert().values(
                venue_id=venue, exam_day=TOMORROW, requested_at=at(TODAY, "08:00"), requested_by="schedule",
                state="complete", sent_at=at(TODAY, "08:00"), deadline=at(TODAY, "08:30"), agents=[])).inserted_primary_key[0]
            items = [{"item": "logs", "result": result, "agents": [{"agent_id": "c1", "result": result,
                                                                       "seen": "日志被删除", "fix": "恢复日志"}]}]
            conn.execute(schema.venue_reports.insert().values(
                round_id=rid, venue_id=venue, exam_day=TOMORROW, completed_at=at(TODAY, "08:20"), result=result,
                items=items, agents=[], fixed=[], vault_index=None))
