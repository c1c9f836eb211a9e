"""The signed inventory reaches the agent over the real broker; a forged or stale config is refused
and the last good one stays in force, also across an agent restart."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.outbox import Outbox
from collector.broker import Mosquitto
from collector.configpush import config_message
from protocol import keys
from protocol.inventory import Device, Inventory
from tests.support import Rig, wait_for

CAMERA = Device("00:11:22:33:44:01", "192.0.2.21", "camera", "第1考场", "前门")


def _kinds(rig: Rig, kind: str) -> list[dict]:
    return [r["data"] for r in rig.store.records_of("a1", kind)]


def test_inventory_push_forgery_and_staleness(tmp_path: Path, broker: Mosquitto) -> None:
    """Import → config.applied v1 at the agent; a config signed by another key or older than the
    one in force → config.rejected, once each; after a restart the agent still holds v2."""
    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    rig.store.replace_inventory("V1", [CAMERA])
    wait_for(lambda: _kinds(rig, "config.applied") == [{"version": 1, "devices": 1, "sessions": 0}], 30,
             what="config v1 applied")
    rig.store.replace_inventory("V1", [CAMERA, Device("00:11:22:33:44:02", None, "exam_terminal")])
    wait_for(lambda: [d["version"] for d in _kinds(rig, "config.applied")] == [1, 2], 30, what="config v2 applied")

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    forged = Inventory("V1", 9, (CAMERA, Device("66:77:88:99:aa:bb", "192.0.2.66", "exam_terminal")))
    topic, payload, _ = config_message(keys.new_private_key(), "a1", forged, 0.0)
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: [d["reason"] for d in _kinds(rig, "config.rejected")] == ["bad_signature"], 30, what="forgery refused")
    collector_key = keys.load_private_pem((rig.data / "collector.key").read_text())
    stale = Inventory("V1", 1, (CAMERA,))
    topic, payload, _ = config_message(collector_key, "a1", stale, 0.0)
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: [d["reason"] for d in _kinds(rig, "config.rejected")] == ["bad_signature", "stale_version"], 30,
             what="stale config refused")
    client.loop_stop()

    rig.agent.stop()
    box = Outbox(rig.home / "data" / "outbox.sqlite3")
    held = Inventory.from_json(box.load_state("config")["inventory"])
    box.close()
    assert held.version == 2 and "66:77:88:99:aa:bb" not in held.by_mac
    rig.stop()


def test_schedule_import_reaches_the_agent(tmp_path: Path, broker: Mosquitto) -> None:
    """A schedule import moves the venue's config version; the agent applies the new config with the
    sessions that have not ended, and keeps them (outbox state) for the next restart."""
    from collector.schedule import import_plan

    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    rig.store.replace_inventory("V1", [CAMERA])
    wait_for(lambda: [d["version"] for d in _kinds(rig, "config.applied")] == [1], 30, what="config v1 applied")
    plan = tmp_path / "plan.csv"
    plan.write_text("考点编号,考场,科目,开始时间,结束时间\n"
                    "V1,第1考场,电工作业,2099-12-05 09:00,2099-12-05 11:00\n"
                    "V1,第1考场,焊接作业,2099-12-05 14:00,2099-12-05 16:00\n"
                    "V1,第1考场,高处作业,2000-12-05 09:00,2000-12-05 11:00\n", encoding="utf-8")
    result, warnings = import_plan(rig.store, plan, by="test")
    assert result.config_versions == {"V1": 2} and warnings == []
    wait_for(lambda: _kinds(rig, "config.applied")[1:] == [{"version": 2, "devices": 1, "sessions": 2}], 30,
             what="config v2 with two sessions applied")
    rig.agent.stop()
    box = Outbox(rig.home / "data" / "outbox.sqlite3")
    held = box.load_state("config")["sessions"]
    box.close()
    assert [s["session_id"] for s in held] == ["V1-第1考场-209912050900", "V1-第1考场-209912051400"]
    rig.stop()
