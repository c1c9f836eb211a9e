"""Judging camera probe results: debounce, fault classes, reboots, and the events they make.

Pure code over :class:`~agent.watchers.rtsp.ProbeResult` so it is tested without sockets. A flag
is evidence in a penalty case, so one failed probe is never reported: a camera is *down* after
``down_after`` consecutive failures (the event back-dated to the first of them) and *up* again after
``up_after`` consecutive successes.

| status | event on entering it | condition |
|---|---|---|
| ``down`` | ``camera.down`` | TCP refused/unreachable/timeout, RTSP not answering, 404, no video in the SDP |
| ``path_problem`` | ``camera.path_problem`` | *down* from here, but the recorder still sees the camera |
| ``auth_failed`` | ``camera.auth_failed`` | a 401 after a correct Digest/Basic answer: credentials, not "off" |
| ``stalled`` | ``camera.stream_stalled`` | RTSP answers, but in the L3 sample RTP never came or stopped |
| ``up`` | ``camera.up`` | only when leaving one of the statuses above |

``camera.rebooted``: many cameras (Hikvision, Dahua) put a per-boot session id in the SDP ``o=``
line; when the origin was the same in two DESCRIBEs and then changes, the RTSP daemon restarted.
Servers that change it on every DESCRIBE (GStreamer's) never count as stable, so never trigger it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.watchers import camera_ptz, camera_rooms
from agent.watchers.rtsp import OK, ProbeResult

FAULT_KINDS = {"down": "camera.down", "path_problem": "camera.path_problem",
               "auth_failed": "camera.auth_failed", "stalled": "camera.stream_stalled"}


@dataclass
class Track:
    """What is known of one camera: its status and the streaks that move it."""

    identity: dict[str, Any]
    status: str = "unknown"
    since: float | None = None
    data: dict[str, Any] = field(default_factory=dict)  # evidence frozen at the last transition
    fail_run: int = 0
    first_fail: float | None = None
    ok_run: int = 0
    pending: str = ""  # fault class of the current failure run
    origin: str = ""
    origin_stable: bool = False
    reboots: int = 0
    reboot: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)  # the latest probe's evidence

    def reset_streaks(self) -> None:
        """Forget runs in progress (after a blind spell, failures seen then prove nothing)."""
        self.fail_run, self.first_fail, self.ok_run, self.pending = 0, None, 0, ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "since": None if self.since is None else round(self.since, 3),
                "data": self.data, "reboots": self.reboots, "reboot": self.reboot}


def step(track: Track, result: ProbeResult, down_after: int, up_after: int, recorder_sees: bool | None) -> None:
    """Fold one probe result into ``track``."""
    track.last = result.evidence()
    if result.outcome == OK:
        _success(track, result, up_after)
    else:
        _failure(track, result, down_after, recorder_sees)


def _success(track: Track, result: ProbeResult, up_after: int) -> None:
    if result.target_level < 3 and "stalled" in (track.status, track.pending):
        return  # an L2 success says nothing about a stream that was not sampled
    track.fail_run, track.first_fail, track.pending = 0, None, ""
    track.ok_run += 1
    _check_origin(track, result)
    need = 1 if track.status == "unknown" else up_after
    if track.status != "up" and track.ok_run >= need:
        _enter(track, "up", result.at, {**track.identity, **result.evidence(), "successes": track.ok_run})


def _failure(track: Track, result: ProbeResult, down_after: int, recorder_sees: bool | None) -> None:
    track.ok_run = 0
    track.fail_run += 1
    if track.first_fail is None:
        track.first_fail = result.at
    cls = result.outcome
    if cls == "down" and recorder_sees is True:
        cls = "path_problem"  # the camera is alive on the recorder's side: our path to it is broken
    track.pending = cls
    if track.fail_run >= down_after and track.status != cls:
        since = track.first_fail if track.status not in FAULT_KINDS else result.at
        data = {**track.identity, **result.evidence(), "first_failure_at": round(track.first_fail, 3),
                "failures": track.fail_run, "recorder_sees": recorder_sees}
        _enter(track, cls, since, data)


def _enter(track: Track, status: str, since: float, data: dict[str, Any]) -> None:
    data["previous"] = track.status
    track.status, track.since, track.data = status, since, data


def _check_origin(track: Track, result: ProbeResult) -> None:
    """A stable SDP origin that changes means the camera's RTSP daemon (usually the camera) restarted."""
    if not result.origin:
        return
    if result.origin == track.origin:
        track.origin_stable = True
        return
    if track.origin_stable:
        track.reboots += 1
        track.reboot = {**track.identity, "how": "sdp_origin_changed", "old_origin": track.origin,
                        "new_origin": result.origin, "detected_at": round(result.at, 3)}
    track.origin, track.origin_stable = result.origin, False


@dataclass
class CamerasView:
    """Every registered camera's status, and the agent's blindness, at one moment."""

    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    blind: dict[str, Any] | None = None
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest evidence, not persisted
    ptz: dict[str, dict[str, Any]] = field(default_factory=dict)  # PtzTrack.to_json per camera in a window
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)  # camera_rooms.judge: rooms in a window

    def to_json(self) -> dict[str, Any]:
        """Persisted and snapshotted form: changes only on transitions, not with every probe."""
        return {"cameras": self.cameras, "blind": self.blind, "ptz": self.ptz, "rooms": self.rooms}

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Transitions into a fault, out of one (``camera.up``), reboots, blindness edges, PTZ
        moves in exam windows (:mod:`camera_ptz`) and room coverage (:mod:`camera_rooms`).

        On the first run (``before == {}``) only faults and blindness are reported: a camera that
        is merely up is not news.
        """
        events: list[tuple[str, dict[str, Any]]] = []
        old_blind = before.get("blind")
        if self.blind and not old_blind:
            events.append(("agent.blind", self.blind))
        elif old_blind and not self.blind:
            events.append(("agent.sight_restored", {**old_blind, "blind_since": old_blind.get("since")}))
        old = before.get("cameras", {})
        for mac, cam in sorted(self.cameras.items()):
            prev = old.get(mac, {})
            was, now = prev.get("status", "unknown"), cam["status"]
            if now != was and now in FAULT_KINDS:
                events.append((FAULT_KINDS[now], {**cam["data"], "since": cam["since"]}))
            elif now != was and now == "up" and was in FAULT_KINDS:
                events.append(("camera.up", {**cam["data"], "since": cam["since"], "fault_since": prev.get("since")}))
            if prev and cam["reboots"] > prev.get("reboots", 0):
                events.append(("camera.rebooted", cam["reboot"]))
        events += camera_ptz.diff(self.ptz, before.get("ptz", {}))
        events += camera_rooms.diff(self.rooms, before.get("rooms", {}))
        return events
