"""Camera judgement without sockets: debounce with back-dating, fault classes, stalls confirmed
only by stream samples, reboots from the SDP origin, blindness edges, ONVIF time parsing, PTZ
moves inside exam windows and room coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.watchers.camera_onvif import parse_utc
from agent.watchers.camera_ptz import PtzTrack, Unsupported, offset, parse_status, read_position
from agent.watchers.camera_rooms import judge, open_windows
from agent.watchers.camera_state import CamerasView, Track, step
from agent.watchers.digest import AuthFailed, ProbeError
from agent.watchers.rtsp import ProbeResult
from protocol.schedule import Session

ID = {"mac": "00:11:22:33:44:01", "ip": "198.51.100.21", "room": "第1考场", "name": "前门"}
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "onvif" / "GetSystemDateAndTime.xml"


def ok(at: float, level: int = 3, origin: str = "") -> ProbeResult:
    return ProbeResult("ok", level, target_level=level, at=at, origin=origin, rtp_packets=10 if level == 3 else 0)


def bad(at: float, outcome: str = "down", error: str = "connect: refused", level: int = -1, target: int = 2) -> ProbeResult:
    return ProbeResult(outcome, level, error, target_level=target, at=at)


def run(track: Track, results: list[ProbeResult], sees: bool | None = None) -> list[tuple[str, dict]]:
    """Feed results one by one through view diffs, as the runtime would; return the events."""
    events, before = [], {}
    for r in results:
        step(track, r, 3, 2, sees)
        view = CamerasView({ID["mac"]: track.to_json()})
        events += view.diff(before)
        before = view.to_json()
    return events


def test_down_after_three_failures_back_dated_and_up_after_two() -> None:
    """Two failures are noise; the third reports camera.down dated at the first; one success is not
    enough to call it up again, two are."""
    t = Track(dict(ID))
    events = run(t, [ok(0), bad(10), bad(20), ok(30), bad(40), bad(50), bad(60), ok(70), ok(80)])
    assert [k for k, _ in events] == ["camera.down", "camera.up"]
    down = events[0][1]
    assert (down["since"], down["first_failure_at"], down["failures"], down["error"]) == (40, 40, 3, "connect: refused")
    assert down["mac"] == ID["mac"] and down["room"] == "第1考场" and down["level"] is None
    assert events[1][1]["fault_since"] == 40 and events[1][1]["since"] == 80


def test_auth_failure_is_its_own_fault_and_path_problem_when_recorder_sees() -> None:
    """401 after answering the challenge is camera.auth_failed, never down; a camera the recorder
    still sees is a path problem."""
    t = Track(dict(ID))
    events = run(t, [bad(i, "auth_failed", "DESCRIBE: 401", 1) for i in range(3)])
    assert [k for k, _ in events] == ["camera.auth_failed"] and events[0][1]["level"] == "L1"
    t2 = Track(dict(ID))
    assert [k for k, _ in run(t2, [bad(i) for i in range(3)], sees=True)] == ["camera.path_problem"]


def test_stall_needs_samples_and_l2_successes_do_not_clear_it() -> None:
    """L2-only successes between stalled samples neither reset the stall count nor end the stall."""
    t = Track(dict(ID))
    stall = lambda at: bad(at, "stalled", "PLAY: no RTP in 3 s", 2, 3)  # noqa: E731
    events = run(t, [ok(0), stall(10), ok(20, 2), stall(30), ok(40, 2), stall(50), ok(60, 2), ok(70, 2)])
    assert [k for k, _ in events] == ["camera.stream_stalled"] and events[0][1]["since"] == 10
    assert t.status == "stalled"
    assert [k for k, _ in run(t, [ok(80), ok(90)])][-1:] == ["camera.up"]


def test_first_run_reports_only_faults() -> None:
    """diff({}) on a fresh agent: an up camera is not news, a down one is."""
    view = CamerasView({"a": {"status": "up", "since": 1, "data": {}, "reboots": 0, "reboot": {}},
                        "b": {"status": "down", "since": 1, "data": {"mac": "b"}, "reboots": 0, "reboot": {}}})
    assert [k for k, _ in view.diff({})] == ["camera.down"]


def test_reboot_from_stable_sdp_origin_change_only() -> None:
    """A stable o= session id that changes is a reboot; one that changes every time (GStreamer) never is."""
    t = Track(dict(ID))
    events = run(t, [ok(0, origin="111 1"), ok(10, origin="111 1"), ok(20, origin="222 1")])
    assert [k for k, _ in events] == ["camera.rebooted"]
    assert (events[0][1]["old_origin"], events[0][1]["new_origin"], events[0][1]["how"]) == ("111 1", "222 1", "sdp_origin_changed")
    t2 = Track(dict(ID))
    assert run(t2, [ok(i, origin=f"{i} 1") for i in range(5)]) == []


def test_blind_edges() -> None:
    """agent.blind once when blindness starts, agent.sight_restored when it ends."""
    blind = {"since": 5.0, "witnesses": [{"target": "icmp:198.51.100.1", "how": "timeout"}]}
    a = CamerasView({}, blind)
    assert a.diff({}) == [("agent.blind", blind)]
    assert a.diff(a.to_json()) == []
    assert [k for k, _ in CamerasView({}, None).diff(a.to_json())] == ["agent.sight_restored"]


def test_onvif_fixture_parses() -> None:
    """The recorded GetSystemDateAndTime answer gives its UTC time as epoch seconds."""
    xml = FIXTURE.read_text().format(year=2026, month=3, day=14, hour=1, minute=2, second=3)
    assert parse_utc(xml) == 1773450123.0
    assert parse_utc("<x/>") is None


# -- PTZ (camera_ptz) ----------------------------------------------------------------------------

PTZ_XML = ('<?xml version="1.0" encoding="UTF-8"?><PTZStatus version="2.0" xmlns="http://www.hikvision.com/ver20/'
           'XMLSchema"><AbsoluteHigh><elevation>-15</elevation><azimuth>3595</azimuth><absoluteZoom>10</absoluteZoom>'
           '</AbsoluteHigh></PTZStatus>')


def pos(e: float, a: float, z: float) -> dict[str, float]:
    return {"elevation": e, "azimuth": a, "zoom": z}


def ptz_run(track: PtzTrack, readings: list[dict[str, float]], tol: float = 10) -> list[tuple[str, dict]]:
    """Fold readings 10 s apart through view diffs; return the PTZ events."""
    events, before = [], {}
    for i, p in enumerate(readings):
        track.fold(p, i * 10.0, tol)
        view = CamerasView(ptz={ID["mac"]: track.to_json()})
        events += view.diff(before)
        before = view.to_json()
    return events


def test_ptz_status_parses_by_local_name() -> None:
    """ver20 namespace, ver10, or none: the same position; incomplete or non-XML answers are None."""
    assert parse_status(PTZ_XML.encode()) == pos(-15, 3595, 10)
    assert parse_status(PTZ_XML.replace("ver20", "ver10").encode()) == pos(-15, 3595, 10)
    assert parse_status(PTZ_XML.replace(' xmlns="http://www.hikvision.com/ver20/XMLSchema"', "").encode()) == pos(-15, 3595, 10)
    assert parse_status(PTZ_XML.replace("<absoluteZoom>10</absoluteZoom>", "").encode()) is None
    assert parse_status(b"<html>404</html>") is None and parse_status(b"not xml") is None


def test_ptz_move_once_per_episode_then_restored() -> None:
    """The first reading is home; jitter within tolerance is nothing; a turn is one ptz_moved with
    before/after, further turns are the same episode; back near home is ptz_restored."""
    t = PtzTrack(dict(ID))
    events = ptz_run(t, [pos(0, 1800, 10), pos(3, 1805, 10), pos(0, 2700, 10), pos(-300, 900, 40), pos(0, 1795, 12),
                         pos(0, 1800, 10)])
    assert [k for k, _ in events] == ["camera.ptz_moved", "camera.ptz_restored"]
    moved, back = events[0][1], events[1][1]
    assert (moved["before"], moved["after"], moved["since"], moved["mac"]) == (pos(0, 1800, 10), pos(0, 2700, 10), 20, ID["mac"])
    assert (back["before"], back["after"], back["home"], back["moved_since"], back["since"]) == (
        pos(-300, 900, 40), pos(0, 1795, 12), pos(0, 1800, 10), 20, 40)


def test_ptz_azimuth_wraps_and_zoom_counts() -> None:
    """3595 → 5 is one degree, not 359; a zoom-in alone is a move."""
    assert offset(pos(0, 3595, 10), pos(0, 5, 10)) == 10
    assert [k for k, _ in ptz_run(PtzTrack(dict(ID)), [pos(0, 3595, 10), pos(0, 5, 10)])] == []
    assert [k for k, _ in ptz_run(PtzTrack(dict(ID)), [pos(0, 0, 10), pos(0, 0, 40)])] == ["camera.ptz_moved"]


def test_ptz_new_window_is_no_event() -> None:
    """A window that closes (tracking dropped) or a new one (new home) makes no event."""
    moved = PtzTrack(dict(ID))
    ptz_run(moved, [pos(0, 0, 10), pos(0, 900, 10)])
    assert CamerasView(ptz={}).diff({"ptz": {ID["mac"]: moved.to_json()}}) == []
    fresh = PtzTrack(dict(ID))
    fresh.fold(pos(0, 900, 10), 500.0, 10)
    assert CamerasView(ptz={ID["mac"]: fresh.to_json()}).diff({"ptz": {ID["mac"]: moved.to_json()}}) == []


class _Client:
    """A DigestClient stand-in answering one canned result."""

    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer

    def get(self, path: str) -> bytes:
        assert path == "/ISAPI/PTZCtrl/channels/1/status"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_read_position_skips_cameras_without_ptz() -> None:
    """404, a refused login or an answer without a position: Unsupported (skipped); a timeout is just
    no reading this time."""
    assert read_position(_Client(PTZ_XML.encode())) == pos(-15, 3595, 10)  # type: ignore[arg-type]
    for answer in (ProbeError("http 404"), AuthFailed("rejected"), b"<ResponseStatus/>"):
        with pytest.raises(Unsupported):
            read_position(_Client(answer))  # type: ignore[arg-type]
    assert read_position(_Client(ProbeError("timeout"))) is None  # type: ignore[arg-type]


# -- room coverage (camera_rooms) ----------------------------------------------------------------

def cam(mac: str, state: str, since: float | None = None) -> dict:
    return {"mac": mac, "name": f"cam {mac}", "state": state, "since": since}


def rooms_run(steps: list[tuple[dict[str, float], dict[str, list[dict]]]]) -> list[tuple[str, dict]]:
    """Judge each (windows, cameras) step through view diffs; return the room events."""
    events, before = [], {}
    for windows, cameras in steps:
        view = CamerasView(rooms=judge(windows, cameras, before.get("rooms")))
        events += view.diff(before)
        before = view.to_json()
    return events


def test_open_windows_by_room_with_lead() -> None:
    """A room's window opens lead seconds before its earliest covering session."""
    sessions = [Session("A", 1000, 2000), Session("A", 1900, 3000), Session("B", 5000, 6000)]
    assert open_windows(sessions, 1950, 900) == {"A": 100}
    assert open_windows(sessions, 4200, 900) == {"B": 4100}
    assert open_windows(sessions, 3500, 900) == {}


