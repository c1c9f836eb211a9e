"""Judging recorder polls: debounce, episodes, edge events, and which cameras a recorder sees.

Pure code over :class:`Tracked` (the watcher's memory of each recorder) and the inventory, so it is
tested without HTTP. One condition is one *episode*, reported once when it opens and once when it
closes:

| key | opens | closes |
|---|---|---|
| ``down|<mac>`` | ``recorder.down`` (after ``down_after`` failed polls, back-dated to the first) | ``recorder.up`` (after ``up_after`` good polls) |
| ``auth_failed|<mac>`` | ``recorder.auth_failed`` (answers, rejects our credentials) | ``recorder.auth_ok`` |
| ``disk_fault|<mac>|<disk>`` | ``recorder.disk_fault`` (status word not ok) | ``recorder.disk_ok`` |
| ``disk_low|<mac>`` | ``recorder.disk_low`` (free space on healthy disks < ``min_free_gb``; off at 0) | ``recorder.disk_space_ok`` |
| ``channel_offline|<mac>|<ch>`` | ``recorder.channel_offline`` (``online`` False; None = unknown, ONVIF) | ``recorder.channel_online`` |
| ``not_recording|<mac>|<ch>`` | ``recorder.not_recording`` (newest segment ends > ``max_record_lag`` s ago, or none in the window) | ``recorder.recording`` |

``recorder.rebooted`` is a one-off: the recorder's boot time (device clock − uptime) moved forward.
While a recorder does not answer, its last known disk, channel and recording facts stay as they
were: silence is reported as ``recorder.down``, never as channels coming back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from agent.watchers.recorder_probe import Probe
from protocol.inventory import Device, Inventory

BOOT_SLACK = 60.0  # seconds: uptime may lag wall time by this much before it counts as a reboot
VOLATILE = ("lag_s", "free_gb", "uptime_s", "clock")  # change every poll: kept out of the persisted view
OPENS = {"down": "recorder.down", "auth_failed": "recorder.auth_failed", "disk_fault": "recorder.disk_fault",
         "disk_low": "recorder.disk_low", "channel_offline": "recorder.channel_offline",
         "not_recording": "recorder.not_recording"}
CLOSES = {"down": "recorder.up", "auth_failed": "recorder.auth_ok", "disk_fault": "recorder.disk_ok",
          "disk_low": "recorder.disk_space_ok", "channel_offline": "recorder.channel_online",
          "not_recording": "recorder.recording"}


@dataclass
class Tracked:
    """The watcher's memory of one recorder between polls."""

    state: str = "unknown"  # up | down | unknown (not polled successfully yet)
    fails: int = 0
    oks: int = 0
    first_fail: float | None = None
    error: str = ""
    auth_error: str = ""
    probe: Probe | None = None  # last known facts (parts merged over polls)
    boot: float | None = None
    uptime: int | None = None
    uptime_at: float | None = None  # agent monotonic time of ``uptime``

    def failed(self, error: str, at: float, down_after: int) -> None:
        """A poll got no answer: count it; ``down`` once ``down_after`` polls in a row failed."""
        self.fails, self.oks, self.error = self.fails + 1, 0, error
        self.first_fail = self.first_fail if self.first_fail is not None else at
        if self.fails >= down_after:
            self.state = "down"

    def answered(self, up_after: int, auth_error: str = "") -> None:
        """The device answered (perhaps only with 401); ``up`` again after ``up_after`` answers."""
        self.oks, self.fails, self.first_fail, self.auth_error = self.oks + 1, 0, None, auth_error
        if self.state != "down" or self.oks >= up_after:
            self.state, self.error = "up", ""

    def probed(self, probe: Probe, mono: float) -> None:
        """Keep the facts; move the boot time only when uptime did not keep pace with wall time."""
        self.probe = probe.merged(self.probe)
        if probe.uptime is None or probe.boot is None:
            return
        if self.boot is None or (self.uptime is not None and self.uptime_at is not None
                                 and probe.uptime < self.uptime + (mono - self.uptime_at) - BOOT_SLACK):
            self.boot = probe.boot
        self.uptime, self.uptime_at = probe.uptime, mono


