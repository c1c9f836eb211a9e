"""PTZ position of Hikvision cameras: a camera turned away from the room during an exam.

穗 五(二) names 「考场前端摄像头（含云台）」: a pan-tilt-zoom camera that is on and streaming but
pointed at the ceiling watches nothing, and RTSP probes cannot tell. Hikvision cameras report their
position at ``GET /ISAPI/PTZCtrl/channels/1/status`` (Digest), as ``PTZStatus/AbsoluteHigh``
``elevation``/``azimuth``/``absoluteZoom`` in tenths of a degree / of the zoom factor.

Inside an exam window the first reading is the camera's *home* (the position the venue set up for
the exam); a later reading off home by more than ``tolerance`` on any axis opens a *moved* episode
(``camera.ptz_moved`` once), coming back within tolerance closes it (``camera.ptz_restored``).
Outside exam windows positions are not read and nothing is reported: turning a camera between exams
is no fault. An agent restart picks a fresh home from its first reading in the window.

Cameras that do not answer PTZ (HTTP 404, not XML, credentials refused) are skipped for the rest of
the window: one refused login per window at most, so the account is never locked out by us.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from agent.watchers.digest import AuthFailed, DigestClient, ProbeError

PATH = "/ISAPI/PTZCtrl/channels/1/status"
AXES = ("elevation", "azimuth", "zoom")
_TAGS = {"elevation": "elevation", "azimuth": "azimuth", "absoluteZoom": "zoom"}
#: Azimuth is in tenths of a degree and wraps: 3595 and 5 are one degree apart, not 359.
AZIMUTH_TURN = 3600.0


class Unsupported(Exception):
    """The camera has no PTZ status for us (404, no position in the answer, credentials refused)."""


def parse_status(body: bytes) -> dict[str, float] | None:
    """``PTZStatus`` → ``{elevation, azimuth, zoom}``; None without a complete ``AbsoluteHigh``.

    Matched by local name: firmwares use the ver10 or ver20 Hikvision namespace, or none.
    """
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    high = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "AbsoluteHigh"), None)
    if high is None:
        return None
    pos: dict[str, float] = {}
    for el in high:
        name = _TAGS.get(el.tag.rsplit("}", 1)[-1])
        if name is not None and el.text is not None:
            try:
                pos[name] = float(el.text.strip())
            except ValueError:
                return None
    return pos if len(pos) == len(AXES) else None


def read_position(client: DigestClient) -> dict[str, float] | None:
    """The camera's position; None when it could not be read this time (timeout, refused)."""
    try:
        body = client.get(PATH)
    except AuthFailed as exc:
        raise Unsupported(str(exc)) from exc
    except ProbeError as exc:
        if exc.reason.startswith("http 4"):
            raise Unsupported(exc.reason) from exc
        return None
    pos = parse_status(body)
    if pos is None:
        raise Unsupported("no PTZStatus/AbsoluteHigh in the answer")
    return pos


def offset(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest per-axis difference (azimuth the short way round)."""
    d = [abs(a[k] - b[k]) for k in AXES]
    d[1] = min(d[1], AZIMUTH_TURN - d[1])
    return max(d)


@dataclass
class PtzTrack:
    """One camera's PTZ state within one exam window."""

    identity: dict[str, Any]
    home: dict[str, float] | None = None
    home_at: float | None = None
    status: str = "home"  # home | moved
    data: dict[str, Any] = field(default_factory=dict)  # evidence frozen at the last transition
    moved_at: float | None = None
    off: dict[str, float] | None = None  # the latest position off home

    def fold(self, pos: dict[str, float], at: float, tolerance: float) -> None:
        """One reading: the first sets home; leaving or regaining home (± tolerance) is a transition."""
        if self.home is None:
            self.home, self.home_at = dict(pos), at
            self.data = {**self.identity, "home": self.home, "since": round(at, 3)}
            return
        away = offset(self.home, pos) > tolerance
        if away:
            self.off = dict(pos)
        if away and self.status == "home":
            self.status, self.moved_at = "moved", at
            self.data = {**self.identity, "home": self.home, "before": self.home, "after": dict(pos),
                         "since": round(at, 3), "window_since": round(self.home_at or at, 3), "tolerance": tolerance}
        elif not away and self.status == "moved":
            self.status = "home"
            self.data = {**self.identity, "home": self.home, "before": self.off, "after": dict(pos),
                         "since": round(at, 3), "moved_since": round(self.moved_at or at, 3),
                         "window_since": round(self.home_at or at, 3), "tolerance": tolerance}

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "home_at": self.home_at, "data": self.data}


def diff(now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """PTZ edges within one window (same ``home_at``); a new or closed window is no event."""
    events = []
    for mac, cur in sorted(now.items()):
        prev = before.get(mac)
        if prev is None or prev.get("home_at") != cur["home_at"] or prev.get("status") == cur["status"]:
            continue
        events.append(("camera.ptz_moved" if cur["status"] == "moved" else "camera.ptz_restored", cur["data"]))
    return events
