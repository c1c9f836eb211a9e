"""The LAN watcher on real packets: a namespace LAN on 192.0.2.0/24 with the agent, registered
devices and intruders; each scenario asserts exactly the device events expected, with evidence."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from protocol.inventory import Device, Inventory
from tests.netns import ROOT, Host, Lab
from tests.support import wait_for

AGENT_MAC = "02:aa:00:00:00:01"
CAM = Device("00:11:22:33:44:01", "192.0.2.21", "camera", "第1考场", "前门摄像头")
REC = Device("00:11:22:33:44:02", "192.0.2.22", "recorder", "", "录像机")
TERM = Device("00:11:22:33:44:03", None, "exam_terminal", "第1考场", "考试机 01")
SERVER = Device(AGENT_MAC, "192.0.2.1", "exam_server", "机房", "考试服务器")
INVENTORY = Inventory("V1", 3, (CAM, REC, TERM, SERVER))
INTEL = "00:1b:21:00:00:99"  # an OUI registered to Intel Corporate


class LanRig:
    """The lab, the watcher process in the agent namespace, and a reader of its outbox."""

    def __init__(self, lab: Lab, tmp: Path, sweep_interval: float, missing_after: int = 2) -> None:
        self.lab, self.tmp = lab, tmp
        self.agent = lab.add("agent", AGENT_MAC, "192.0.2.1/24")
        self.cam = lab.add("cam", CAM.mac, "192.0.2.21/24")
        self.rec = lab.add("rec", REC.mac, "192.0.2.22/24")
        self.term = lab.add("term", TERM.mac, "192.0.2.101/24")
        self.outbox = tmp / "outbox.sqlite3"
        settings = {"outbox": str(self.outbox), "interfaces": ["eth0"], "subnets": ["192.0.2.0/24"],
                    "inventory": INVENTORY.to_json(), "interval": 0.2, "sweep_interval": sweep_interval,
                    "sweep_rate": 1000, "missing_after": missing_after, "ready": str(tmp / "ready")}
        (tmp / "settings.json").write_text(json.dumps(settings))
        self.log = (tmp / "watcher.log").open("wb")
        self.proc = self.agent.popen(sys.executable, str(ROOT / "tests" / "lan_agent.py"), str(tmp / "settings.json"),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: (tmp / "ready").exists(), 20, what="the watcher to start")

    def sweeps(self) -> int:
        return int(self._state("sweeps") or 0)

    def _state(self, key: str) -> Any:
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?", (f"state:{key}",)).fetchone()
        finally:
            db.close()
        return None if row is None else json.loads(row[0])

    def events(self) -> list[dict[str, Any]]:
        """Device events in the outbox, oldest first."""
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT body FROM records ORDER BY seq").fetchall()
        finally:
            db.close()
        return [json.loads(b) for (b,) in rows if json.loads(b)["kind"].startswith("device.")]

    def lan_view(self) -> dict[str, Any]:
        return self._state("lan") or {}

    def baseline(self) -> None:
        """Wait for the first full sweep: every registered device present, no event."""
        wait_for(lambda: self.sweeps() >= 1, 30, 0.1, "the first sweep")
        wait_for(lambda: set(self.lan_view().get("devices", {})) >= {CAM.mac, REC.mac, TERM.mac}, 10, what="baseline")
        assert self.events() == []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def rig_factory(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    made: list[LanRig] = []

    def make(**kw: Any) -> LanRig:
        made.append(LanRig(lab, tmp_path, **kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def _speak(host: Host, ip: str) -> None:
    """A gratuitous ARP, as a device announcing itself does."""
    host.sh("arping", "-U", "-c", "1", "-I", "eth0", ip)


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["kind"] for e in events)


def test_unregistered_device_seen_when_it_speaks_and_silent_one_by_sweep(rig_factory) -> None:  # noqa: ANN001
    """A gratuitous ARP from an unknown Intel MAC is reported within 2 s with its evidence; a silent
    device with a randomised MAC is found by the next sweep and flagged as randomised."""
    rig = rig_factory(sweep_interval=4.0)
    rig.baseline()
    rogue = rig.lab.add("rogue", INTEL, "192.0.2.50/24")
    t0 = time.time()
    _speak(rogue, "192.0.2.50")
    (ev,) = wait_for(lambda: rig.events(), 5, 0.05, "device.unregistered")
    assert time.time() - t0 < 2.0
    assert ev["kind"] == "device.unregistered"
    d = ev["data"]
    assert (d["mac"], d["ip"], d["vendor"], d["how"], d["randomized"]) == (INTEL, "192.0.2.50", "Intel Corporate", "gratuitous-arp", False)
    rig.lab.add("silent", "06:12:34:56:78:9a", "192.0.2.51/24")
    wait_for(lambda: len(rig.events()) == 2, 12, 0.1, "the sweep to find the silent device")
    silent = rig.events()[1]["data"]
    assert (silent["mac"], silent["ip"], silent["randomized"], silent["vendor"]) == ("06:12:34:56:78:9a", "192.0.2.51", True, "")
    assert silent["how"] in ("arp-reply", "sweep-reply")  # its answer to our sweep
    time.sleep(5)  # another sweep: still one event per device (once per episode, not per packet)
    assert _kinds(rig.events()) == ["device.unregistered", "device.unregistered"]


def test_registered_device_moved_to_another_ip(rig_factory) -> None:  # noqa: ANN001
    """The camera re-addressed from .21 to .31 gives one device.ip_changed naming the inventory entry."""
    rig = rig_factory(sweep_interval=30.0)
    rig.baseline()
    rig.cam.set_ip("192.0.2.31/24")
    _speak(rig.cam, "192.0.2.31")
    (ev,) = wait_for(lambda: rig.events(), 5, 0.05, "device.ip_changed")
    assert ev["kind"] == "device.ip_changed"
    assert (ev["data"]["mac"], ev["data"]["ip"], ev["data"]["registered_ip"]) == (CAM.mac, "192.0.2.31", "192.0.2.21")
    assert ev["data"]["entry"] == CAM.to_json()
    _speak(rig.cam, "192.0.2.31")
    time.sleep(1)
    assert len(rig.events()) == 1


def test_registered_ip_taken_by_another_mac(rig_factory) -> None:  # noqa: ANN001
    """The recorder is unplugged and an unknown device takes its IP: unregistered + mac_changed at
    once, and the recorder is reported missing after two silent sweeps — and no ip_conflict."""
    rig = rig_factory(sweep_interval=2.0)
    rig.baseline()
    rig.lab.remove("rec")
    impostor = rig.lab.add("impostor", "00:1b:21:00:00:77", "192.0.2.22/24")
    _speak(impostor, "192.0.2.22")
    wait_for(lambda: len(rig.events()) >= 2, 5, 0.05, "unregistered + mac_changed")
    wait_for(lambda: len(rig.events()) >= 3, 15, 0.1, "device.missing for the recorder")
    time.sleep(2.5)
    events = {e["kind"]: e["data"] for e in rig.events()}
    assert sorted(events) == ["device.mac_changed", "device.missing", "device.unregistered"] and len(rig.events()) == 3
    assert (events["device.mac_changed"]["ip"], events["device.mac_changed"]["mac"],
            events["device.mac_changed"]["registered_mac"]) == ("192.0.2.22", "00:1b:21:00:00:77", REC.mac)
    assert events["device.missing"]["mac"] == REC.mac and events["device.missing"]["last_seen"] is not None


def test_ip_conflict(rig_factory) -> None:  # noqa: ANN001
    """A second device configured with the camera's IP: both answer the sweep — ip_conflict names
    both MACs (plus the facts that it is unregistered and uses a registered IP), once."""
    rig = rig_factory(sweep_interval=2.0)
    rig.baseline()
    rig.lab.add("twin", "00:1b:21:00:00:55", "192.0.2.21/24")
    wait_for(lambda: "device.ip_conflict" in _kinds(rig.events()), 10, 0.1, "device.ip_conflict")
    time.sleep(4.5)  # two more sweeps: no repeats
    assert _kinds(rig.events()) == ["device.ip_conflict", "device.mac_changed", "device.unregistered"]
    conflict = next(e["data"] for e in rig.events() if e["kind"] == "device.ip_conflict")
    assert conflict["ip"] == "192.0.2.21" and conflict["macs"] == sorted([CAM.mac, "00:1b:21:00:00:55"])


def test_flip_flop(rig_factory) -> None:  # noqa: ANN001
    """An intruder borrows the camera's IP, moves on, and the camera takes it back: flip_flop."""
    rig = rig_factory(sweep_interval=60.0)
    rig.baseline()
    thief = rig.lab.add("thief", "00:1b:21:00:00:66", "192.0.2.21/24")
    _speak(thief, "192.0.2.21")
    wait_for(lambda: len(rig.events()) >= 2, 5, 0.05, "unregistered + mac_changed")
    thief.set_ip("192.0.2.60/24")
    _speak(thief, "192.0.2.60")
    time.sleep(0.5)
    _speak(rig.cam, "192.0.2.21")
    wait_for(lambda: "device.flip_flop" in _kinds(rig.events()), 5, 0.05, "device.flip_flop")
    time.sleep(1)
    # The thief leaving the camera's address ends its mac_changed episode: device.ip_restored.
    assert _kinds(rig.events()) == ["device.flip_flop", "device.ip_restored", "device.mac_changed", "device.unregistered"]
    flip = next(e["data"] for e in rig.events() if e["kind"] == "device.flip_flop")
    assert flip["sequence"] == [CAM.mac, "00:1b:21:00:00:66", CAM.mac]


