"""The readiness check's parts without a LAN: item verdicts on what watchers saw, the exam day, the
disk space an exam day needs, recorder clocks and bitrates, the logs watcher's memory of what it
reported, the read-only outbox, and the service's handling of commands (a stand-in check)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.outbox import Outbox, OutboxReader, Pending
from agent.readiness import ClockReading, Context, Seen, exam_day
from agent.readiness_items import judge
from agent.readiness_service import ReadinessService, fitted
from agent.remote_config import RemoteConfig
from agent.watchers.host import HostView
from agent.watchers.isapi import parse_bitrates
from agent.watchers.isolation import IsolationView
from agent.watchers.lan_view import LanView
from agent.watchers.logmanifest import LogSource
from agent.watchers.logs import LogsWatcher
from agent.watchers.recorder_probe import Probe, clock_offset
from agent.watchers.recorder_view import RecorderView
from agent.watchers.recorders import RecorderCheck
from protocol.inventory import Device, Inventory
from protocol.keys import make_bundle, new_private_key
from protocol.readiness import ITEMS, Command, ItemResult, Report, command_message
from protocol.schedule import Session

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
SRV = Device("02:00:00:00:00:01", "192.0.2.1", "exam_server", "机房", "服务器")
REC = Device("02:00:00:00:00:10", "192.0.2.10", "recorder", "机房", "NVR-1", "hikvision")
CAM = Device("02:00:00:00:00:21", "192.0.2.21", "camera", "101", "前门", "hikvision", channel=1)
TERM = Device("02:00:00:00:00:31", "192.0.2.31", "exam_terminal", "101", "考试机01")
INV = Inventory("V1", 4, (SRV, REC, CAM, TERM))
DAY_START = dt.datetime(2026, 12, 5, 9, 0, tzinfo=SHANGHAI).timestamp()
SESSIONS = (Session("101", DAY_START, DAY_START + 7200),)


def _ctx(**kw: Any) -> Context:
    base = dict(agent_id="a1", round_id=None, exam_day="2026-12-05", sessions=SESSIONS, inventory=INV,
                config_version=4, collector_connected=False, clock=ClockReading(0.1, "ack", time.time()))
    return Context(**{**base, **kw})  # type: ignore[arg-type]


def _recorders(disk_status: str = "ok", free_mb: float = 200_000, bitrates: dict[int, float] | None = None) -> RecorderCheck:
    disks = {"1": {"name": "hdda", "status": disk_status, "fault": disk_status != "ok", "capacity_mb": 4e6, "free_mb": free_mb}}
    rec = {"ip": REC.ip, "name": REC.name, "state": "up", "model": "DS", "serial": "S1", "firmware": "V4",
           "channels": {"1": {"online": True, "status": "connect", "ip": CAM.ip,
                              "camera": {"mac": CAM.mac, "ip": CAM.ip, "name": CAM.name, "room": CAM.room}}},
           "recording": {"1": {"recording": True}}}
    return RecorderCheck(RecorderView({REC.mac: rec}, {}), {REC.mac: -0.4}, {REC.mac: bitrates}, {REC.mac: disks})


def _seen(**kw: Any) -> Seen:
    """A venue in order, as every watcher would see it; ``kw`` replaces parts."""
    host = HostView({"eth0": {"mac": SRV.mac, "up": True, "addrs": ["192.0.2.1/24"]}})
    lan = LanView({}, {d.mac: {"mac": d.mac, "ip": d.ip} for d in (REC, CAM, TERM)})
    from agent.watchers.camera_state import CamerasView
    cams = CamerasView({CAM.mac: {"status": "up"}}, None, {CAM.mac: {"level": "L3", "clock_offset": 0.5}})
    from agent.watchers.logs import LogsCheck, LogsView
    logs = LogsCheck([], LogsView({"app": {"files": 2}}, {}), [], True)
    base = dict(enabled={"host", "lan", "cameras", "recorders", "isolation", "logs"}, host=host, lan=lan,
                cameras=cams, recorders=_recorders(), isolation=IsolationView({}), logs=logs,
                disk_free=50 << 30, disk_total=100 << 30)
    return Seen(**{**base, **kw})  # type: ignore[arg-type]


def _cfg(**readiness: Any) -> AgentConfig:
    return AgentConfig.model_validate({"watchers": {"host": {"exam_subnets": ["192.0.2.0/24"]}}, "readiness": readiness})


def _results(items: tuple[ItemResult, ...]) -> dict[str, str]:
    return {i.item: i.result for i in items}


def _only(items: tuple[ItemResult, ...], item: str, result: str = "fail") -> ItemResult:
    assert _results(items) == {k: result if k == item else "pass" for k in ITEMS}, items
    return next(i for i in items if i.item == item)


def test_a_venue_in_order_passes_and_each_fault_fails_its_item() -> None:
    cfg, now = _cfg(), time.time()
    assert set(_results(judge(cfg, _ctx(), _seen(), now)).values()) == {"pass"}
    lan = LanView({f"mac_changed:{CAM.ip}:aa:bb:cc:00:00:01": {"mac": "aa:bb:cc:00:00:01", "ip": CAM.ip, "vendor": "",
                                                                "entry": CAM.to_json()}}, _seen().lan.devices)
    assert "前门" in _only(judge(cfg, _ctx(), _seen(lan=lan), now), "lan_devices").seen
    term_gone = LanView({}, {d.mac: {"ip": d.ip} for d in (REC, CAM)})
    assert "考试机01" in _only(judge(cfg, _ctx(), _seen(lan=term_gone), now), "terminals").seen
    wifi = HostView(_seen().host.interfaces, wireless={"wlan0": {"interface": "wlan0", "mac": "x", "up": False, "evidence": "sysfs"}})
    assert "wlan0" in _only(judge(cfg, _ctx(), _seen(host=wifi), now), "wireless").seen
    route = HostView(_seen().host.interfaces, routes_outside={"r": {"destination": "0.0.0.0/0", "gateway": "192.0.2.254",
                                                                    "interface": "eth0"}})
    assert "0.0.0.0/0" in _only(judge(cfg, _ctx(), _seen(host=route), now), "isolation").seen
    stuck = _only(judge(cfg, _ctx(), _seen(outbox_depth=12, outbox_oldest=now - 600), now), "outbox")
    assert "12" in stuck.seen and stuck.evidence["oldest_age_s"] == 600
    full = _only(judge(cfg, _ctx(), _seen(disk_free=2 << 30), now), "host_disk")  # 5 % of 100 GiB = 5 GiB
    assert full.evidence["need_bytes"] == 5 << 30
    skewed = _only(judge(cfg, _ctx(clock=ClockReading(-10.0, "command", now)), _seen(), now), "clocks")
    assert "10.0" in skewed.seen and skewed.evidence["host"]["source"] == "command"


def test_loopback_only_listener_passes_and_a_tool_fails() -> None:
    cfg, now = _cfg(), time.time()
    local = {"tcp|127.0.0.1|5900": {"protocol": "tcp", "address": "127.0.0.1", "port": 5900, "pid": 1, "process": "x11vnc"}}
    host = HostView(_seen().host.interfaces, remote_listeners=local)
    item = next(i for i in judge(cfg, _ctx(), _seen(host=host), now) if i.item == "remote_control")
    assert item.result == "pass" and "回环" in item.seen
    tool = {"sunlogin|x": {"tool": "sunlogin", "tool_name": "向日葵", "name": "sunloginclient", "pid": 42}}
    host = HostView(_seen().host.interfaces, remote_tools=tool)
    assert "向日葵" in _only(judge(cfg, _ctx(), _seen(host=host), now), "remote_control").seen


def test_unknown_when_not_configured_failed_or_without_collector_or_inventory() -> None:
    cfg, now = _cfg(), time.time()
    off = judge(cfg, _ctx(), _seen(enabled={"host", "lan", "cameras", "recorders", "logs"}), now)
    iso = _only(off, "isolation", "unknown")
    assert "[watchers.isolation]" in iso.seen and iso.evidence == {"watcher": "isolation", "enabled": False}
    broke = judge(cfg, _ctx(), _seen(errors={"lan": "PermissionError: [Errno 1]"}), now)
    assert {k for k, v in _results(broke).items() if v == "unknown"} == {"lan_devices", "terminals"}
    assert "未连接采集端" in _only(judge(cfg, _ctx(clock=None), _seen(), now), "clocks", "unknown").seen
    blind = {k for k, v in _results(judge(cfg, _ctx(inventory=None), _seen(), now)).items() if v == "unknown"}
    assert blind == {"cameras", "recorders", "recorder_disks", "recording", "lan_devices", "terminals", "host_address"}


def test_disk_need_uses_the_recorders_bitrate_else_the_default() -> None:
    """One exam-room camera, a 2 h session + 15 min lead: 4 Mbit/s by default, 8 Mbit/s when the
    recorder says so; a disk error and too little space both fail recorder_disks."""
    cfg, now = _cfg(), time.time()
    hours = 2.25 * 3600
    (default,) = [i for i in judge(cfg, _ctx(), _seen(), now) if i.item == "recorder_disks"]
    assert default.evidence[REC.mac]["need_gb"] == round(4000 * 1000 / 8 * hours / 2**30, 1)
    told = _seen(recorders=_recorders(bitrates={1: 8192.0}))
    (item,) = [i for i in judge(cfg, _ctx(), told, now) if i.item == "recorder_disks"]
    assert item.evidence[REC.mac]["basis"][0]["bitrate_from"] == "recorder"
    assert item.evidence[REC.mac]["need_gb"] == round(8192 * 1000 / 8 * hours / 2**30, 1)
    low = _only(judge(cfg, _ctx(), _seen(recorders=_recorders(free_mb=1024)), now), "recorder_disks")
    assert "1.0 GB" in low.seen
    bad = _only(judge(cfg, _ctx(), _seen(recorders=_recorders(disk_status="smartFailed")), now), "recorder_disks")
    assert "smartFailed" in bad.seen
    # No session: nothing to compute, the disks' health alone decides.
    (none,) = [i for i in judge(cfg, _ctx(sessions=()), _seen(recorders=_recorders(free_mb=0)), now) if i.item == "recorder_disks"]
    assert none.result == "pass" and "未核算" in none.seen


def test_isapi_bitrates_main_streams_only() -> None:
    body = b"""<StreamingChannelList xmlns="http://www.hikvision.com/ver20/XMLSchema">
      <StreamingChannel><id>101</id><Video><videoQualityControlType>VBR</videoQualityControlType>
        <constantBitRate>2048</constantBitRate><vbrUpperCap>6144</vbrUpperCap></Video></StreamingChannel>
      <StreamingChannel><id>102</id><Video><constantBitRate>512</constantBitRate></Video></StreamingChannel>
      <StreamingChannel><id>201</id><Video><videoQualityControlType>CBR</videoQualityControlType>
        <constantBitRate>4096</constantBitRate></Video></StreamingChannel>
    </StreamingChannelList>"""
    assert parse_bitrates(body) == {1: 6144.0, 2: 4096.0}


def test_recorder_clock_offset_with_and_without_zone() -> None:
    at = dt.datetime(2026, 12, 4, 14, 0, 0, tzinfo=SHANGHAI).timestamp()
    assert clock_offset(Probe({}, clock="2026-12-04T14:00:03+08:00", clock_at=at), SHANGHAI) == 3.0
    assert clock_offset(Probe({}, clock="2026-12-04 13:59:55", clock_at=at), SHANGHAI) == -5.0  # Dahua: local time
    assert clock_offset(Probe({}, clock="", clock_at=at), SHANGHAI) is None


def test_exam_day_is_the_next_day_with_a_session() -> None:
    late = Session("102", DAY_START + 86400 * 3, DAY_START + 86400 * 3 + 3600)
    sessions = (SESSIONS[0], late)
    assert exam_day(sessions, SHANGHAI, None, DAY_START - 86400) == ("2026-12-05", SESSIONS)
    assert exam_day(sessions, SHANGHAI, None, DAY_START + 8000) == ("2026-12-08", (late,))
    assert exam_day(sessions, SHANGHAI, "2026-12-06", DAY_START) == ("2026-12-06", ())


def test_logs_check_sees_unreported_and_remembered_damage(tmp_path: Path) -> None:
    """The check reads the manifest and writes nothing; after the service reported a deletion (so the
    manifest no longer shows it) the check still sees it, from the manifest's incidents."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("a\n")
    (logs / "app.log.1").write_text("b\n")
    src = [LogSource("app", "application", (f"{logs}/*.log",))]
    box = Outbox(tmp_path / "outbox.sqlite3")
    reader = OutboxReader(tmp_path / "outbox.sqlite3")
    fresh = LogsWatcher(sources=src, outbox=reader, inotify=False)  # type: ignore[arg-type]
    fresh.init()
    assert fresh.check_now().has_manifest is False
    service = LogsWatcher(sources=src, outbox=box, inotify=False, rescan_interval=0.001)
    service.init()
    service.collect()
    (logs / "app.log.1").unlink()
    looker = LogsWatcher(sources=src, outbox=reader, inotify=False)  # type: ignore[arg-type]
    looker.init()
    before = box.last_seq()
    found = looker.check_now()
    assert [k for k, _ in found.events] == ["log.deleted"] and found.incidents == [] and box.last_seq() == before
    time.sleep(0.01)  # past rescan_interval (no inotify here)
    service.collect()  # the service reports it: the manifest forgets the file, remembers the incident
    again = LogsWatcher(sources=src, outbox=reader, inotify=False)  # type: ignore[arg-type]
    again.init()
    seen = again.check_now()
    assert seen.events == [] and [(i["kind"], i["path"]) for i in seen.incidents] == [("log.deleted", str(logs / "app.log.1"))]
    item = next(i for i in judge(_cfg(), _ctx(), _seen(logs=seen), time.time()) if i.item == "logs")
    assert item.result == "fail" and "已上报" in item.seen
    reader.close()
    box.close()


