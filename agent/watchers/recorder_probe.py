"""What one poll of one recorder found, in a vendor-neutral shape, and clock arithmetic on it.

The vendor modules (:mod:`agent.watchers.isapi`, :mod:`agent.watchers.dahua`) fill a
:class:`Probe`; :mod:`agent.watchers.recorder_view` judges it. A part the device failed to answer is
``None`` (with the reason in ``errors``), so the watcher can keep the last known value instead of
inventing a change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.watchers.digest import AuthFailed, ProbeError

Disk = dict[str, Any]
"""``{"name", "status" (raw words), "fault", "capacity_mb", "free_mb"}``"""
Channel = dict[str, Any]
"""``{"online", "status" (raw word), "ip"}``"""
Segment = dict[str, Any]
"""``{"end" (raw time text or None), "lag_s" (seconds behind the device clock, None: no segment)}``"""


@dataclass
class Probe:
    """One successful poll (the device answered its identity query)."""

    device: dict[str, str]  # model, serial, firmware, device_name, device_type: as stated
    uptime: int | None = None  # seconds, when the vendor reports it
    clock: str = ""  # the device clock as reported
    clock_at: float | None = None  # the agent's clock (epoch) when ``clock`` was read (mid-request)
    boot: float | None = None  # estimated boot time (epoch seconds), from clock − uptime
    disks: dict[str, Disk] | None = None
    channels: dict[int, Channel] | None = None
    newest: dict[int, Segment] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def merged(self, previous: "Probe | None") -> "Probe":
        """Parts this poll could not read are taken from ``previous`` (the last known facts)."""
        if previous is None:
            return self
        return Probe(self.device, self.uptime if self.uptime is not None else previous.uptime, self.clock or previous.clock,
                     self.clock_at if self.clock else previous.clock_at,
                     self.boot if self.boot is not None else previous.boot,
                     self.disks if self.disks is not None else previous.disks,
                     self.channels if self.channels is not None else previous.channels,
                     self.newest if self.newest is not None else previous.newest, dict(self.errors))


def parse_time(text: str) -> dt.datetime | None:
    """ISO 8601 (ISAPI, with or without a zone) or Dahua's ``2011-7-3 21:02:32``; None if neither."""
    text = text.strip()
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def clock_offset(probe: Probe, local_zone: dt.tzinfo) -> float | None:
    """Device clock − agent clock in seconds, None when unknown.

    For the readiness check (a recorder whose clock is off stamps wrong times on exam footage). A
    clock without a zone (Dahua) is the venue's local wall time, read in ``local_zone``. The
    device writes whole seconds, so the result may be up to 1 s low.
    """
    moment = parse_time(probe.clock) if probe.clock else None
    if moment is None or probe.clock_at is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=local_zone)
    return round(moment.timestamp() - probe.clock_at, 1)


def lag_seconds(clock: dt.datetime, end: dt.datetime) -> float:
    """How far ``end`` (a segment's end) lies behind ``clock`` (the same device's clock).

    Both come from the recorder, so the agent's own clock and time zone play no part. Firmwares
    disagree on zones: some label local time ``Z`` in search results while the status clock says
    ``+08:00``. A segment cannot end in the future, so when the zone-aware answer says it does by
    more than five minutes, the wall-clock readings are compared instead.
    """
    if (clock.tzinfo is None) != (end.tzinfo is None):
        clock, end = clock.replace(tzinfo=None), end.replace(tzinfo=None)
    lag = (clock - end).total_seconds()
    if lag < -300 and clock.tzinfo is not None and clock.utcoffset() != end.utcoffset():
        lag = (clock.replace(tzinfo=None) - end.replace(tzinfo=None)).total_seconds()
    return lag


def boot_time(clock: dt.datetime | None, uptime: int | None, agent_now: float) -> float | None:
    """Boot time from the device clock when it carries a zone, else from the agent's clock."""
    if uptime is None:
        return None
    now = clock.timestamp() if clock is not None and clock.tzinfo is not None else agent_now
    return now - uptime


def newest(client: Any, channel: int, clock: dt.datetime, windows: tuple[float, ...],
           search: Callable[[Any, int, dt.datetime, float], Segment]) -> Segment:
    """Search a short window first (few results, cheap); only when it holds nothing, the wider ones,
    so the evidence can say how old the newest recording is."""
    seg: Segment = {"end": None, "lag_s": None}
    for window in windows:
        seg = search(client, channel, clock, window)
        if seg["end"] is not None:
            break
    return seg


def fill_newest(result: Probe, client: Any, clock: dt.datetime, windows: tuple[float, ...],
                search: Callable[[Any, int, dt.datetime, float], Segment]) -> None:
    """The newest segment of every channel the recorder reported (vendor-neutral); a failed search
    is recorded in ``result.errors``, a refused login propagates."""
    if result.channels is None:
        return
    try:
        result.newest = {ch: newest(client, ch, clock, windows, search) for ch in sorted(result.channels)}
    except AuthFailed:
        raise
    except ProbeError as exc:
        result.errors["recordings"] = str(exc)
