"""Recorder parsing and judgement without HTTP: fixtures parse, clocks compare, debounce holds."""

from __future__ import annotations

import base64
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.watchers import dahua, isapi, onvif_recorder as onvif
from agent.watchers.digest import parse_challenge
from agent.watchers.recorder_probe import Probe, lag_seconds, parse_time
from agent.watchers.recorder_view import Tracked, judge
from agent.watchers.recorders import RecordersWatcher, RecordersWatcherSection
from protocol.inventory import Device, Inventory

FIX = Path(__file__).resolve().parents[1] / "fixtures"
REC = Device("02:00:00:00:5e:10", "198.51.100.10", "recorder", vendor="hikvision")


def test_isapi_fixtures_parse_whatever_the_schema_version() -> None:
    """ver20 and ver10 namespaces (and none) parse alike, because elements match by local name."""
    info = isapi.parse_device_info((FIX / "isapi" / "deviceInfo.xml").read_bytes())
    assert (info["model"], info["firmware"]) == ("DS-7608NI-K2", "V4.30.085 build 200916")
    status = (FIX / "isapi" / "status.xml").read_bytes()
    assert b"ver10" in status and isapi.parse_status(status) == (864000, "2024-05-20T09:30:00+08:00")
    for ns in (b"ver20", b"ver10"):
        storage = (FIX / "isapi" / "storage.xml").read_bytes().replace(b"ver20", ns)
        assert isapi.parse_storage(storage)["1"] == {"name": "hdda", "status": "ok", "fault": False,
                                                     "capacity_mb": 3815447.0, "free_mb": 1250304.0}
    bare = b"<storage><hddList><hdd><id>2</id><status>smartFailed</status></hdd></hddList></storage>"
    assert isapi.parse_storage(bare)["2"]["fault"] is True
    channels = isapi.parse_channels((FIX / "isapi" / "channels_status.xml").read_bytes())
    assert channels[2] == {"online": True, "status": "connect", "ip": "198.51.100.22"}
    assert isapi.parse_search((FIX / "isapi" / "search_result.xml").read_bytes()) == ("OK", 1, ["2024-05-20T01:29:58Z"])


@pytest.mark.parametrize(("word", "fault"), [("ok", False), ("idle", False), ("sleeping", False), ("unformatted", True),
                                             ("error", True), ("abnormal", True), ("offline", True), ("SMARTFailed", True)])
def test_isapi_disk_words(word: str, fault: bool) -> None:
    """Only ok/idle/sleeping are healthy; every other word is a fault, reported raw."""
    body = f"<storage><hddList><hdd><id>1</id><status>{word}</status></hdd></hddList></storage>".encode()
    assert isapi.parse_storage(body)["1"]["fault"] is fault


def test_dahua_fixtures_parse() -> None:
    """key=value answers: disks by name with State and IsError words, 1-based channels, file ends."""
    disks = dahua.parse_storage((FIX / "dahua" / "getDeviceAllInfo.txt").read_bytes())
    assert disks["/dev/sda"]["status"] == "Success IsError=false" and not disks["/dev/sda"]["fault"]
    assert round(disks["/dev/sda"]["free_mb"]) == 1250264  # (TotalBytes - UsedBytes) / 2**20
    assert dahua.parse_camera_state((FIX / "dahua" / "getCameraState.txt").read_bytes()) == {
        1: {"online": True, "status": "Connected", "ip": ""}, 2: {"online": True, "status": "Connected", "ip": ""}}
    assert dahua.parse_found_ends((FIX / "dahua" / "findNextFile.txt").read_bytes()) == (1, ["2024-5-20 09:29:58"])
    info = dahua.parse_system_info((FIX / "dahua" / "getSystemInfo.txt").read_bytes(),
                                   (FIX / "dahua" / "getSoftwareVersion.txt").read_bytes())
    assert (info["model"], info["serial"], info["firmware"]) == ("DHI-NVR4208-8P-4KS2", "5G02FB4PAZ12345",
                                                                 "4.001.0000000.2.R,build:2020-03-26")