@dataclass(frozen=True)
class RecorderView:
    """Every registered recorder's facts and the open episodes, at one moment."""

    recorders: dict[str, dict[str, Any]] = field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Persisted and snapshot form, without per-poll numbers, so it changes only on news."""
        return {"recorders": {m: _stable(r) for m, r in self.recorders.items()},
                "episodes": {k: _stable(d) for k, d in self.episodes.items()}}

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Opened and closed episodes, and reboots (a boot time that moved forward)."""
        old: dict[str, dict[str, Any]] = before.get("episodes", {})
        events = [(OPENS[k.split("|")[0]], d) for k, d in sorted(self.episodes.items()) if k not in old]
        for key, data in sorted(old.items()):
            if key not in self.episodes and key.split("|")[0] in CLOSES:
                events.append((CLOSES[key.split("|")[0]], {**data, "now": self._now(key)}))
        for mac, rec in sorted(self.recorders.items()):
            was = before.get("recorders", {}).get(mac, {}).get("boot")
            if was is not None and rec.get("boot") is not None and rec["boot"] - was > BOOT_SLACK:
                events.append(("recorder.rebooted", {**_ident(rec, mac), "previous_boot": _iso(was),
                                                     "boot": _iso(rec["boot"]), "uptime_s": rec.get("uptime_s"),
                                                     "clock": rec.get("clock", "")}))
        return events

    def _now(self, key: str) -> Any:
        """The current facts behind a closed episode's key (a channel, a disk, the device)."""
        kind, mac, *rest = key.split("|")
        rec = self.recorders.get(mac, {})
        part = {"disk_fault": "disks", "channel_offline": "channels", "not_recording": "recording"}.get(kind)
        if part and rest:
            return rec.get(part, {}).get(rest[0])
        return {k: rec.get(k) for k in ("state", "model", "serial", "firmware")}


def _stable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in VOLATILE}


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _ident(rec: dict[str, Any], mac: str) -> dict[str, Any]:
    """Who the evidence is about: the registered recorder and what it says it is."""
    return {"recorder": mac, **{k: rec.get(k, "") for k in ("ip", "name", "room", "vendor", "model", "serial", "firmware")}}


def camera_for(inventory: Inventory | None, recorder: Device, channel: int, ip: str) -> Device | None:
    """The registered camera on a recorder channel: by the IP the recorder reports for the channel,
    else by the camera's ``channel`` field, which is unambiguous only when the venue has one recorder."""
    if inventory is None:
        return None
    cameras = [d for d in inventory.devices if d.role == "camera"]
    if ip:
        by_ip = [c for c in cameras if c.ip == ip]
        if by_ip:
            return by_ip[0]
    if sum(1 for d in inventory.devices if d.role == "recorder") == 1:
        by_ch = [c for c in cameras if c.channel == channel]
        return by_ch[0] if len(by_ch) == 1 else None
    return None


def _camera(cam: Device | None) -> dict[str, Any] | None:
    return None if cam is None else {"mac": cam.mac, "ip": cam.ip, "name": cam.name, "room": cam.room}


def judge(devices: list[Device], tracked: dict[str, Tracked], inventory: Inventory | None,
          max_record_lag: float, min_free_gb: float, lookback: float) -> RecorderView:
    """Build the view of every registered recorder from what the watcher remembers of it."""
    view = RecorderView()
    for dev in devices:
        t = tracked.get(dev.mac, Tracked())
        p = t.probe
        rec: dict[str, Any] = {"ip": dev.ip, "name": dev.name, "room": dev.room, "vendor": dev.vendor, "state": t.state,
                               **(p.device if p else {}), "boot": None if t.boot is None else round(t.boot)}
        view.recorders[dev.mac] = rec
        ident = _ident(rec, dev.mac)
        if t.state == "down":
            view.episodes[f"down|{dev.mac}"] = {**ident, "since": t.first_fail, "error": t.error}
        if t.auth_error:
            view.episodes[f"auth_failed|{dev.mac}"] = {**ident, "error": t.auth_error}
        if p is None:
            continue
        rec.update(clock=p.clock, uptime_s=p.uptime)
        _disks(view, rec, ident, p, min_free_gb)
        _channels(view, rec, ident, p, inventory, dev, max_record_lag, lookback)
    return view


