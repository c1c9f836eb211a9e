"""The readiness round trip on real parts: real Mosquitto, the real collector process (SQLite and
PostgreSQL index), and a small
fake agent (a paho client holding an enrolled agent's key) that answers the signed command with a
signed report on its ``rpt`` stream. The schedule opens the rounds; a venue whose agent answers
passes and is sealed until its last exam; a venue whose agent stays silent gets 无报告; an
on-demand re-check from the CLI re-seals and names what changed; the vault verifies."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from collector import cli
from collector import readiness as rd
from collector.broker import Mosquitto
from collector.store import schema
from protocol import keys, topics
from protocol.envelope import Envelope, record
from protocol.readiness import ITEMS, REPORT_KIND, Command, ItemResult, Report, parse_command
from tests.support import Rig, enroll_agent, wait_for

TZ = "Asia/Shanghai"


class FakeAgent:
    """Answers every readiness command it receives with an all-pass report whose baseline is the
    next of ``baselines`` (the last one repeats)."""

    def __init__(self, bundle: Path, port: int, baselines: list[dict[str, Any]]) -> None:
        self.bundle = keys.read_bundle(bundle)
        self.baselines = baselines
        self.commands: list[Command] = []
        self.seq = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{self.bundle.agent_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topics.topic(self.bundle.agent_id, "cmd"), qos=1)
        assert subscribed.wait(10), "the fake agent could not subscribe"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        agent_id = self.bundle.agent_id
        cmd = parse_command(msg.payload, self.bundle.collector_public_key, agent_id)  # raises on a forgery
        self.commands.append(cmd)
        now = time.time()
        baseline = self.baselines[min(len(self.commands), len(self.baselines)) - 1]
        rep = Report(agent_id, cmd.round_id, cmd.exam_day, now - 0.5, now,
                     tuple(ItemResult(i, "pass", "正常") for i in ITEMS), baseline, baseline["config_version"])
        self.seq += 1
        env = Envelope(agent_id, "fake-boot", self.seq, now, "rpt",
                       (record(REPORT_KIND, now, rep.to_json(), seq=self.seq),)).signed(self.bundle.private_key)
        self.client.publish(topics.topic(agent_id, "rpt"), env.encode(), qos=1)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _sessions(rig: Rig, day: str) -> float:
    """V1 and V2 each have an exam 09:00–11:00 on ``day``; returns its end."""
    zone = ZoneInfo(TZ)
    start = dt.datetime.fromisoformat(f"{day} 09:00").replace(tzinfo=zone).timestamp()
    with rig.store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=time.time(), imported_by="test", source="test", sha256="0" * 64, months=[], sessions=2)).inserted_primary_key[0]
        for venue in ("V1", "V2"):
            conn.execute(schema.exam_sessions.insert().values(version_id=version, session_id=f"{venue}-S1", venue_id=venue,
                                                              room="第1考场", subject="低压电工作业", start=start,
                                                              end=start + 7200))
    return start + 7200


def _rows(rig: Rig, table: sa.Table) -> list[dict[str, Any]]:
    with rig.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def _report_of(rig: Rig, venue: str, n: int = 1) -> dict[str, Any] | None:
    rows = [r for r in _rows(rig, schema.venue_reports) if r["venue_id"] == venue and r["vault_index"] is not None]
    return rows[n - 1] if len(rows) >= n else None


def test_round_trip_pass_seal_no_report_and_reseal(tmp_path: Path, broker: Mosquitto, db_url: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Scheduled round → signed command to a1 and b1 → a1's signed report → V1 PASS, sealed until
    11:00 tomorrow, the report vaulted; b1 silent → V2 无报告 at the 6 s deadline; `readiness run`
    → a1 answers with a new device → re-seal listing it, the first seal replaced; `vault verify` passes."""
    day = rd.next_day(rd.local_day(time.time(), TZ))
    # Round time 00:00: tomorrow's round is due as soon as the collector starts.
    rig = Rig(tmp_path, broker.port, db_url, collector_extra='[readiness]\ntime = "00:00"\ndeadline_minutes = 0.1\n'
                                                     '[vault]\ncheckpoint_interval = 1\n')
    enroll_agent(rig.store, rig.data, "b1", "V2", broker.port, tmp_path / "b1.bundle.json")
    last_end = _sessions(rig, day)
    first = {"devices": {"00:11:22:33:44:01": "192.0.2.21"}, "host": {"eth0": ["192.0.2.10/24"]},
             "cameras": {"00:11:22:33:44:01": {"room": "第1考场"}}, "recorders": {}, "config_version": 1}
    second = {**first, "devices": {**first["devices"], "02:11:22:33:44:66": "192.0.2.90"}}
    a1 = FakeAgent(rig.home / "agent.bundle.json", broker.port, [first, second])
    silent = FakeAgent(tmp_path / "b1.bundle.json", broker.port, [first])
    silent.client.on_message = lambda *_: None  # b1 receives the command and never answers
    started = time.monotonic()
    try:
        rig.collector.start()
        v1 = wait_for(lambda: _report_of(rig, "V1"), 30, 0.2, what="V1's venue report")
        assert [(c.venue_id, c.exam_day) for c in a1.commands] == [("V1", day)]
        assert (v1["result"], v1["agents"][0]["agent_id"], v1["agents"][0]["result"]) == ("pass", "a1", "pass")
        rounds = {r["venue_id"]: r for r in _rows(rig, schema.readiness_rounds)}
        assert (rounds["V1"]["requested_by"], rounds["V2"]["requested_by"]) == ("schedule", "schedule")
        (seal,) = _rows(rig, schema.seals)
        assert (seal["venue_id"], seal["exam_day"], seal["until"], seal["report_id"]) == ("V1", day, last_end, v1["id"])
        assert seal["sealed_at"] == v1["completed_at"]

        v2 = wait_for(lambda: _report_of(rig, "V2"), 30, 0.2, what="V2's no-report verdict")
        assert (v2["result"], rd.silent_agents(v2["agents"])) == ("no_report", ["b1"])
        assert v2["completed_at"] == pytest.approx(rounds["V2"]["sent_at"] + 6, abs=0.01)

        assert cli.main(["--config", str(rig.toml), "readiness", "run", "--venue", "V1", "--day", day,
                         "--by", "市考试中心张三"]) == 0
        wait_for(lambda: _report_of(rig, "V1", 2), 30, 0.2, what="the re-check's venue report")
        old, new = _rows(rig, schema.seals)
        assert old["replaced_by"] == new["id"]
        assert [(c["what"], c["key"], c["after"]) for c in new["changes"]] == [("device_added", "02:11:22:33:44:66", "192.0.2.90")]
        capsys.readouterr()
        assert cli.main(["--config", str(rig.toml), "readiness", "show", "--day", day]) == 0
        shown = capsys.readouterr().out
        assert "通过" in shown and "无报告" in shown
    finally:
        a1.stop()
        silent.stop()
        rig.stop()
    assert time.monotonic() - started < 60
    assert cli.main(["--config", str(rig.toml), "vault", "verify"]) == 0
