"""Dahua CGI ("HTTP API for IPC & NVR"): identity, disks, channels and newest recorded file.

Dahua answers ``key=value`` lines (``list.info[0].State=Success``). Times are the device's local
wall clock without a zone, so recording lag is measured against the device's own clock
(``global.cgi?action=getCurrentTime``), never the agent's. The classic CGI set has no uptime, so
reboots of Dahua recorders are not detected here (the RPC2 ``magicBox.getUpTime`` would be the way).
"""

from __future__ import annotations

import datetime as dt
import re
import time
import urllib.parse

from agent.watchers.digest import AuthFailed, DigestClient, ProbeError
from agent.watchers.recorder_probe import Channel, Disk, Probe, Segment, fill_newest, lag_seconds, parse_time

#: ``getCameraState`` words for a channel with no camera configured (Dahua's documents spell it
#: ``Emtpy``; firmwares are seen with both).
EMPTY = frozenset({"empty", "emtpy"})
_ITEM_RE = re.compile(r"^list\.info\[(\d+)\]\.(?:Detail\[(\d+)\]\.)?(\w+)$")
_STATE_RE = re.compile(r"^states\[(\d+)\]\.(\w+)$")
_FILE_RE = re.compile(r"^items\[(\d+)\]\.(\w+)$")
MAX_ROUNDS = 5
COUNT = 100


def parse_kv(body: bytes) -> dict[str, str]:
    """``key=value`` lines → dict (CRLF or LF; lines without ``=`` are ignored)."""
    out: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_system_info(body: bytes, version: bytes = b"") -> dict[str, str]:
    """``getSystemInfo`` (+ ``getSoftwareVersion``) → model, serial, firmware, device_name, device_type."""
    kv, ver = parse_kv(body), parse_kv(version)
    if not kv:
        raise ProbeError("bad_response", "getSystemInfo answered no key=value lines")
    return {"model": kv.get("deviceType", ""), "serial": kv.get("serialNumber", ""),
            "firmware": ver.get("version", ""), "device_name": kv.get("updateSerial", ""), "device_type": kv.get("deviceType", "")}


def parse_storage(body: bytes) -> dict[str, Disk]:
    """``getDeviceAllInfo`` → per disk name: ``State`` and partitions' ``IsError`` words, space.

    A disk is a fault when its ``State`` is not ``Success`` or any partition says ``IsError=true``.
    """
    disks: dict[int, dict[str, str]] = {}
    parts: dict[tuple[int, int], dict[str, str]] = {}
    for key, value in parse_kv(body).items():
        if m := _ITEM_RE.match(key):
            i, j, name = int(m[1]), m[2], m[3]
            (parts.setdefault((i, int(j)), {}) if j is not None else disks.setdefault(i, {}))[name] = value
    out: dict[str, Disk] = {}
    for i, d in sorted(disks.items()):
        mine = [p for (di, _), p in sorted(parts.items()) if di == i]
        total = sum(_number(p.get("TotalBytes")) for p in mine)
        used = sum(_number(p.get("UsedBytes")) for p in mine)
        errors = [p.get("IsError", "") for p in mine]
        words = " ".join([d.get("State", "")] + [f"IsError={e}" for e in errors])
        fault = d.get("State", "").lower() != "success" or any(e.lower() == "true" for e in errors)
        out[d.get("Name", str(i))] = {"name": d.get("Name", ""), "status": words, "fault": fault,
                                      "capacity_mb": round(total / 2**20, 1), "free_mb": round((total - used) / 2**20, 1)}
    return out


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def parse_camera_state(body: bytes) -> dict[int, Channel]:
    """``getCameraState`` → per channel (1-based, as on the recorder's screen): connected or not."""
    states: dict[int, dict[str, str]] = {}
    for key, value in parse_kv(body).items():
        if m := _STATE_RE.match(key):
            states.setdefault(int(m[1]), {})[m[2]] = value
    out: dict[int, Channel] = {}
    for s in states.values():
        word = s.get("connectionState", "")
        if s.get("channel", "").isdigit() and word.lower() not in EMPTY:
            out[int(s["channel"]) + 1] = {"online": word == "Connected", "status": word, "ip": ""}
    return out


def parse_found_ends(body: bytes) -> tuple[int, list[str]]:
    """``findNextFile`` → (``found``, each item's ``EndTime``)."""
    kv = parse_kv(body)
    ends = [v for k, v in kv.items() if (m := _FILE_RE.match(k)) and m[2] == "EndTime"]
    found = kv.get("found", "0")
    return int(found) if found.isdigit() else 0, ends


def _fmt(t: dt.datetime) -> str:
    return urllib.parse.quote(t.strftime("%Y-%m-%d %H:%M:%S"))


def newest_file(client: DigestClient, channel: int, clock: dt.datetime, lookback: float) -> Segment:
    """Create a finder, search the channel's ``dav`` files in the window, read all, close it."""
    base = "/cgi-bin/mediaFileFind.cgi?action="
    obj = parse_kv(client.get(base + "factory.create")).get("result", "")
    if not obj:
        raise ProbeError("bad_response", "mediaFileFind factory.create returned no object")
    start, end = clock - dt.timedelta(seconds=lookback), clock + dt.timedelta(hours=1)
    ends: list[str] = []
    try:
        client.get(f"{base}findFile&object={obj}&condition.Channel={channel}&condition.StartTime={_fmt(start)}"
                   f"&condition.EndTime={_fmt(end)}&condition.Types[0]=dav")
        for _ in range(MAX_ROUNDS):
            found, more = parse_found_ends(client.get(f"{base}findNextFile&object={obj}&count={COUNT}"))
            ends += more
            if found < COUNT:
                break
    except ProbeError as exc:
        if exc.reason != "http 400":  # Dahua answers 400 "Error" to findFile when nothing matches
            raise
    finally:
        for action in ("close", "destroy"):
            try:
                client.get(f"{base}{action}&object={obj}")
            except ProbeError:
                pass
    parsed = [(t, e) for e in ends if (t := parse_time(e)) is not None]
    if not parsed:
        return {"end": None, "lag_s": None}
    t, text = max(parsed, key=lambda p: p[0])
    return {"end": text, "lag_s": round(lag_seconds(clock, t), 1)}


def probe(client: DigestClient, windows: tuple[float, ...]) -> Probe:
    """One poll. getSystemInfo must answer (the liveness test); other parts may fail alone."""
    info = client.get("/cgi-bin/magicBox.cgi?action=getSystemInfo")
    try:
        version = client.get("/cgi-bin/magicBox.cgi?action=getSoftwareVersion")
    except AuthFailed:
        raise
    except ProbeError:
        version = b""
    result = Probe(parse_system_info(info, version))
    try:
        asked = time.time()
        result.clock = parse_kv(client.get("/cgi-bin/global.cgi?action=getCurrentTime")).get("result", "")
        result.clock_at = (asked + time.time()) / 2
    except AuthFailed:
        raise
    except ProbeError as exc:
        result.errors["clock"] = str(exc)
    clock = parse_time(result.clock) or dt.datetime.now()
    for part, path in (("disks", "/cgi-bin/storageDevice.cgi?action=getDeviceAllInfo"),
                       ("channels", "/cgi-bin/LogicDeviceManager.cgi?action=getCameraState&uniqueChannels[0]=-1")):
        try:
            body = client.get(path)
            if part == "disks":
                result.disks = parse_storage(body)
            else:
                result.channels = parse_camera_state(body)
        except AuthFailed:
            raise
        except ProbeError as exc:
            result.errors[part] = str(exc)
    fill_newest(result, client, clock, windows, newest_file)
    return result
