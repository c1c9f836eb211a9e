"""Room coverage: a room with an exam on and no working camera (穗 五(二) 「确保考试区域监控全覆盖」).

Per-camera events say which camera failed; the regulation's question is whether the *room* is
watched. A room is *uncovered* while its exam window is open (start − lead to end) and every
registered (probed) camera of the room is in a fault status — down, stalled, path_problem or
auth_failed. A camera not judged yet (``unknown``, e.g. just after an agent start) makes the
room undetermined: no event either way, so a restart never claims a room covered or uncovered on
no evidence. A room with an exam session and no registered camera at all is uncovered.

``since`` is when the room lost its last camera: the latest of the window's opening and the
cameras' (back-dated) fault times. Pure code, tested without sockets.
"""

from __future__ import annotations

from typing import Any, Iterable

from protocol.schedule import Session

FAULTS = frozenset({"down", "stalled", "path_problem", "auth_failed"})


def open_windows(sessions: Iterable[Session], now: float, lead: float) -> dict[str, float]:
    """``{room: window opened at}`` for rooms whose exam window contains ``now``."""
    out: dict[str, float] = {}
    for s in sessions:
        if s.covers(now, lead=lead):
            out[s.room] = min(out.get(s.room, s.start - lead), s.start - lead)
    return out


def judge(windows: dict[str, float], cameras: dict[str, list[dict[str, Any]]],
          previous: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Coverage of every room with an open window.

    ``cameras``: ``{room: [{mac, name, state, since}]}`` of the registered cameras. Each result is
    ``{status: covered|uncovered|unknown, window_since, since, cameras: [{mac, name, state}]}``.
    ``previous`` (the last result) keeps an uncovered episode's ``since`` while its cameras move
    between fault classes.
    """
    out = {}
    for room, opened in sorted(windows.items()):
        cams = sorted(cameras.get(room, []), key=lambda c: c["mac"])
        listed = [{"mac": c["mac"], "name": c["name"], "state": c["state"]} for c in cams]
        if any(c["state"] not in FAULTS and c["state"] != "unknown" for c in cams):
            status = "covered"
        elif any(c["state"] == "unknown" for c in cams):
            status = "unknown"
        else:
            status = "uncovered"
        since = max([opened] + [c["since"] for c in cams if c.get("since") is not None])
        prev = (previous or {}).get(room)
        if status == "uncovered" and prev and prev["status"] == "uncovered":
            since = prev["since"]
        out[room] = {"status": status, "window_since": round(opened, 3), "since": round(since, 3),
                     "cameras": listed}
    return out


def diff(now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``camera.room_uncovered`` when a room becomes uncovered; ``camera.room_covered`` when an
    uncovered room has a working camera again or its window closes. Once per episode."""
    events: list[tuple[str, dict[str, Any]]] = []
    for room in sorted(set(now) | set(before)):
        cur, prev = now.get(room), before.get(room)
        was = prev["status"] if prev else ""
        if cur and cur["status"] == "uncovered" and was != "uncovered":
            events.append(("camera.room_uncovered", {"room": room, "cameras": cur["cameras"], "since": cur["since"],
                                                     "window_since": cur["window_since"]}))
        elif was == "uncovered" and (cur is None or cur["status"] == "covered"):
            assert prev is not None
            events.append(("camera.room_covered", {
                "room": room, "cameras": cur["cameras"] if cur else prev["cameras"], "since": prev["since"],
                "window_since": prev["window_since"], "reason": "window_closed" if cur is None else "camera_working"}))
    return events