def test_room_uncovered_when_every_camera_faulty_once_then_covered() -> None:
    """All cameras in fault → one room_uncovered, since = the last camera's fault (or the window's
    opening, whichever is later); still faulty in other ways → nothing; one camera up → covered."""
    w = {"A": 100.0}
    events = rooms_run([
        (w, {"A": [cam("1", "up"), cam("2", "down", 50)]}),
        (w, {"A": [cam("1", "stalled", 300), cam("2", "down", 50)]}),
        (w, {"A": [cam("1", "auth_failed", 400), cam("2", "path_problem", 350)]}),
        (w, {"A": [cam("1", "up", 500), cam("2", "path_problem", 350)]}),
    ])
    assert [k for k, _ in events] == ["camera.room_uncovered", "camera.room_covered"]
    lost, back = events[0][1], events[1][1]
    assert (lost["room"], lost["since"], lost["window_since"]) == ("A", 300, 100)
    assert lost["cameras"] == [{"mac": "1", "name": "cam 1", "state": "stalled"}, {"mac": "2", "name": "cam 2", "state": "down"}]
    assert (back["reason"], back["since"]) == ("camera_working", 300)
    assert [c["state"] for c in back["cameras"]] == ["up", "path_problem"]


def test_room_without_camera_and_window_closing() -> None:
    """An exam room with no registered camera is uncovered from the window's opening; the window
    closing ends the episode; outside windows nothing is judged."""
    events = rooms_run([({}, {}), ({"B": 100.0}, {}), ({"B": 100.0}, {}), ({}, {})])
    assert [(k, d["room"]) for k, d in events] == [("camera.room_uncovered", "B"), ("camera.room_covered", "B")]
    assert events[0][1]["cameras"] == [] and events[0][1]["since"] == 100
    assert events[1][1]["reason"] == "window_closed"
    assert judge({}, {"B": [cam("1", "down", 5)]}) == {}