def test_outbox_reader_reads_without_taking(tmp_path: Path) -> None:
    assert OutboxReader(tmp_path / "none.sqlite3").depth() == 0
    box = Outbox(tmp_path / "o.sqlite3")
    box.append("ev", "agent.started", {}, at=1000.0)
    box.append("ev", "host.snapshot", {}, at=1001.0)
    box.save_state("collector_clock", {"offset": 0.2, "at": 5.0})
    reader = OutboxReader(tmp_path / "o.sqlite3")
    assert (reader.depth(), reader.oldest_at(), reader.load_state("collector_clock")) == (2, 1000.0, {"offset": 0.2, "at": 5.0})
    assert box.depth() == 2 and box.oldest_at() == 1000.0
    reader.close()
    box.close()


class _Service:
    """A ReadinessService with a stand-in check that takes ``delay`` seconds, and what it committed."""

    def __init__(self, tmp: Path, delay: float = 0.3, fail: bool = False) -> None:
        self.key = new_private_key()
        self.bundle = make_bundle("a1", "V1", self.key, "127.0.0.1", 1883)
        self.outbox = Outbox(tmp / "outbox.sqlite3")
        remote = RemoteConfig(self.outbox, "a1", self.bundle.collector_public_key)
        self.committed: list[Pending] = []
        self.lock = threading.Lock()
        self.delay, self.fail = delay, fail
        self.svc = ReadinessService(_cfg(), self.bundle, remote, self.outbox, self._commit, check=self._check)

    def _commit(self, events: list[Pending]) -> None:
        with self.lock:
            self.committed += events

    def _check(self, cfg: AgentConfig, ctx: Context, store: Any) -> Report:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        items = tuple(ItemResult(i, "pass", "ok") for i in ITEMS)
        return Report(ctx.agent_id, ctx.round_id, ctx.exam_day, 0.0, 1.0, items, {}, ctx.config_version)

    def send(self, round_id: int, key: Any = None, venue: str = "V1", deadline: float = 600, skew: float = 0) -> None:
        now = time.time()
        cmd = Command(round_id, venue, "2026-12-05", now + deadline, now + skew)
        self.svc.receive(command_message(key or self.key, "a1", cmd)[1])

    def kinds(self) -> list[tuple[str, Any]]:
        with self.lock:
            return [(p.kind, p.data.get("round_id")) for p in self.committed]