def _disks(view: RecorderView, rec: dict[str, Any], ident: dict[str, Any], p: Probe, min_free_gb: float) -> None:
    if p.disks is None:
        return
    rec["disks"] = {i: {"name": d["name"], "status": d["status"], "fault": d["fault"]} for i, d in p.disks.items()}
    for i, d in sorted(p.disks.items()):
        if d["fault"]:
            view.episodes[f"disk_fault|{ident['recorder']}|{i}"] = {**ident, "disk": i, "disk_name": d["name"],
                                                                  "status": d["status"], "capacity_mb": d["capacity_mb"]}
    healthy = [d["free_mb"] for d in p.disks.values() if not d["fault"] and d["free_mb"] is not None]
    free_gb = round(sum(healthy) / 1024, 2)
    if min_free_gb > 0 and healthy and free_gb < min_free_gb:  # no healthy disk: disk_fault says it
        view.episodes[f"disk_low|{ident['recorder']}"] = {
            **ident, "free_gb": free_gb, "min_free_gb": min_free_gb, "healthy_disks": len(healthy),
            "disks": {i: {"status": d["status"], "free_mb": d["free_mb"], "capacity_mb": d["capacity_mb"]}
                      for i, d in p.disks.items()}}


def _channels(view: RecorderView, rec: dict[str, Any], ident: dict[str, Any], p: Probe, inventory: Inventory | None,
              dev: Device, max_record_lag: float, lookback: float) -> None:
    if p.channels is None:
        return
    mac = ident["recorder"]
    rec["channels"], rec["recording"] = {}, {}
    for ch, c in sorted(p.channels.items()):
        cam = _camera(camera_for(inventory, dev, ch, c["ip"]))
        rec["channels"][str(ch)] = {"online": c["online"], "status": c["status"], "ip": c["ip"], "camera": cam}
        if c["online"] is False:  # None: the protocol cannot tell (ONVIF)
            view.episodes[f"channel_offline|{mac}|{ch}"] = {**ident, "channel": ch, "status": c["status"],
                                                            "channel_ip": c["ip"], "camera": cam}
        seg = (p.newest or {}).get(ch)
        if seg is None:
            continue
        recording = seg["lag_s"] is not None and seg["lag_s"] <= max_record_lag
        rec["recording"][str(ch)] = {"recording": recording}
        if not recording:
            view.episodes[f"not_recording|{mac}|{ch}"] = {
                **ident, "channel": ch, "camera": cam, "newest_end": seg["end"], "lag_s": seg["lag_s"],
                "max_record_lag": max_record_lag, "searched_s": lookback, "clock": p.clock,
                **{k: v for k, v in seg.items() if k not in ("end", "lag_s")}}  # e.g. ONVIF RecordingStatus


def sees(target: str, devices: list[Device], tracked: dict[str, Tracked], inventory: Inventory | None) -> bool | None:
    """Whether a recorder currently reports the camera (MAC or IP) online; None when no answering
    recorder has a channel mapped to it."""
    if inventory is None:
        return None
    cam = inventory.by_mac.get(target.lower()) or inventory.by_ip.get(target)
    if cam is None or cam.role != "camera":
        return None
    answers = []
    for dev in devices:
        t = tracked.get(dev.mac)
        if t is None or t.state != "up" or t.probe is None or t.probe.channels is None:
            continue
        for ch, c in t.probe.channels.items():
            mapped = camera_for(inventory, dev, ch, c["ip"])
            if mapped is not None and mapped.mac == cam.mac and c["online"] is not None:
                answers.append(bool(c["online"]))
    return any(answers) if answers else None