def test_lag_uses_the_device_clock_and_survives_a_mislabelled_zone() -> None:
    """Zone-aware when consistent; local time written as ``Z`` is compared by wall clock; naive
    Dahua times against the naive Dahua clock."""
    clock = parse_time("2024-05-20T09:30:00+08:00")
    assert clock is not None
    assert lag_seconds(clock, parse_time("2024-05-20T01:29:00Z")) == 60  # true UTC  # type: ignore[arg-type]
    assert lag_seconds(clock, parse_time("2024-05-20T09:29:00Z")) == 60  # local labelled Z  # type: ignore[arg-type]
    assert lag_seconds(parse_time("2024-5-20 09:30:00"), parse_time("2024-5-20 09:25:00")) == 300  # type: ignore[arg-type]


def test_debounce_and_boot() -> None:
    """Down after N failures back-dated to the first; up after M answers; boot moves only when
    uptime fell behind wall time (not on a clock change)."""
    t = Tracked(state="up")
    for i in range(2):
        t.failed("refused", 100.0 + i, down_after=3)
    assert t.state == "up"
    t.failed("timeout", 102.0, down_after=3)
    assert (t.state, t.first_fail, t.error) == ("down", 100.0, "timeout")
    t.answered(up_after=2)
    assert t.state == "down"
    t.answered(up_after=2)
    assert t.state == "up"
    t.probed(Probe({}, uptime=1000, boot=5000.0), mono=0.0)
    t.probed(Probe({}, uptime=1030, boot=5900.0), mono=30.0)  # device clock stepped: no reboot
    assert t.boot == 5000.0
    t.probed(Probe({}, uptime=20, boot=9000.0), mono=60.0)
    assert t.boot == 9000.0


def test_first_view_reports_only_problems() -> None:
    """``diff({})`` on a healthy recorder is silent; a faulty disk is reported at once."""
    inv = Inventory("v", 1, (REC,))
    good = {"1": {"name": "hdda", "status": "ok", "fault": False, "capacity_mb": 1.0, "free_mb": 1.0}}
    t = Tracked(state="up", probe=Probe({"model": "m"}, disks=good, channels={}, newest={}))
    assert judge([REC], {REC.mac: t}, inv, 300, 0, 3600).diff({}) == []
    t.probe.disks = {"1": {**good["1"], "status": "unformatted", "fault": True}}  # type: ignore[union-attr]
    assert [k for k, _ in judge([REC], {REC.mac: t}, inv, 300, 0, 3600).diff({})] == ["recorder.disk_fault"]


def test_digest_challenge_parsing() -> None:
    """Quoted and bare parameters, commas inside quotes."""
    assert parse_challenge('Digest qop="auth,auth-int", realm="IP Camera(C1)", nonce="abc", stale=FALSE') == (
        "digest", {"qop": "auth,auth-int", "realm": "IP Camera(C1)", "nonce": "abc", "stale": "FALSE"})


def test_options_are_validated_naming_the_option(tmp_path: Path) -> None:
    """init() names the bad option; the config section forbids unknown keys."""
    with pytest.raises(ValueError, match="option watchers.recorders.username"):
        RecordersWatcher(background=False).init()
    with pytest.raises(ValueError, match="option watchers.recorders.timeout"):
        RecordersWatcher(username="a", timeout=60, interval=30, background=False).init()
    bad = tmp_path / "creds.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="option watchers.recorders.credentials_file"):
        RecordersWatcher(credentials_file=bad, background=False).init()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"*": {"username": "op", "password": "x"}}))
    with pytest.raises(ValueError, match="readable by others"):
        RecordersWatcher(credentials_file=good, background=False).init()
    good.chmod(0o600)
    RecordersWatcher(credentials_file=good, background=False).init()
    with pytest.raises(ValueError):
        RecordersWatcherSection(intervall=5)  # type: ignore[call-arg]


def test_onvif_password_digest_matches_the_spec_example() -> None:
    """base64(sha1(nonce + created + password)) with the decoded nonce: the worked example of the
    ONVIF Application Programmer's Guide (UsernameToken, PasswordDigest)."""
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert onvif.password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


def test_onvif_security_header_is_checked_by_the_fake() -> None:
    """The client's UsernameToken passes the fake's server-side check, and fails with another password."""
    from tests.fake_onvif import check_token
    client = onvif.OnvifClient("198.51.100.10", 80, "op<1>", "s3cret", offset=-30.0)
    env = ET.fromstring(f'<s:Envelope xmlns:s="{onvif.NS["s"]}"><s:Header>{client.security()}</s:Header></s:Envelope>')
    now = dt.datetime.now().timestamp()
    assert check_token(env, "op<1>", "s3cret", now) and not check_token(env, "op<1>", "other", now)
    assert not check_token(env, "op<1>", "s3cret", now + 600)  # Created outside the freshness window


