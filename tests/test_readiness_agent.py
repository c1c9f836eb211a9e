"""The agent's readiness check on real parts (issue 7, needs root): a namespace exam LAN on
198.51.100.0/24 with a GStreamer RTSP camera (ONVIF clock), a fake Hikvision recorder, an exam
terminal and the exam server, where the agent runs.

``venueguard-agent check --json`` runs as a real process in the server's namespace against the last
good config kept in its outbox. A venue in order passes every item (exit 0); each fault made on its
own — camera stopped, recorder disk error, unregistered device, registered device on another IP,
remote-control listener, log deleted, camera clock skewed — fails exactly its item, with a hint;
unknowns give exit 3 and a bad config 2. Last, the agent service on a real Mosquitto answers a
signed command with one signed ``readiness.report`` on ``rpt`` (the collector 10 s behind: clocks
fail), refuses a forged one, and a local check beside it takes nothing from its outbox.

One LAN for the module: each test undoes its fault.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from agent.outbox import Outbox
from agent.watchers.logmanifest import LogSource
from agent.watchers.logs import STATE_KEY, LogsWatcher
from protocol.envelope import decode
from protocol.inventory import Device, Inventory
from protocol.keys import make_bundle, new_private_key, write_bundle
from protocol.readiness import ITEMS, Command, command_message
from tests.agent.test_camera_watcher import SYSTEM_PYTHON, _gst_available
from tests.netns import ROOT, Host, Lab, require_root
from tests.support import Proc, wait_for

CAM_USER, CAM_PASSWORD = "admin", "Exam#2024"
ROOM = "第1考场"
SERVER = Device("02:aa:00:00:00:01", "198.51.100.1", "exam_server", "机房", "考试服务器")
REC = Device("02:00:00:00:5e:10", "198.51.100.10", "recorder", "机房", "录像机", "hikvision", http_port=80)
CAM1 = Device("00:11:22:33:44:01", "198.51.100.21", "camera", ROOM, "前门摄像头", "hikvision", http_port=80, channel=1)
CAM2 = Device("00:11:22:33:44:02", "198.51.100.22", "camera", ROOM, "后门摄像头", "hikvision", http_port=80, channel=2)
TERM = Device("00:11:22:33:44:03", "198.51.100.101", "exam_terminal", ROOM, "考试机01")
INTEL = "00:1b:21:00:00:99"  # an OUI registered to Intel Corporate


def _toml(tmp: Path, extra: str = "") -> str:
    return f"""
[agent]
bundle = "agent.bundle.json"
data_dir = "data"

[watchers.host]
exam_subnets = ["198.51.100.0/24"]

[watchers.lan]
enabled = true
interfaces = ["eth0"]
subnets = ["198.51.100.0/24"]
sweep_rate = 1000

[watchers.recorders]
enabled = true
username = "admin"
password = "Exam-2024"
timeout = 2
max_record_lag = 60
search_window = 3600

[watchers.cameras]
enabled = true
username = "{CAM_USER}"
password = "{CAM_PASSWORD}"
timeout = 1
sample_seconds = 1

[watchers.isolation]
enabled = true
targets = ["tcp:203.0.113.5:443"]
timeout = 1

[watchers.logs]
enabled = true

[[watchers.logs.sources]]
name = "exam-app"
type = "application"
paths = ["{tmp}/logs/*.log"]

