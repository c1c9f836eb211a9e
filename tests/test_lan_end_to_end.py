"""The whole LAN path on real parts: inventory imported at the collector → signed config over MQTT →
the agent's LAN watcher on a namespace LAN → device.unregistered in the collector's store.

Broker, collector and agent all run inside the agent's namespace (their 127.0.0.1 is its own
loopback), so nothing touches the host's network.
"""

from __future__ import annotations

from pathlib import Path

from collector.broker import Mosquitto
from protocol.inventory import Device
from tests.netns import Lab
from tests.support import Rig, wait_for

LAN = """[watchers.lan]
enabled = true
interfaces = ["eth0"]
subnets = ["192.0.2.0/24"]
interval = 0.2
sweep_interval = 3
sweep_rate = 1000
"""


def test_unregistered_device_reaches_the_collector(lab: Lab, tmp_path: Path) -> None:
    """Only after the signed inventory arrives does the agent judge; then an unknown device on the
    exam LAN is one device.unregistered in the store, with vendor and how it was seen."""
    agent_ns = lab.add("agent", "02:aa:00:00:00:01", "192.0.2.1/24")
    lab.add("cam", "00:11:22:33:44:01", "192.0.2.21/24")
    broker = Mosquitto(tmp_path / "broker", netns=agent_ns.ns).start()
    try:
        rig = Rig(tmp_path, broker.port, netns=agent_ns.ns, agent={"steps": 1, "extra": LAN})
        rig.store.replace_inventory("V1", [Device("00:11:22:33:44:01", "192.0.2.21", "camera", "第1考场"),
                                           Device("02:aa:00:00:00:01", "192.0.2.1", "exam_server")])
        rig.collector.start()
        rig.agent.start()
        wait_for(lambda: rig.store.records_of("a1", "config.applied"), 30, what="the signed inventory at the agent")
        wait_for(lambda: rig.store.records_of("a1", "lan.snapshot"), 30, what="the LAN watcher's first view")
        rogue = lab.add("rogue", "00:1b:21:00:00:99", "192.0.2.50/24")
        rogue.sh("arping", "-U", "-c", "1", "-I", "eth0", "192.0.2.50")
        (ev,) = wait_for(lambda: rig.store.records_of("a1", "device.unregistered"), 20, what="device.unregistered")
        assert (ev["data"]["mac"], ev["data"]["ip"], ev["data"]["vendor"]) == ("00:1b:21:00:00:99", "192.0.2.50", "Intel Corporate")
        assert ev["venue_id"] == "V1"
        kinds = {r["kind"] for r in rig.store.records_of("a1") if r["kind"].startswith("device.")}
        assert kinds == {"device.unregistered"}
        rig.stop()
    finally:
        broker.kill()