def test_room_with_unjudged_camera_is_undetermined() -> None:
    """A camera not judged yet (agent just started) makes no coverage event either way."""
    w = {"A": 100.0}
    assert judge(w, {"A": [cam("1", "unknown"), cam("2", "down", 50)]})["A"]["status"] == "unknown"
    assert rooms_run([(w, {"A": [cam("1", "unknown"), cam("2", "down", 50)]}),
                      (w, {"A": [cam("1", "up", 200), cam("2", "down", 50)]})]) == []


def test_a_restart_does_not_report_a_still_down_camera_again() -> None:
    """restore() seeds the statuses of the last run: the camera that was down stays down without a
    second camera.down; the view's diff against the persisted one has no event."""
    from agent.watchers.camera_state import CamerasView
    from agent.watchers.cameras import CamerasWatcher
    from protocol.inventory import Device

    cam = Device("00:11:22:33:44:01", "198.51.100.21", "camera", "第1考场", "前门", "hikvision")
    before = {"cameras": {cam.mac: {"status": "down", "since": 100.0, "data": {"mac": cam.mac}, "reboots": 0,
                                    "reboot": {}}}, "blind": None, "ptz": {}, "rooms": {}}
    w = CamerasWatcher()
    w.restore(before)
    track = w._new_track(cam)
    assert (track.status, track.since) == ("down", 100.0)
    view = CamerasView({cam.mac: track.to_json()})
    assert view.diff(before) == []
