"""Camera judgement without sockets: debounce with back-dating, fault classes, stalls confirmed
only by stream samples, reboots from the SDP origin, blindness edges, ONVIF time parsing."""

from __future__ import annotations

from pathlib import Path

from agent.watchers.camera_onvif import parse_utc
from agent.watchers.camera_state import CamerasView, Track, step
from agent.watchers.rtsp import ProbeResult

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