[readiness]
lan_wait = 0.5
host_min_free_gb = 0.01
host_min_free_percent = 0.1
{extra}"""


class Venue:
    """The LAN, its devices, the agent's home (config, bundle, outbox) and a way to run ``check``."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.home = tmp / "agent"
        self.home.mkdir()
        self.collector_key = new_private_key()
        self.bundle = make_bundle("a1", "V1", self.collector_key, "127.0.0.1", 1883)
        write_bundle(self.home / "agent.bundle.json", self.bundle)
        (self.home / "agent.toml").write_text(_toml(tmp))
        self.outbox = self.home / "data" / "outbox.sqlite3"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server = lab.add("srv", SERVER.mac, f"{SERVER.ip}/24")
        self.rec = lab.add("rec", REC.mac, f"{REC.ip}/24")
        self.term = lab.add("term", TERM.mac, f"{TERM.ip}/24")
        self.recorder(disk="ok", offline=[])
        self.procs.append(self.rec.popen(sys.executable, str(ROOT / "tests" / "fake_recorder.py"), "--vendor", "hikvision",
                                         "--bind", REC.ip, "--control", str(tmp / "recorder.json"),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.cam1 = self.camera("cam1", CAM1)
        wait_for(lambda: f"{REC.ip}:80 " in self.rec.sh("ss", "-Hltn").stdout, 10, what="the fake recorder")
        (tmp / "logs").mkdir()
        (tmp / "logs" / "app.log").write_text("2026-11-28 08:00:00 考生 A01 登录\n")
        (tmp / "logs" / "app.log.1").write_text("2026-11-27 08:00:00 考生 B01 登录\n")
        self.configure(CAM1)
        self.manifest()
        self.clock(0.05)

    def camera(self, name: str, dev: Device, skew: float = 0.0) -> subprocess.Popen[bytes]:
        """An RTSP camera with an ONVIF clock ``skew`` seconds ahead, in its own namespace."""
        host = self.lab.add(name, dev.mac, f"{dev.ip}/24")
        log = self.tmp / f"{name}.log"
        proc = host.popen(SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_camera.py"), "--port", "554", "--user", CAM_USER,
                          "--password", CAM_PASSWORD, "--onvif-port", "80", "--clock-skew", str(skew),
                          stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for(lambda: "ready" in log.read_text(), 20, what=f"{name} to listen")
        return proc

    def recorder(self, **ctl: Any) -> None:
        """Rewrite the fake recorder's control file (read on every request)."""
        self.ctl = {**getattr(self, "ctl", {"boot": time.time() - 864000}), **ctl}
        (self.tmp / "recorder.json").write_text(json.dumps(self.ctl))

    def _save(self, key: str, value: Any) -> None:
        box = Outbox(self.outbox)
        try:
            box.save_state(key, value)
        finally:
            box.close()

    def configure(self, *cameras: Device) -> None:
        """The last good signed config, as the agent keeps it: inventory and tomorrow's sessions."""
        tomorrow = dt.datetime.combine(dt.date.today() + dt.timedelta(days=1), dt.time(9, 0)).timestamp()
        sessions = [{"room": ROOM, "start": tomorrow, "end": tomorrow + 7200, "subject": "安全生产"},
                    {"room": ROOM, "start": tomorrow + 4 * 3600, "end": tomorrow + 6 * 3600}]
        inv = Inventory("V1", 1, (SERVER, REC, TERM, *cameras))
        self._save("config", {"inventory": inv.to_json(), "sessions": sessions})

    def clock(self, offset: float | None) -> None:
        """What the uplink keeps from the last ack: the collector's clock − ours (None: never)."""
        self._save("collector_clock", None if offset is None else {"offset": offset, "at": time.time()})

    def manifest(self) -> None:
        """A fresh logs manifest, as the service's logs watcher keeps it; its lines count as delivered."""
        box = Outbox(self.outbox)
        try:
            box.save_state(STATE_KEY, None)
            w = LogsWatcher(sources=[LogSource("exam-app", "application", (f"{self.tmp}/logs/*.log",))], outbox=box,
                            inotify=False)
            w.init()
            w.collect()
            w.stop()
            box.ack(box.last_seq())
        finally:
            box.close()

    def check(self, *args: str, config: Path | None = None) -> tuple[int, Any]:
        """``venueguard-agent check --json`` in the server's namespace: (exit code, report or stdout)."""
        cmd = ["ip", "netns", "exec", self.server.ns, sys.executable, "-m", "agent.cli", "check",
               "--config", str(config or self.home / "agent.toml"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if "--json" in args and proc.returncode in (0, 1, 3):
            return proc.returncode, json.loads(proc.stdout)
        return proc.returncode, proc.stdout + proc.stderr

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venue]:
    require_root()
    if not _gst_available():
        pytest.skip("needs GStreamer's RTSP server for the system Python (apt: gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-good python3-gi)")
    with Lab() as lab:
        v = Venue(lab, tmp_path_factory.mktemp("readiness"))
        try:
            yield v
        finally:
            v.close()


def _items(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["item"]: i for i in report["items"]}


def _only_failure(venue: Venue, item: str) -> dict[str, Any]:
    """Run the check; exactly ``item`` fails (exit 1), everything else passes; return the item."""
    rc, report = venue.check("--json")
    results = {k: v["result"] for k, v in _items(report).items()}
    assert results == {k: "fail" if k == item else "pass" for k in ITEMS}, json.dumps(report, ensure_ascii=False)
    assert rc == 1 and report["result"] == "fail"
    found = _items(report)[item]
    assert found["seen"] and found["fix"]
    return found


def test_a_venue_in_order_passes_every_item(venue: Venue) -> None:
    """Every item passes (exit 0); the baseline is what the seal will keep; the table is Chinese."""
    rc, report = venue.check("--json")
    assert rc == 0, json.dumps(report, ensure_ascii=False, indent=1)
    assert [i["item"] for i in report["items"]] == list(ITEMS)
    assert {i["result"] for i in report["items"]} == {"pass"} and report["result"] == "pass"
    assert (report["agent_id"], report["round_id"], report["collector_connected"], report["config_version"]) == \
        ("a1", None, False, 1)
    assert report["exam_day"] == (dt.date.today() + dt.timedelta(days=1)).isoformat()
    items = _items(report)
    assert items["cameras"]["evidence"]["cameras"][CAM1.mac]["level"] == "L3"
    disk = items["recorder_disks"]["evidence"][REC.mac]
    # 4 Mbit/s (no bitrate from the recorder) x (2 h + 2 h + 2 x 15 min lead) for the one exam-room camera.
    assert disk["need_gb"] == round(4e6 / 8 * 4.5 * 3600 / 2**30, 1) and disk["free_gb"] > disk["need_gb"]
    assert abs(items["clocks"]["evidence"]["devices"][CAM1.mac]) <= 2
    base = report["baseline"]
    assert {base["devices"][d.mac] for d in (REC, CAM1, TERM)} == {REC.ip, CAM1.ip, TERM.ip}
    assert f"{SERVER.ip}/24" in base["host"]["eth0"]
    assert base["cameras"][CAM1.mac]["level"] == "L3" and base["cameras"][CAM1.mac]["room"] == ROOM
    rec = base["recorders"][REC.mac]
    assert rec["serial"] and rec["model"] and rec["channels"]["1"]["camera"] == CAM1.mac
    assert base["config_version"] == 1

    rc, text = venue.check()
    assert rc == 0
    assert "未连接采集端，使用最近一次有效配置（版本 1）" in text
    assert "检查项" in text and "如何整改" in text and "结论：通过" in text


def test_camera_stopped(venue: Venue) -> None:
    """The camera hangs and the recorder loses it: only the cameras item fails, naming it."""
    os.kill(venue.cam1.pid, signal.SIGSTOP)
    venue.recorder(offline=[1])
    try:
        item = _only_failure(venue, "cameras")
    finally:
        os.kill(venue.cam1.pid, signal.SIGCONT)
        venue.recorder(offline=[])
    assert CAM1.name in item["seen"] and CAM1.ip in item["seen"] and "电源" in item["fix"]
    assert item["evidence"]["cameras"][CAM1.mac]["status"] == "down"


def test_recorder_disk_error(venue: Venue) -> None:
    venue.recorder(disk="error")
    try:
        item = _only_failure(venue, "recorder_disks")
    finally:
        venue.recorder(disk="ok")
    assert "error" in item["seen"] and REC.name in item["seen"] and "硬盘" in item["fix"]


def test_unregistered_device(venue: Venue) -> None:
    venue.lab.add("rogue", INTEL, "198.51.100.50/24")
    try:
        item = _only_failure(venue, "lan_devices")
    finally:
        venue.lab.remove("rogue")
    assert INTEL in item["seen"] and "198.51.100.50" in item["seen"] and "Intel" in item["seen"]
    assert list(item["evidence"]["episodes"]) == [f"unregistered:{INTEL}"]


def test_registered_device_on_another_address(venue: Venue) -> None:
    venue.term.set_ip("198.51.100.102/24")
    try:
        item = _only_failure(venue, "lan_devices")
    finally:
        venue.term.set_ip(f"{TERM.ip}/24")
    assert TERM.name in item["seen"] and TERM.ip in item["seen"] and "198.51.100.102" in item["seen"]


def test_remote_control_listener(venue: Venue) -> None:
    """A VNC-style listener on 0.0.0.0:5900 on the exam server."""
    code = "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 5900)); s.listen(); print('up', flush=True); time.sleep(120)"
    proc = venue.server.popen(sys.executable, "-c", code, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        item = _only_failure(venue, "remote_control")
    finally:
        proc.kill()
        proc.wait()
    assert "5900" in item["seen"] and "0.0.0.0" in item["seen"] and "远程控制" in item["fix"]


def test_camera_clock_skewed(venue: Venue) -> None:
    """A second exam-room camera whose clock runs 30 s ahead: the clocks item fails, naming it."""
    cam2 = venue.camera("cam2", CAM2, skew=30)
    venue.configure(CAM1, CAM2)
    try:
        item = _only_failure(venue, "clocks")
    finally:
        cam2.kill()
        cam2.wait()
        venue.lab.remove("cam2")
        venue.configure(CAM1)
    assert CAM2.name in item["seen"] and "NTP" in item["fix"]
    assert 28 <= item["evidence"]["devices"][CAM2.mac] <= 32


def test_log_deleted(venue: Venue) -> None:
    """An archived log deleted since the last manifest (the service may have been down meanwhile)."""
    archive = venue.tmp / "logs" / "app.log.1"
    text = archive.read_text()
    archive.unlink()
    try:
        item = _only_failure(venue, "logs")
    finally:
        archive.write_text(text)
        venue.manifest()
    assert str(archive) in item["seen"] and "删除" in item["seen"] and "3年" in item["fix"]


def test_exit_codes_for_unknown_and_bad_config(venue: Venue) -> None:
    """No recent ack and no collector: the clocks cannot be compared (exit 3, nothing failed); a bad
    option or exam day is exit 2."""
    venue.clock(None)
    try:
        rc, report = venue.check("--json")
    finally:
        venue.clock(0.05)
    clocks = _items(report)["clocks"]
    assert rc == 3 and report["result"] == "unknown" and clocks["result"] == "unknown"
    assert "未连接采集端" in clocks["seen"]
    assert {i["result"] for i in report["items"] if i["item"] != "clocks"} == {"pass"}
    bad = venue.home / "bad.toml"
    bad.write_text(_toml(venue.tmp, "[watchers.typo]\nenabled = true\n"))
    rc, text = venue.check("--json", config=bad)
    assert rc == 2 and "typo" in text
    rc, _ = venue.check("--day", "tomorrow")
    assert rc == 2


def _records(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [(seq, stream, json.loads(body)) for seq, stream, body in
                db.execute("SELECT seq, stream, body FROM records ORDER BY seq")]
    finally:
        db.close()


def test_command_over_the_broker_gives_one_signed_report(venue: Venue, broker_factory: Callable[..., Any]) -> None:
    """The agent service on a real Mosquitto: a local check beside it passes and takes no row; a
    signed command (the collector 10 s behind) gives one readiness.report on rpt, signed by the agent,
    whose clocks item fails; a repeat of the round is ignored; a forged command is refused."""
    broker = broker_factory(netns=venue.server.ns)
    toml = venue.home / "service.toml"
    toml.write_text(_toml(venue.tmp, f"\n[uplink]\nbroker_port = {broker.port}\nreconnect_min = 0.2\nreconnect_max = 1\n"))
    service = Proc(["-m", "agent.cli", "run", "--config", str(toml)], venue.tmp / "service.log", venue.server.ns).start()
    try:
        wait_for(lambda: any(r[2]["kind"] == "agent.started" for r in _records(venue.outbox)), 20, what="the service")
        time.sleep(1.0)
        before = [seq for seq, _, _ in _records(venue.outbox)]
        rc, report = venue.check("--json")
        assert rc == 0, json.dumps(report, ensure_ascii=False)
        assert set(before) <= {seq for seq, _, _ in _records(venue.outbox)}  # nothing taken from the service

        sub = subprocess.Popen(["ip", "netns", "exec", venue.server.ns, "mosquitto_sub", "-p", str(broker.port),
                                "-t", "vg/v1/a1/rpt", "-C", "1", "-W", "60", "-V", "mqttv5"], stdout=subprocess.PIPE)
        now = time.time()
        cmd = Command(7, "V1", (dt.date.today() + dt.timedelta(days=1)).isoformat(), now + 600, now - 10)
        _, payload, _ = command_message(venue.collector_key, "a1", cmd)
        forged = command_message(new_private_key(), "a1", Command(8, "V1", cmd.exam_day, now + 600, now))[1]
        for body in (payload, payload, forged):
            _publish(venue.server, broker.port, body)
        out, _ = sub.communicate(timeout=60)
        env = decode(out.strip())
        assert env.stream == "rpt" and env.verify(venue.bundle.private_key.public_key())
        (rec,) = env.records
        assert rec["kind"] == "readiness.report" and rec["data"]["round_id"] == 7
        results = {i["item"]: i["result"] for i in rec["data"]["items"]}
        assert results == {k: "fail" if k == "clocks" else "pass" for k in ITEMS}, json.dumps(rec, ensure_ascii=False)
        clocks = next(i for i in rec["data"]["items"] if i["item"] == "clocks")
        assert clocks["evidence"]["host"]["source"] == "command" and -11 < clocks["evidence"]["host"]["offset"] < -9.5
        assert rec["data"]["collector_connected"] is True and rec["data"]["baseline"]["config_version"] == 1

        time.sleep(1.0)
        rows = _records(venue.outbox)
        reports = [(stream, r["kind"]) for _, stream, r in rows if r["kind"] == "readiness.report"]
        assert reports == [("rpt", "readiness.report")]  # the repeat of round 7 was ignored
        (refused,) = [r["data"] for _, _, r in rows if r["kind"] == "readiness.refused"]
        assert (refused["reason"], refused["round_id"]) == ("bad_signature", 8)
    finally:
        service.stop()


def _publish(host: Host, port: int, payload: bytes) -> None:
    """One QoS 1 MQTT v5 publish on the agent's command topic, from inside its namespace."""
    subprocess.run(["ip", "netns", "exec", host.ns, "mosquitto_pub", "-p", str(port), "-t", "vg/v1/a1/cmd", "-q", "1",
                    "-V", "mqttv5", "-s"], input=payload, check=True, timeout=10)


def _cases_of(url: str, rule_id: int) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from collector.store import Store
    from collector.store import schema

    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(schema.cases).where(schema.cases.c.rule_id == rule_id)).mappings()]
    finally:
        store.close()


def test_a_passing_round_seals_the_venue_and_a_new_device_is_an_after_seal_case(
        venue: Venue, broker_factory: Callable[..., Any]) -> None:
    """The whole workflow on real parts: the authority asks for a check (`readiness run`), the
    running collector sends the signed command, the agent service checks the namespace LAN and
    reports, the venue passes and is sealed until tomorrow's last exam ends; a device plugged in
    afterwards is an after-seal case (rule 710) in the collector's store."""
    import sqlalchemy as sa

    from collector import cli as collector_cli
    from collector.store import Store
    from collector.store import schema
    from protocol.keys import private_pem, public_b64, write_secret
    from tests.support import collector_toml

    broker = broker_factory(netns=venue.server.ns)
    data = venue.tmp / "collector"
    data.mkdir()
    write_secret(data / "collector.key", private_pem(venue.collector_key))  # the key the agent's bundle trusts
    url = f"sqlite:///{data / 'index.sqlite3'}"
    conf = data / "collector.toml"
    conf.write_text(collector_toml(data, broker.port, url, extra='[schedule]\ntimezone = "UTC"\n'
                                   '[readiness]\nscheduled = false\ndeadline_minutes = 5\n'))
    store = Store(url)
    store.migrate()
    store.add_venue("V1", "广州市某考点")
    store.enroll_agent("a1", "V1", public_b64(venue.bundle.private_key))
    store.replace_inventory("V1", [SERVER, REC, TERM, CAM1])
    tomorrow = dt.datetime.combine(dt.date.today() + dt.timedelta(days=1), dt.time(9, 0), dt.timezone.utc).timestamp()
    with store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=time.time(), imported_by="test", source="test", sha256="0" * 64, months=[], sessions=1)
        ).inserted_primary_key[0]
        conn.execute(schema.exam_sessions.insert().values(version_id=version, session_id="S1", venue_id="V1", room=ROOM,
                                                          subject="安全生产", start=tomorrow, end=tomorrow + 7200))
    store.close()
    toml = venue.home / "service.toml"
    toml.write_text(_toml(venue.tmp, f"\n[uplink]\nbroker_port = {broker.port}\nreconnect_min = 0.2\nreconnect_max = 1\n"))
    collector = Proc(["-m", "collector.cli", "--config", str(conf), "run"], venue.tmp / "collector.log", venue.server.ns)
    service = Proc(["-m", "agent.cli", "run", "--config", str(toml)], venue.tmp / "service2.log", venue.server.ns)
    collector.start()
    service.start()
    try:
        day = (dt.date.today() + dt.timedelta(days=1)).isoformat()
        assert collector_cli.main(["--config", str(conf), "readiness", "run", "--venue", "V1", "--day", day,
                                   "--by", "市考试中心"]) == 0

        def seal() -> Any:
            store = Store(url)
            try:
                with store.engine.connect() as conn:
                    return conn.execute(sa.select(schema.seals)).mappings().first()
            finally:
                store.close()

        sealed = wait_for(seal, 90, 0.5, what="a passing venue report and its seal")
        assert sealed["until"] == tomorrow + 7200 and sealed["baseline"]["devices"][CAM1.mac] == CAM1.ip
        venue.lab.add("rogue", INTEL, "198.51.100.50/24").sh("arping", "-U", "-c", "2", "-I", "eth0", "198.51.100.50")
        (case,) = wait_for(lambda: _cases_of(url, 710), 60, 0.5, what="the after-seal case")
        assert (case["severity"], case["subject"], case["venue_id"]) == ("violation", f"mac={INTEL}", "V1")
    finally:
        service.stop()
        collector.stop()
        if "rogue" in venue.lab.hosts:
            venue.lab.remove("rogue")
