"""Exam sessions as the collector signs them into an agent's config: which room, when.

The schedule is imported at the collector (`venueguard-collector schedule import`); agents receive their venue's upcoming
sessions so they can probe harder inside exam windows. Times are epoch seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Session:
    """One exam session in one room."""

    room: str
    start: float
    end: float
    subject: str = ""
    session_id: str = ""

    def covers(self, t: float, lead: float = 0.0, lag: float = 0.0) -> bool:
        """Whether ``t`` lies in [start − lead, end + lag]."""
        return self.start - lead <= t <= self.end + lag

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Session":
        """Parse; ValueError when a field is missing or the end is not after the start."""
        try:
            s = cls(str(doc["room"]), float(doc["start"]), float(doc["end"]), str(doc.get("subject", "")),
                    str(doc.get("session_id", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"session {doc!r}: {exc}") from exc
        if s.end <= s.start:
            raise ValueError(f"session {doc!r}: end is not after start")
        return s


def windows(sessions: list[Session], room: str, t: float, lead: float = 15 * 60) -> list[Session]:
    """Sessions of ``room`` whose window (start − lead .. end) contains ``t``."""
    return [s for s in sessions if s.room == room and s.covers(t, lead=lead)]
