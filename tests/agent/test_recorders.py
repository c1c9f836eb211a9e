"""Recorder watcher against real HTTP recorders in namespaces (needs root).

``tests/fake_recorder.py`` serves the recorded ISAPI / Dahua CGI shapes with Digest auth at
198.51.100.10 (``tests/fake_onvif.py`` the ONVIF Device + Recording Search SOAP services with
WS-Security); the watcher runs in the exam server's namespace (198.51.100.1) inside a driver
process that feeds its views through the agent's real State, so the events asserted here are the
edges the outbox would get. The recorder's state is switched by rewriting its control file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.netns import ROOT, Host, Lab
from tests.support import wait_for

REC_IP, SRV_IP = "198.51.100.10", "198.51.100.1"
REC_MAC, CAM1, CAM2 = "02:00:00:00:5e:10", "02:00:00:00:5e:21", "02:00:00:00:5e:22"
Events = list[tuple[str, dict[str, Any]]]

_DRIVER = """
import json, sys
from pathlib import Path
from agent.outbox import Outbox
from agent.state import State
from agent.watchers.recorders import RecordersWatcher
from protocol.inventory import Inventory
inv = Inventory.from_json(json.loads(sys.argv[1]))
w = RecordersWatcher(inventory=lambda: inv, background=False, **json.loads(sys.argv[2]))
w.init()
state = State(Outbox(Path(sys.argv[3])), snapshot_interval=3600)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "poll":
        for _ in range(cmd.get("n", 1)):
            w.poll()
        view = w.collect()
        events = [(p.kind, p.data) for p in state.observe("recorders", view) if p.kind != "recorders.snapshot"]
        out = {"events": events, "view": view.to_json()}
    else:
        out = {"sees": {t: w.sees(t) for t in cmd["targets"]}}
    print(json.dumps(out), flush=True)
