"""A case from start to end on real parts: an agent killed during an exam, the case the rulebook
opens, the notice on MQTT, the authority's confirmation sealed in the vault, and the proofs."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from collector import cases, cli
from collector.broker import Mosquitto
from collector.rulerunner import SHIPPED_RULES
from collector.store import schema
from tests.support import Rig, wait_for


def _rules_with_short_debounce(tmp: Path) -> Path:
    """The shipped rules, with 810's one-minute debounce cut to 2 s so the test does not wait a minute."""
    folder = tmp / "rules"
    shutil.copytree(SHIPPED_RULES, folder, ignore=shutil.ignore_patterns("regulations", "README.md"))
    path = folder / "810-agent-silent.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("  seconds: 60", "  seconds: 2"), encoding="utf-8")
    return folder


def _exam_now(rig: Rig) -> None:
    """An exam in 第1考场 of V1 that started ten minutes ago."""
    now = time.time()
    with rig.store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=now, imported_by="test", source="test", sha256="0" * 64, months=[], sessions=1)).inserted_primary_key[0]
        conn.execute(schema.exam_sessions.insert().values(version_id=version, session_id="S1", venue_id="V1", room="第1考场",
                                                          subject="低压电工作业", start=now - 600, end=now + 3600))


def _cases(rig: Rig) -> list[dict]:
    with rig.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.cases).order_by(schema.cases.c.id)).mappings()]


def test_agent_killed_mid_exam_is_a_case_with_evidence_notice_and_sealed_actions(tmp_path: Path, broker: Mosquitto) -> None:
    """kill -9 during an exam → an 810 case (warning, session S1) with the agent.offline record as evidence,
    announced once on vg/v1/authority/cases; restart closes it; `cases confirm` is sealed into the vault
    by the running collector; the vault verifies and every evidence leaf has an inclusion proof."""
    folder = _rules_with_short_debounce(tmp_path)
    rig = Rig(tmp_path, broker.port, agent={"heartbeat": 0.5}, deadline_factor=3,
              collector_extra=f'[rules]\nfolder = "{folder}"\nreload_seconds = 1\n[notify]\nmin_severity = "warning"\n[vault]\ncheckpoint_interval = 1\n')
    _exam_now(rig)
    notices: list[dict] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, m: notices.append(json.loads(m.payload))
    sub.on_connect = lambda c, *_: c.subscribe("vg/v1/authority/cases", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        rig.collector.start()
        rig.agent.start()
        wait_for(lambda: any(a.online for a in rig.store.agents()), 30, what="agent online")
        rig.agent.kill()
        case = wait_for(lambda: next(iter(_cases(rig)), None), 20, 0.2, what="the agent-silent case")
        assert (case["rule_id"], case["severity"], case["session_id"], case["state"], case["subject"]) == \
            (810, "warning", "S1", "open", "agent=a1")
        detail = cases.case_detail(rig.store, case["id"])
        assert [e["kind"] for e in detail["evidence"]] == ["agent.offline"]
        assert detail["evidence"][0]["data"]["reason"] == "last_will"
        wait_for(lambda: len(notices) >= 1, 10, what="the case notice on MQTT")
        assert (notices[0]["case_id"], notices[0]["change"], notices[0]["rule_id"]) == (case["id"], "opened", 810)

        rig.agent.start()
        wait_for(lambda: _cases(rig)[0]["state"] == "closed", 30, 0.2, what="the case closed by the agent's return")
        assert [e["kind"] for e in cases.case_detail(rig.store, case["id"])["evidence"]] == ["agent.offline", "agent.online"]

        args = ["--config", str(rig.toml), "cases", "confirm", str(case["id"]), "--by", "市考试中心张三",
                "--reason", "考试期间主机被强制关机，证据中断"]
        assert cli.main(args) == 0
        wait_for(lambda: all(a["vault_index"] is not None for a in cases.case_detail(rig.store, case["id"])["actions"]),
                 10, 0.2, what="every case action sealed in the vault")
        actions = cases.case_detail(rig.store, case["id"])["actions"]
        assert [(a["action"], a["actor"]) for a in actions] == [("opened", "rulebook"), ("closed", "rulebook"),
                                                                ("confirm", "市考试中心张三")]
        assert cases.annual_counts(rig.store) == {"V1": {dt.datetime.now(ZoneInfo("Asia/Shanghai")).year: 1}}
        wait_for(lambda: len(notices) >= 3, 10, what="closed and confirmed notices")
        assert [n["change"] for n in notices] == ["opened", "closed", "confirmed"], "one notice per state change"
        time.sleep(1.5)  # a checkpoint seals the confirmation's leaf
    finally:
        sub.loop_stop()
        sub.disconnect()
        rig.stop()
    assert cli.main(["--config", str(rig.toml), "vault", "verify"]) == 0
    assert cli.main(["--config", str(rig.toml), "cases", "show", str(case["id"]), "--proofs"]) == 0