def test_dhcp_churn_of_an_allowed_device_is_no_event(rig_factory) -> None:  # noqa: ANN001
    """The DHCP-allowed terminal requests and gets new addresses: no event; its DHCP hostname and
    vendor class are kept as evidence in the LAN view."""
    rig = rig_factory(sweep_interval=2.0)
    rig.baseline()
    for ip in ("192.0.2.102", "192.0.2.103"):
        rig.term.python(
            "from scapy.all import Ether, IP, UDP, BOOTP, DHCP, sendp\n"
            f"mac = '{TERM.mac}'\n"
            "sendp(Ether(src=mac, dst='ff:ff:ff:ff:ff:ff')/IP(src='0.0.0.0', dst='255.255.255.255')/UDP(sport=68, dport=67)"
            "/BOOTP(chaddr=bytes.fromhex(mac.replace(':', '')), xid=7)"
            f"/DHCP(options=[('message-type', 'request'), ('requested_addr', '{ip}'), ('hostname', 'exam-pc-07'),"
            " ('vendor_class_id', 'MSFT 5.0'), 'end']), iface='eth0', verbose=False)\n")
        rig.term.set_ip(f"{ip}/24")
        _speak(rig.term, ip)
        time.sleep(1)
    wait_for(lambda: rig.lan_view()["devices"][TERM.mac]["ip"] == "192.0.2.103", 5, what="the terminal's new address")
    time.sleep(2.5)
    assert rig.events() == []
    term = rig.lan_view()["devices"][TERM.mac]
    assert (term["hostname"], term["vendor_class"]) == ("exam-pc-07", "MSFT 5.0")


def test_device_removed_is_missing_then_returns(rig_factory) -> None:  # noqa: ANN001
    """The camera unplugged for two sweeps → device.missing; plugged back → device.returned."""
    rig = rig_factory(sweep_interval=2.0)
    rig.baseline()
    rig.lab.remove("cam")
    (ev,) = wait_for(lambda: rig.events(), 15, 0.1, "device.missing")
    assert ev["kind"] == "device.missing" and ev["data"]["mac"] == CAM.mac and ev["data"]["registered_ip"] == "192.0.2.21"
    cam = rig.lab.add("cam2", CAM.mac, "192.0.2.21/24")
    _speak(cam, "192.0.2.21")
    wait_for(lambda: len(rig.events()) == 2, 5, 0.05, "device.returned")
    time.sleep(2.5)
    assert _kinds(rig.events()) == ["device.missing", "device.returned"]
    assert rig.events()[1]["data"]["now"]["ip"] == "192.0.2.21"