def test_service_runs_one_check_at_a_time_and_refuses_bad_commands(tmp_path: Path) -> None:
    s = _Service(tmp_path)
    t0 = time.monotonic()
    s.send(1)
    s.send(1)  # QoS 1 redelivery while round 1 runs: ignored
    s.send(2)  # waits for round 1
    assert time.monotonic() - t0 < 0.2  # receive never blocks the uplink
    s.send(3, key=new_private_key())
    s.send(3, key=new_private_key())  # the same refusal once
    s.send(4, venue="V2")
    s.send(5, deadline=-1)
    s.svc.wait(5)
    time.sleep(0.1)
    s.svc.wait(5)
    assert s.kinds() == [("readiness.refused", 3), ("readiness.refused", 4), ("readiness.refused", 5),
                         ("readiness.report", 1), ("readiness.report", 2)]
    reasons = [p.data["reason"] for p in s.committed if p.kind == "readiness.refused"]
    assert reasons == ["bad_signature", "wrong_venue", "expired"]
    assert {p.stream for p in s.committed if p.kind == "readiness.report"} == {"rpt"}
    s.outbox.close()


def test_a_check_that_breaks_still_answers_the_round(tmp_path: Path) -> None:
    s = _Service(tmp_path, delay=0.0, fail=True)
    s.send(9, skew=-10)
    s.svc.wait(5)
    (report,) = [p.data for p in s.committed if p.kind == "readiness.report"]
    assert report["round_id"] == 9 and report["result"] == "unknown"
    assert all("boom" in i["seen"] for i in report["items"])
    s.outbox.close()


@pytest.mark.parametrize("zone", ["Mars/Olympus", ""])
def test_bad_time_zone_is_a_config_error(tmp_path: Path, zone: str) -> None:
    from agent import config

    path = tmp_path / "agent.toml"
    path.write_text(f'[readiness]\ntimezone = "{zone}"\n')
    with pytest.raises(config.ConfigError, match="readiness.timezone"):
        config.load(path)


def test_a_huge_report_sheds_evidence_not_verdicts() -> None:
    items = tuple(ItemResult(i, "pass", "ok", "", {"list": ["x" * 100] * 50}) for i in ITEMS)
    report = Report("a1", 3, "2026-12-05", 0.0, 1.0, items, {"devices": {"m": "ip"}}, 4)
    assert fitted(report) == report.to_json()
    doc = fitted(report, limit=10_000)
    assert [i["result"] for i in doc["items"]] == ["pass"] * len(ITEMS)
    assert doc["items"][0]["evidence"] == {"trimmed": True, "keys": ["list"]} and doc["baseline"] == {"devices": {"m": "ip"}}