"""


def _inventory(vendor: str) -> dict[str, Any]:
    cams = [{"mac": CAM1, "ip": "198.51.100.21", "role": "camera", "room": "101", "name": "cam-101-front",
             "vendor": vendor, "channel": 1},
            {"mac": CAM2, "ip": "198.51.100.22", "role": "camera", "room": "102", "name": "cam-102-front",
             "vendor": vendor, "channel": 2}]
    return {"venue_id": "v1", "version": 1, "devices": [
        {"mac": REC_MAC, "ip": REC_IP, "role": "recorder", "room": "control", "name": "nvr-1", "vendor": vendor}, *cams]}


class Rig:
    """The fake recorder (restartable) and the agent-side driver."""

    def __init__(self, lab: Lab, tmp: Path, vendor: str, password: str = "Exam-2024", **opts: Any) -> None:
        self.vendor, self.tmp = vendor, tmp
        self.srv = lab.add("srv", "02:00:00:00:5e:01", f"{SRV_IP}/24")
        self.rec = lab.add("rec", REC_MAC, f"{REC_IP}/24")
        self.control, self.log = tmp / "control.json", tmp / "requests.log"
        self.set(boot=time.time() - 864000)
        self.server: subprocess.Popen[bytes] | None = None
        self.start_server()
        opts = {"username": "admin", "password": password, "timeout": 1.0, "interval": 5.0, "max_record_lag": 30.0,
                "search_window": 3600.0, **opts}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.driver = subprocess.Popen(
            ["ip", "netns", "exec", self.srv.ns, sys.executable, "-c", _DRIVER, json.dumps(_inventory(vendor)),
             json.dumps(opts), str(tmp / "outbox.sqlite3")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def set(self, **ctl: Any) -> None:
        """Rewrite the recorder's control file (read again by every request)."""
        self.ctl = {**getattr(self, "ctl", {}), **ctl}
        self.control.write_text(json.dumps(self.ctl))

    def start_server(self) -> None:
        fake = ["fake_onvif.py"] if self.vendor == "onvif" else ["fake_recorder.py", "--vendor", self.vendor]
        self.server = self.rec.popen(sys.executable, str(ROOT / "tests" / fake[0]), *fake[1:],
                                     "--bind", REC_IP, "--control", str(self.control), "--log", str(self.log),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: f"{REC_IP}:80 " in self.rec.sh("ss", "-Hltn").stdout, timeout=10, what="fake recorder")

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.kill()
        self.server.wait()

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.driver.stdin and self.driver.stdout
        self.driver.stdin.write(json.dumps(cmd) + "\n")
        self.driver.stdin.flush()
        line = self.driver.stdout.readline()
        assert line, "driver died"
        return json.loads(line)

    def poll(self, n: int = 1) -> Events:
        """Poll ``n`` times, then judge once: the edge events."""
        out = self._ask({"op": "poll", "n": n})
        self.view = out["view"]
        return [(k, d) for k, d in out["events"]]

    def sees(self, *targets: str) -> dict[str, bool | None]:
        return self._ask({"op": "sees", "targets": list(targets)})["sees"]

    def close(self) -> None:
        for p in (self.driver, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def rig_factory(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(vendor: str, **kw: Any) -> Rig:
        made.append(Rig(lab, tmp_path, vendor, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _kinds(events: Events) -> list[str]:
    return [k for k, _ in events]


def test_hikvision_disk_channel_recording_reboot_and_down(rig_factory: Any) -> None:
    """Every recorder event from a Hikvision NVR over ISAPI with Digest: a healthy start is silent;
    HDD ``error``, a camera channel going offline, recording that stops progressing, low space, an
    uptime reset and a dead server each give one event with the raw words, and their ends too."""
    rig = rig_factory("hikvision", min_free_gb=100)
    assert rig.poll() == []
    rec = rig.view["recorders"][REC_MAC]
    assert (rec["state"], rec["model"], rec["firmware"]) == ("up", "DS-7608NI-K2", "V4.30.085 build 200916")
    assert rig.sees(CAM1, "198.51.100.22", "198.51.100.99") == {CAM1: True, "198.51.100.22": True, "198.51.100.99": None}

    rig.set(disk="error")
    (kind, data), = rig.poll()
    assert (kind, data["disk"], data["status"], data["serial"]) == (
        "recorder.disk_fault", "1", "error", "DS-7608NI-K20820200301CCRRD12345678WCVU")
    assert rig.poll() == []  # once per episode
    rig.set(disk="ok")
    assert _kinds(rig.poll()) == ["recorder.disk_ok"]

    rig.set(offline=[2], offline_word="offline")
    (kind, data), = rig.poll()
    assert (kind, data["channel"], data["status"], data["channel_ip"]) == ("recorder.channel_offline", 2, "offline",
                                                                          "198.51.100.22")
    assert data["camera"]["mac"] == CAM2
    assert rig.sees(CAM2, CAM1) == {CAM2: False, CAM1: True}
    rig.set(offline=[])
    (kind, data), = rig.poll()
    assert (kind, data["now"]["status"]) == ("recorder.channel_online", "connect")

    stuck = time.time() - 120
    rig.set(newest_end={"1": stuck})
    (kind, data), = rig.poll()
    assert (kind, data["channel"], data["camera"]["mac"]) == ("recorder.not_recording", 1, CAM1)
    assert 110 <= data["lag_s"] <= 200 and data["newest_end"].endswith("Z")
    assert rig.poll() == []
    rig.set(newest_end={"1": stuck, "2": time.time() - 2400})  # nothing in the short window: the wide one says how old
    (kind, data), = rig.poll()
    assert (kind, data["channel"]) == ("recorder.not_recording", 2) and 2390 <= data["lag_s"] <= 2500
    rig.set(newest_end={})
    assert sorted(_kinds(rig.poll())) == ["recorder.recording", "recorder.recording"]

    rig.set(free_mb=20 * 1024)
    (kind, data), = rig.poll()
    assert (kind, data["free_gb"], data["min_free_gb"], data["disks"]["1"]["status"]) == ("recorder.disk_low", 20.0, 100, "ok")
    rig.set(free_mb=1250304)
    assert _kinds(rig.poll()) == ["recorder.disk_space_ok"]

    rig.set(boot=time.time() - 30)
    (kind, data), = rig.poll()
    assert kind == "recorder.rebooted" and data["uptime_s"] < 60 and data["model"] == "DS-7608NI-K2"
    assert rig.poll() == []

    rig.stop_server()
    first_fail = time.time()
    assert rig.poll(2) == []  # debounce: two failed polls are not "down"
    (kind, data), = rig.poll()
    assert kind == "recorder.down" and "refused" in data["error"]
    assert first_fail - 1 <= data["since"] <= first_fail + 5  # back-dated to the first failed poll
    assert rig.sees(CAM1) == {CAM1: None}
    rig.start_server()
    assert rig.poll() == []  # up after 2
    (kind, data), = rig.poll()
    assert (kind, data["now"]["state"]) == ("recorder.up", "up")


def test_dahua_disk_channel_and_recording(rig_factory: Any) -> None:
    """The same facts from a Dahua NVR over its CGI: ``State=Error``/``IsError=true``, a channel
    ``Unconnect``, and a newest ``dav`` file that stops advancing; one recorder, so cameras map by
    the inventory's channel numbers."""
    rig = rig_factory("dahua")
    assert rig.poll() == []
    rec = rig.view["recorders"][REC_MAC]
    assert (rec["model"], rec["serial"], sorted(rec["channels"])) == ("DHI-NVR4208-8P-4KS2", "5G02FB4PAZ12345", ["1", "2"])
    assert rig.sees(CAM1, CAM2) == {CAM1: True, CAM2: True}

    rig.set(disk="Error", offline=[1], newest_end={"2": time.time() - 300})
    events = dict(rig.poll())
    assert events["recorder.disk_fault"]["status"] == "Error IsError=true"
    assert (events["recorder.channel_offline"]["status"], events["recorder.channel_offline"]["camera"]["mac"]) == (
        "Unconnect", CAM1)
    assert events["recorder.not_recording"]["channel"] == 2 and events["recorder.not_recording"]["lag_s"] >= 290
    assert rig.sees(CAM1) == {CAM1: False}
    rig.set(disk="Success", offline=[], newest_end={})
    assert sorted(_kinds(rig.poll())) == ["recorder.channel_online", "recorder.disk_ok", "recorder.recording"]


def test_wrong_password_is_auth_failed_not_down_and_spares_logins(rig_factory: Any) -> None:
    """Rejected credentials give ``recorder.auth_failed`` (the recorder is on), cost one rejected
    answer per login attempt, and until ``auth_retry`` passes only an unauthenticated liveness GET
    is sent, so the account is not locked and a dead recorder is still noticed."""
    rig = rig_factory("hikvision", password="wrong")
    (kind, data), = rig.poll()
    assert kind == "recorder.auth_failed" and "DS-7608NI-K2" in data["error"]
    assert [line.split()[-1] for line in rig.log.read_text().splitlines()] == ["401", "401"]
    assert rig.poll(3) == []
    # The server logs a request after answering it: give the last line a moment to land.
    wait_for(lambda: len(rig.log.read_text().splitlines()) >= 5, 5, 0.05, "the server's request log")
    time.sleep(0.2)
    assert len(rig.log.read_text().splitlines()) == 5  # three liveness GETs, no further logins
    rig.stop_server()
    assert _kinds(rig.poll(3)) == ["recorder.down"]


def test_onvif_recording_progress_frozen_down_and_up(rig_factory: Any) -> None:
    """An ONVIF (Profile G) recorder over SOAP with WS-Security: recording that progresses is
    silent; a LatestRecording that stops moving gives ``recorder.not_recording`` with the raw
    RecordingStatus and LatestRecording; channel online state and disks are unknown in ONVIF (no
    such events, ``sees`` is None); a recorder that stops answering is ``recorder.down`` after the
    debounce, back-dated."""
    rig = rig_factory("onvif")
    assert rig.poll() == []
    rec = rig.view["recorders"][REC_MAC]
    assert (rec["state"], rec["model"], rec["serial"], rec["firmware"], rec["manufacturer"]) == (
        "up", "NVR-8CH-G", "GNVR8G2023041500042", "V2.1.7 build 230415", "GenericNVR")
    assert rec["recording"] == {"1": {"recording": True}, "2": {"recording": True}} and "disks" not in rec
    assert rec["channels"]["2"]["camera"]["mac"] == CAM2 and rec["channels"]["2"]["online"] is None
    assert rig.sees(CAM1, CAM2) == {CAM1: None, CAM2: None}
    assert rig.poll() == []  # still progressing

    stuck = time.time() - 120
    rig.set(frozen={"2": stuck}, status={"2": "Stopped"})
    (kind, data), = rig.poll()
    assert (kind, data["channel"], data["camera"]["mac"], data["recording_status"], data["recording_token"]) == (
        "recorder.not_recording", 2, CAM2, "Stopped", "REC_CH02")
    assert data["newest_end"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stuck)) and 110 <= data["lag_s"] <= 200
    assert rig.poll() == []  # once per episode
    rig.set(frozen={}, status={})
    (kind, data), = rig.poll()
    assert (kind, data["channel"], data["now"]) == ("recorder.recording", 2, {"recording": True})

    rig.set(mute=True)  # accepts, never answers
    first_fail = time.time()
    assert rig.poll(2) == []
    (kind, data), = rig.poll()
    assert kind == "recorder.down" and "timeout" in data["error"]
    assert first_fail - 1 <= data["since"] <= first_fail + 5
    rig.set(mute=False)
    assert rig.poll() == []
    assert _kinds(rig.poll()) == ["recorder.up"]


def test_onvif_wrong_password_is_auth_failed(rig_factory: Any) -> None:
    """A rejected UsernameToken (``ter:NotAuthorized`` fault) is ``recorder.auth_failed``, costs one
    rejected call per login attempt, and afterwards only the PRE_AUTH GetSystemDateAndTime is sent."""
    rig = rig_factory("onvif", password="wrong")
    (kind, data), = rig.poll()
    assert kind == "recorder.auth_failed" and "NotAuthorized" in data["error"]
    assert [line.split()[1:] for line in rig.log.read_text().splitlines()] == [
        ["GetSystemDateAndTime", "200"], ["GetDeviceInformation", "400"]]
    assert rig.poll(3) == []
    assert [line.split()[1] for line in rig.log.read_text().splitlines()[2:]] == ["GetSystemDateAndTime"] * 3
    rig.stop_server()
    assert _kinds(rig.poll(3)) == ["recorder.down"]
