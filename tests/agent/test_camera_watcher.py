"""The camera watcher against real RTSP servers (GStreamer's, ``tests/rtsp_camera.py``), one per
namespace on a 198.51.100.0/24 test LAN, with the agent in its own namespace: every fault class
is reported once with its evidence, and a blind agent blames no camera. A Hikvision camera turned
inside an exam window is reported once (and its return), not outside; a room whose cameras all fail,
or which has an exam and no camera, is reported uncovered until a camera works or the window closes.

This module is also the in-namespace agent: ``python -m tests.agent.test_camera_watcher SETTINGS``
runs watcher → state → outbox as the runtime does (the test reads the outbox).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from protocol.inventory import Device, Inventory
from tests.netns import ROOT, Host, Lab, sh
from tests.support import wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
USER, PASSWORD = "admin", "Exam#2024"
ROOM = "第1考场"
ROOM2 = "第2考场"  # has exam sessions in some tests, and no camera
CAMS = {f"cam{i}": Device(f"00:11:22:33:44:0{i}", f"198.51.100.2{i}", "camera", ROOM, f"摄像头{i}", "hikvision",
                          http_port=80 if i == 1 else 0) for i in range(1, 6)}
REC = Device("00:11:22:33:44:10", "198.51.100.30", "recorder", "", "录像机", "hikvision", http_port=80)
GATEWAY = "198.51.100.1"


def _gst_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return Path(SYSTEM_PYTHON).exists() and subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


class CameraRig:
    """The lab: agent, gateway, recorder and cameras; the watcher process and its outbox."""

    def __init__(self, lab: Lab, tmp: Path, cameras: list[str], wrong_password: tuple[str, ...] = (),
                 sessions: list[dict[str, Any]] | None = None) -> None:
        self.lab, self.tmp = lab, tmp
        self.agent = lab.add("agent", "02:aa:00:00:00:01", "198.51.100.10/24")
        lab.add("gw", "02:aa:00:00:00:02", f"{GATEWAY}/24")
        lab.add("rec", REC.mac, f"{REC.ip}/24")
        self.cams: dict[str, subprocess.Popen[bytes]] = {}
        for name in cameras:
            host = lab.add(name, CAMS[name].mac, f"{CAMS[name].ip}/24")
            self.cams[name] = self._start_camera(host, name)
        for name in cameras:
            wait_for(lambda: "ready" in (tmp / f"{name}.log").read_text(), 20, what=f"{name} to listen")
        creds = {CAMS[n].mac: {"username": USER, "password": "wrong"} for n in wrong_password}
        (tmp / "creds.json").write_text(json.dumps(creds))
        os.chmod(tmp / "creds.json", 0o600)
        now = time.time()
        self.outbox = tmp / "outbox.sqlite3"
        settings = {"outbox": str(self.outbox), "ready": str(tmp / "ready"),
                    "inventory": Inventory("V1", 1, tuple(CAMS[n] for n in cameras) + (REC,)).to_json(),
                    "sessions": sessions or [{"room": ROOM, "start": now + 60, "end": now + 3600}],
                    "watcher": {"username": USER, "password": PASSWORD, "credentials_file": str(tmp / "creds.json"),
                                "gateway": GATEWAY, "interval_exam": 1.0, "interval_idle": 60.0, "sample_every": 2.0,
                                "sample_seconds": 1.0, "timeout": 1.0, "lead_minutes": 15}}
        (tmp / "settings.json").write_text(json.dumps(settings))
        self.log = (tmp / "agent.log").open("wb")
        self.proc = self.agent.popen(sys.executable, "-m", "tests.agent.test_camera_watcher", str(tmp / "settings.json"),
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        wait_for(lambda: (tmp / "ready").exists(), 20, what="the watcher to start")

    def _start_camera(self, host: Host, name: str) -> subprocess.Popen[bytes]:
        extra = ["--onvif-port", "80", "--clock-skew", "30", "--ptz-file", str(self.tmp / f"{name}.ptz")] \
            if CAMS[name].http_port else []
        log = (self.tmp / f"{name}.log").open("wb")
        return host.popen(SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_camera.py"), "--port", "554", "--user", USER,
                          "--password", PASSWORD, "--control", str(self.tmp / f"{name}.ctl"), *extra,
                          stdout=log, stderr=subprocess.STDOUT)

    def _read(self, sql: str, *args: Any) -> list[Any]:
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def events(self, prefix: tuple[str, ...] = ("camera.", "agent.")) -> list[dict[str, Any]]:
        bodies = [json.loads(b) for (b,) in self._read("SELECT body FROM records ORDER BY seq")]
        return [b for b in bodies if b["kind"].startswith(prefix) and b["kind"] != "agent.started"]

    def state(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key=?", f"state:{key}")
        return json.loads(rows[0][0]) if rows else None

    def statuses(self) -> dict[str, str]:
        cams = (self.state("cameras") or {}).get("cameras", {})
        return {name: cams.get(d.mac, {}).get("status", "") for name, d in CAMS.items() if name in self.cams}

    def stop(self) -> None:
        for p in [self.proc, *self.cams.values()]:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.log.close()


@pytest.fixture
def rig_factory(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    if not _gst_available():
        pytest.skip("needs GStreamer's RTSP server for the system Python (apt: gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-good python3-gi)")
    made: list[CameraRig] = []

    def make(**kw: Any) -> CameraRig:
        made.append(CameraRig(lab, tmp_path, **kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def _by_mac(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e["data"].get("mac", ""), []).append(e["kind"])
    return out


def test_each_camera_fault_is_reported_once_with_its_evidence(rig_factory: Any) -> None:
    """cam1 streams (ONVIF clock 30 s ahead); cam5's credentials are wrong → auth_failed, never down;
    then cam2's server is stopped (refused), cam3 is SIGSTOPped (timeouts), cam4's pipeline stalls:
    one camera.down / camera.down / camera.stream_stalled each, back-dated; cam4 recovers → camera.up."""
    rig = rig_factory(cameras=list(CAMS), wrong_password=("cam5",))
    wait_for(lambda: rig.statuses() == {"cam1": "up", "cam2": "up", "cam3": "up", "cam4": "up", "cam5": "auth_failed"},
             20, 0.2, "baseline")
    assert _by_mac(rig.events()) == {CAMS["cam5"].mac: ["camera.auth_failed"]}
    auth = rig.events()[0]["data"]
    assert auth["level"] == "L1" and auth["statuses"]["DESCRIBE"] == 401 and "401" in auth["error"]
    t0 = time.time()
    rig.cams["cam2"].send_signal(signal.SIGTERM)
    os.kill(rig.cams["cam3"].pid, signal.SIGSTOP)
    (rig.tmp / "cam4.ctl").write_text("stall")
    wait_for(lambda: rig.statuses() == {"cam1": "up", "cam2": "down", "cam3": "down", "cam4": "stalled",
                                        "cam5": "auth_failed"}, 30, 0.2, "the three faults")
    time.sleep(3)  # more failing probes: still one event each
    ev = {e["data"]["mac"]: e for e in rig.events()}
    assert _by_mac(rig.events()) == {CAMS[n].mac: [k] for n, k in [
        ("cam5", "camera.auth_failed"), ("cam2", "camera.down"), ("cam3", "camera.down"), ("cam4", "camera.stream_stalled")]}
    refused, frozen, stalled = (ev[CAMS[n].mac]["data"] for n in ("cam2", "cam3", "cam4"))
    assert (refused["level"], refused["error"], refused["failures"]) == (None, "connect: refused", 3)
    assert (frozen["level"], frozen["error"]) == ("L0", "OPTIONS: timeout")
    assert stalled["level"] == "L2" and stalled["statuses"]["PLAY"] == 200 and "RTP" in stalled["error"]
    for d in (refused, frozen, stalled):
        # A probe already under way at the fault starts (and is back-dated) up to one timeout earlier.
        assert t0 - 3.0 <= d["since"] == d["first_failure_at"] < d["probed_at"] and d["room"] == ROOM
    sample = wait_for(lambda: (p := rig.state("probes")[CAMS["cam1"].mac])["level"] == "L3" and p, 10, 0.1, "an L3 sample")
    assert sample["rtp_packets"] > 0 and 28 <= sample["clock_offset"] <= 32  # ONVIF: the camera runs 30 s ahead
    (rig.tmp / "cam4.ctl").write_text("ok")
    wait_for(lambda: rig.statuses()["cam4"] == "up", 20, 0.2, "cam4 back up")
    up = rig.events()[-1]
    assert up["kind"] == "camera.up" and up["data"]["mac"] == CAMS["cam4"].mac and up["data"]["successes"] == 2


def test_blind_agent_blames_no_camera(rig_factory: Any) -> None:
    """The agent's own cable is pulled (its switch port down): gateway, recorder and cameras all go
    silent → one agent.blind naming the witnesses, no camera event; plugged back → sight_restored."""
    rig = rig_factory(cameras=["cam1", "cam2"])
    wait_for(lambda: rig.statuses() == {"cam1": "up", "cam2": "up"}, 20, 0.2, "baseline")
    port = f"{rig.lab.tag}b0"  # the agent was plugged in first
    sh("ip", "link", "set", port, "down", ns=rig.lab.switch)
    (blind,) = wait_for(lambda: rig.events(), 20, 0.2, "agent.blind")
    assert blind["kind"] == "agent.blind"
    assert {w["target"] for w in blind["data"]["witnesses"]} == {f"icmp:{GATEWAY}", f"tcp:{REC.ip}:80"}
    time.sleep(6)  # many failed probes later: still no camera blamed
    assert [e["kind"] for e in rig.events()] == ["agent.blind"]
    sh("ip", "link", "set", port, "up", ns=rig.lab.switch)
    wait_for(lambda: len(rig.events()) == 2, 20, 0.2, "agent.sight_restored")
    time.sleep(3)
    assert [e["kind"] for e in rig.events()] == ["agent.blind", "agent.sight_restored"]
    assert rig.statuses() == {"cam1": "up", "cam2": "up"}


def _kinds(rig: CameraRig, *kinds: str) -> list[dict[str, Any]]:
    return [e for e in rig.events() if e["kind"] in kinds]


def _pos(elevation: float, azimuth: float, zoom: float) -> dict[str, float]:
    return {"elevation": elevation, "azimuth": azimuth, "zoom": zoom}


def test_ptz_turn_in_exam_window_and_room_coverage(rig_factory: Any, tmp_path: Path) -> None:
    """cam1 (Hikvision, PTZ over Digest) is turned in the window → one camera.ptz_moved with the home
    and the new position, whatever it does next; back near home → camera.ptz_restored. 第2考场 has an
    exam and no camera → room_uncovered (cameras: []). Both cameras of 第1考场 fail → room_uncovered
    naming both; cam1 back → room_covered."""
    (tmp_path / "cam1.ptz").write_text("0 1800 10")
    now = time.time()
    rig = rig_factory(cameras=["cam1", "cam2"], sessions=[{"room": ROOM, "start": now + 60, "end": now + 3600},
                                                          {"room": ROOM2, "start": now + 60, "end": now + 3600}])
    cam1, cam2 = CAMS["cam1"].mac, CAMS["cam2"].mac
    wait_for(lambda: rig.statuses() == {"cam1": "up", "cam2": "up"}, 20, 0.2, "baseline")
    wait_for(lambda: cam1 in (rig.state("cameras") or {}).get("ptz", {}), 10, 0.2, "cam1's home position")
    assert cam2 not in rig.state("cameras")["ptz"]  # no HTTP side: not asked, no event
    (empty,) = _kinds(rig, "camera.room_uncovered")
    assert empty["data"]["room"] == ROOM2 and empty["data"]["cameras"] == []
    assert _kinds(rig, "camera.ptz_moved", "camera.ptz_restored") == []

    (tmp_path / "cam1.ptz").write_text("0 2700 10")  # turned 90° away
    (moved,) = wait_for(lambda: _kinds(rig, "camera.ptz_moved"), 10, 0.2, "camera.ptz_moved")
    d = moved["data"]
    assert (d["before"], d["after"]) == (_pos(0, 1800, 10), _pos(0, 2700, 10))
    assert (d["mac"], d["room"], d["ip"], d["name"]) == (cam1, ROOM, CAMS["cam1"].ip, CAMS["cam1"].name)
    (tmp_path / "cam1.ptz").write_text("-300 900 40")  # still away, elsewhere: the same episode
    time.sleep(3)
    (tmp_path / "cam1.ptz").write_text("0 1803 10")  # back, within tolerance
    (restored,) = wait_for(lambda: _kinds(rig, "camera.ptz_restored"), 10, 0.2, "camera.ptz_restored")
    d = restored["data"]
    assert (d["before"], d["after"], d["home"]) == (_pos(-300, 900, 40), _pos(0, 1803, 10), _pos(0, 1800, 10))
    assert d["moved_since"] == moved["data"]["since"] and d["mac"] == cam1
    assert len(_kinds(rig, "camera.ptz_moved")) == 1

    rig.cams["cam2"].send_signal(signal.SIGTERM)
    os.kill(rig.cams["cam1"].pid, signal.SIGSTOP)
    (_, lost) = wait_for(lambda: len(u := _kinds(rig, "camera.room_uncovered")) == 2 and u, 30, 0.2, "room uncovered")
    assert lost["data"]["room"] == ROOM
    assert lost["data"]["cameras"] == [{"mac": cam1, "name": CAMS["cam1"].name, "state": "down"},
                                       {"mac": cam2, "name": CAMS["cam2"].name, "state": "down"}]
    downs = [e["data"]["since"] for e in _kinds(rig, "camera.down")]
    assert lost["data"]["since"] == round(max(downs), 3)
    os.kill(rig.cams["cam1"].pid, signal.SIGCONT)
    (covered,) = wait_for(lambda: _kinds(rig, "camera.room_covered"), 20, 0.2, "room covered")
    assert covered["data"]["room"] == ROOM and covered["data"]["reason"] == "camera_working"
    assert covered["data"]["since"] == lost["data"]["since"]
    assert {c["mac"]: c["state"] for c in covered["data"]["cameras"]} == {cam1: "up", cam2: "down"}
    assert len(_kinds(rig, "camera.room_uncovered")) == 2


def test_no_ptz_event_outside_exam_window(rig_factory: Any, tmp_path: Path) -> None:
    """The window closes: 第2考场 (no camera) is covered again (window_closed) and cam1 turned after the
    close is no event."""
    (tmp_path / "cam1.ptz").write_text("0 1800 10")
    now = time.time()
    end = now + 12
    rig = rig_factory(cameras=["cam1"], sessions=[{"room": ROOM, "start": now - 60, "end": end},
                                                  {"room": ROOM2, "start": now - 60, "end": end}])
    wait_for(lambda: rig.statuses() == {"cam1": "up"}, 20, 0.2, "baseline")
    wait_for(lambda: CAMS["cam1"].mac in (rig.state("cameras") or {}).get("ptz", {}), 10, 0.2, "home position")
    assert time.time() < end, "the rig took too long to start"
    (covered,) = wait_for(lambda: _kinds(rig, "camera.room_covered"), 20, 0.2, "window closed")
    assert covered["data"]["room"] == ROOM2 and covered["data"]["reason"] == "window_closed"
    wait_for(lambda: rig.state("cameras")["ptz"] == {}, 10, 0.2, "PTZ tracking to end with the window")
    (tmp_path / "cam1.ptz").write_text("450 0 40")
    time.sleep(4)
    assert [e["kind"] for e in rig.events()] == ["camera.room_uncovered", "camera.room_covered"]


def main() -> None:
    """The agent side, run inside the agent's namespace."""
    from agent.outbox import Outbox
    from agent.state import State
    from agent.watchers.cameras import CamerasWatcher
    from protocol.schedule import Session

    cfg = json.loads(Path(sys.argv[1]).read_text())
    inventory = Inventory.from_json(cfg["inventory"])
    sessions = tuple(Session.from_json(s) for s in cfg["sessions"])
    outbox = Outbox(Path(cfg["outbox"]))
    state = State(outbox, snapshot_interval=3600)
    options = dict(cfg["watcher"], credentials_file=Path(cfg["watcher"]["credentials_file"]))
    watcher = CamerasWatcher(inventory=lambda: inventory, sessions=lambda: sessions, **options)
    watcher.init()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(cfg["ready"]).write_text("ready")
    while not stop.is_set():
        watcher.news.clear()
        view = watcher.collect()
        outbox.append_many(state.observe("cameras", view))
        outbox.save_state("probes", view.probes)
        watcher.news.wait(0.2)
    watcher.stop()
    outbox.close()


if __name__ == "__main__":
    main()