def test_onvif_fixtures_parse() -> None:
    """Device information, the UTC clock, the summary, the search results and an auth fault."""
    info = onvif.parse_device_information((FIX / "onvif" / "GetDeviceInformationResponse.xml").read_bytes())
    assert (info["manufacturer"], info["model"], info["firmware"], info["serial"]) == (
        "GenericNVR", "NVR-8CH-G", "V2.1.7 build 230415", "GNVR8G2023041500042")
    clock_xml = (FIX / "onvif" / "GetSystemDateAndTime.xml").read_text().format(
        year=2024, month=5, day=20, hour=1, minute=30, second=0)
    clock = onvif.parse_system_date(clock_xml.encode())
    assert clock == dt.datetime(2024, 5, 20, 1, 30, tzinfo=dt.timezone.utc)
    assert onvif.parse_summary((FIX / "onvif" / "GetRecordingSummaryResponse.xml").read_bytes()) == {
        "DataFrom": "2024-05-13T00:00:02Z", "DataUntil": "2024-05-20T01:29:58Z", "NumberRecordings": "2"}
    state, recs = onvif.parse_search_results((FIX / "onvif" / "GetRecordingSearchResultsResponse.xml").read_bytes())
    assert state == "Completed" and recs[1] == {
        "token": "REC_CH02", "source_id": "VideoSourceToken_2", "address": "rtsp://198.51.100.22:554/Streaming/Channels/101",
        "latest": "2024-05-20T01:29:58Z", "status": "Recording"}
    channels, newest = onvif.recordings_to_channels(recs, clock)  # type: ignore[arg-type]
    assert channels[2] == {"online": None, "status": "Recording", "ip": "198.51.100.22"}
    assert newest[1] == {"end": "2024-05-20T01:29:58Z", "lag_s": 2.0, "recording_token": "REC_CH01",
                         "recording_status": "Recording"}
    fault = onvif.parse_fault((FIX / "onvif" / "Fault_NotAuthorized.xml").read_bytes())
    assert "ter:NotAuthorized" in fault and onvif.parse_fault(b"<a/>") == ""


def test_onvif_channel_numbers() -> None:
    """Trailing token numbers when all are present and distinct, else 1-based order by token."""
    assert onvif.channel_numbers(["REC_CH01", "REC_CH02"]) == {"REC_CH01": 1, "REC_CH02": 2}
    assert onvif.channel_numbers(["RecordToken0003", "RecordToken0001"]) == {"RecordToken0003": 3, "RecordToken0001": 1}
    assert onvif.channel_numbers(["b", "a"]) == {"a": 1, "b": 2}
    assert onvif.channel_numbers(["x1", "y1"]) == {"x1": 1, "y1": 2}  # not distinct


def test_unknown_channel_state_is_no_offline_event() -> None:
    """ONVIF channels (``online`` None) never open channel_offline; a stale LatestRecording still
    opens not_recording with the raw RecordingStatus."""
    inv = Inventory("v", 1, (REC,))
    p = Probe({"model": "m"}, channels={1: {"online": None, "status": "Stopped", "ip": ""}},
              newest={1: {"end": "2024-05-20T01:00:00Z", "lag_s": 1800.0, "recording_status": "Stopped"}})
    events = judge([REC], {REC.mac: Tracked(state="up", probe=p)}, inv, 300, 0, 3600).diff({})
    assert [(k, d.get("recording_status")) for k, d in events] == [("recorder.not_recording", "Stopped")]


def test_credentials_file_is_shared_by_cameras_and_recorders(tmp_path: Path) -> None:
    """One reader for both watchers: MACs in any notation, a "*" fallback, and a file that others
    may read is refused naming the option."""
    from agent.watchers.credentials import lookup, read_credentials

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"00-11-22-33-44-01": {"username": "cam", "password": "p1"},
                                "*": {"username": "op", "password": "p2"}}))
    path.chmod(0o644)
    with pytest.raises(ValueError, match="option watchers.cameras.credentials_file: .* readable by others"):
        read_credentials(path, "watchers.cameras.credentials_file")
    path.chmod(0o600)
    creds = read_credentials(path, "watchers.cameras.credentials_file")
    assert lookup(creds, "00:11:22:33:44:01", ("", "")) == ("cam", "p1")
    assert lookup(creds, "00:11:22:33:44:09", ("", "")) == ("op", "p2")
