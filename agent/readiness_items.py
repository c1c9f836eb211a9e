"""Judging each readiness item from what the watchers saw: pass / fail / unknown, what was seen,
how to fix it (Chinese, from ``agent/strings``), and structured evidence.

Pure functions over :class:`agent.readiness.Seen` and the context, so every verdict is tested
without sockets. ``fail`` means the venue breaks a rule now; ``unknown`` that the agent could not
tell (a watcher not configured or failing, no signed config yet, the collector out of reach) —
never a guess either way. Evidence lists are capped so a report always fits one record.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from agent.config import AgentConfig
from agent.strings import t
from protocol.readiness import ITEMS, MAX_CLOCK_OFFSET, ItemResult

if TYPE_CHECKING:
    from agent.readiness import Context, Seen

#: Findings named in ``seen`` at most; the evidence holds up to ``MAX_EVIDENCE``.
MAX_NAMED, MAX_EVIDENCE = 5, 50
#: Where each item's facts come from: a disabled or failed watcher leaves the item unknown.
WATCHER_OF = {"cameras": "cameras", "recorders": "recorders", "recorder_disks": "recorders",
              "recording": "recorders", "lan_devices": "lan", "terminals": "lan", "host_address": "host",
              "remote_control": "host", "wireless": "host", "isolation": "isolation", "logs": "logs"}
LOG_INCIDENT_SECONDS = 24 * 3600.0
GIB = float(1 << 30)


@dataclass
class Findings:
    """What one item found wrong or could not tell, with the fixes to suggest (each once)."""

    item: str
    failed: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    def fail(self, seen: str, fix: str) -> None:
        self.failed.append(seen)
        self._fix(fix)

    def unknown(self, seen: str, fix: str) -> None:
        self.unsure.append(seen)
        self._fix(fix)

    def _fix(self, fix: str) -> None:
        if fix and fix not in self.fixes:
            self.fixes.append(fix)

    def result(self, ok: str, evidence: dict[str, Any]) -> ItemResult:
        """fail when anything failed, else unknown when anything was unsure, else pass with ``ok``."""
        if self.failed or self.unsure:
            status = "fail" if self.failed else "unknown"
            return ItemResult(self.item, status, _named(self.failed + self.unsure), "".join(self.fixes), evidence)
        return ItemResult(self.item, "pass", ok, "", evidence)


def _named(parts: list[str]) -> str:
    """At most ``MAX_NAMED`` findings, then how many more."""
    text = "；".join(parts[:MAX_NAMED])
    return text + (t("rd.more", n=len(parts) - MAX_NAMED) if len(parts) > MAX_NAMED else "")


def judge(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> tuple[ItemResult, ...]:
    """Every item of :data:`ITEMS`, in order."""
    judges: dict[str, Callable[[AgentConfig, Context, Seen, float], ItemResult]] = {
        "cameras": cameras, "recorders": recorders, "recorder_disks": recorder_disks, "recording": recording,
        "lan_devices": lan_devices, "terminals": terminals, "host_address": host_address,
        "remote_control": remote_control, "wireless": wireless, "isolation": isolation, "logs": logs,
        "clocks": clocks, "outbox": outbox, "host_disk": host_disk}
    return tuple(_blocked(item, ctx, seen) or judges[item](cfg, ctx, seen, now) for item in ITEMS)


def _blocked(item: str, ctx: Context, seen: Seen) -> ItemResult | None:
    """unknown when the item's watcher is not configured or failed, or it needs the inventory and
    there is none yet."""
    watcher = WATCHER_OF.get(item)
    if watcher is None:
        return None
    if watcher not in seen.enabled:
        return ItemResult(item, "unknown", t("rd.not_configured", watcher=watcher),
                          t("rd.fix.not_configured", watcher=watcher), {"watcher": watcher, "enabled": False})
    if watcher in seen.errors:
        return ItemResult(item, "unknown", t("rd.watcher_failed", watcher=watcher, error=seen.errors[watcher]),
                          t("rd.fix.watcher_failed"), {"watcher": watcher, "error": seen.errors[watcher]})
    needs_inventory = item not in ("remote_control", "wireless", "isolation", "logs")
    if needs_inventory and ctx.inventory is None:
        return ItemResult(item, "unknown", t("rd.no_inventory"), t("rd.fix.no_inventory"), {"inventory": None})
    return None


def _who(d: dict[str, Any]) -> str:
    """``名称（IP，房间）`` of a device, as venue staff know it."""
    place = "，".join(str(x) for x in (d.get("ip"), d.get("room")) if x)
    return f"{d.get('name') or d.get('mac')}（{place}）" if place else str(d.get("name") or d.get("mac"))


# -- cameras ---------------------------------------------------------------------------------------


def cameras(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Every registered camera of every room with an exam streams (L3) — and every such room has one."""
    assert ctx.inventory is not None and seen.cameras is not None
    f = Findings("cameras")
    rooms = ctx.exam_rooms
    registered = [d for d in ctx.inventory.devices if d.role == "camera"]
    judged = [d for d in registered if d.ip and (rooms is None or d.room in rooms)]
    for room in sorted((rooms or set()) - {d.room for d in registered if d.ip}):
        f.fail(t("rd.cam.room_without_camera", room=room), t("rd.fix.cam.room_without_camera"))
    view = seen.cameras
    evidence: dict[str, Any] = {"exam_rooms": sorted(rooms) if rooms else None, "cameras": {}}
    if view.blind:
        f.unknown(t("rd.cam.blind"), t("rd.fix.cam.blind"))
        evidence["blind"] = view.blind
    for d in judged:
        status = view.cameras.get(d.mac, {}).get("status", "unknown")
        probe = view.probes.get(d.mac, {})
        evidence["cameras"][d.mac] = {"name": d.name, "ip": d.ip, "room": d.room, "status": status,
                                      "level": probe.get("level"), "error": probe.get("error", ""),
                                      "rtp_packets": probe.get("rtp_packets", 0)}
        if view.blind:
            continue
        if status == "up" and probe.get("level") == "L3":
            continue
        if status in ("up", "unknown"):
            f.unknown(t("rd.cam.not_sampled", who=_who(evidence["cameras"][d.mac])), t("rd.fix.watcher_failed"))
            continue
        f.fail(t(f"rd.cam.{status}", who=_who({"name": d.name, "ip": d.ip, "room": d.room}),
                 error=probe.get("error", "")), t(f"rd.fix.cam.{status}"))
    evidence["no_ip"] = [d.mac for d in registered if not d.ip]
    ok = t("rd.cam.ok", n=len(judged), rooms=len({d.room for d in judged}))
    return f.result(ok, evidence)


# -- recorders -------------------------------------------------------------------------------------


def _recorder_list(ctx: Context) -> list[Any]:
    assert ctx.inventory is not None
    return [d for d in ctx.inventory.devices if d.role == "recorder"]


def _episode(seen: Seen, kind: str, mac: str) -> dict[str, Any] | None:
    assert seen.recorders is not None
    return seen.recorders.view.episodes.get(f"{kind}|{mac}")


def recorders(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Every registered recorder answers and accepts the agent's credentials (粤应急规 二(四) 常开)."""
    assert seen.recorders is not None
    f = Findings("recorders")
    devices = _recorder_list(ctx)
    if not devices:
        f.fail(t("rd.rec.none_registered"), t("rd.fix.rec.none_registered"))
    evidence: dict[str, Any] = {}
    for d in devices:
        rec = seen.recorders.view.recorders.get(d.mac, {})
        down, auth = _episode(seen, "down", d.mac), _episode(seen, "auth_failed", d.mac)
        evidence[d.mac] = {k: rec.get(k) for k in ("ip", "name", "state", "model", "serial", "firmware")}
        who = _who({"name": d.name, "ip": d.ip, "room": d.room})
        if down is not None:
            evidence[d.mac]["error"] = down.get("error")
            f.fail(t("rd.rec.down", who=who, error=down.get("error", "")), t("rd.fix.rec.down"))
        elif auth is not None:
            evidence[d.mac]["error"] = auth.get("error")
            f.fail(t("rd.rec.auth_failed", who=who), t("rd.fix.rec.auth_failed"))
        elif rec.get("state") != "up":
            f.unknown(t("rd.rec.unsupported", who=who, vendor=d.vendor or "?"), t("rd.fix.rec.unsupported"))
    return f.result(t("rd.rec.ok", n=len(devices)), evidence)


def _answering(seen: Seen, mac: str) -> bool:
    assert seen.recorders is not None
    rec = seen.recorders.view.recorders.get(mac, {})
    return rec.get("state") == "up" and _episode(seen, "auth_failed", mac) is None


def recorder_disks(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Disks healthy, and free space on the healthy ones enough for the exam day's recording."""
    assert seen.recorders is not None
    f = Findings("recorder_disks")
    evidence: dict[str, Any] = {}
    for d in _recorder_list(ctx):
        who = _who({"name": d.name, "ip": d.ip, "room": d.room})
        disks = seen.recorders.disks.get(d.mac)
        if not _answering(seen, d.mac):
            f.unknown(t("rd.disk.unreachable", who=who), t("rd.fix.rec.down"))
            continue
        if disks is None:
            f.unknown(t("rd.disk.unreported", who=who), t("rd.fix.disk.unreported"))
            continue
        evidence[d.mac] = _disk_facts(cfg, ctx, seen, d.mac, disks)
        for disk in (x for x in disks.values() if x["fault"]):
            f.fail(t("rd.disk.fault", who=who, disk=disk["name"], status=disk["status"]), t("rd.fix.disk.fault"))
        need, free = evidence[d.mac]["need_gb"], evidence[d.mac]["free_gb"]
        if free < need:
            f.fail(t("rd.disk.low", who=who, free=free, need=need), t("rd.fix.disk.low"))
    hours = sum(s.end - s.start for s in ctx.sessions) / 3600
    ok = t("rd.disk.ok", hours=round(hours, 1)) if ctx.sessions else t("rd.disk.ok_no_sessions")
    return f.result(ok, evidence)


def _disk_facts(cfg: AgentConfig, ctx: Context, seen: Seen, mac: str, disks: dict[str, Any]) -> dict[str, Any]:
    """Free GB on healthy disks, and the GB the exam day will record on this recorder."""
    healthy = [x["free_mb"] for x in disks.values() if not x["fault"] and x["free_mb"] is not None]
    free = round(sum(healthy) / 1024, 1)
    need, basis = _need_gb(cfg, ctx, seen, mac)
    return {"free_gb": free, "need_gb": need, "basis": basis,
            "disks": {i: {k: x[k] for k in ("name", "status", "fault", "capacity_mb", "free_mb")} for i, x in disks.items()}}


def _need_gb(cfg: AgentConfig, ctx: Context, seen: Seen, mac: str) -> tuple[float, list[dict[str, Any]]]:
    """GB the exam day takes on recorder ``mac``: for each channel of an exam-room camera, its
    main-stream bitrate (the recorder's, else ``readiness.bitrate_mbps``) × that room's exam time
    (each session plus the camera lead time, when recording must already run)."""
    assert seen.recorders is not None
    lead = cfg.watchers.cameras.lead_minutes * 60
    seconds: dict[str, float] = {}
    for s in ctx.sessions:
        seconds[s.room] = seconds.get(s.room, 0.0) + s.end - s.start + lead
    rates = seen.recorders.bitrates.get(mac) or {}
    basis = []
    for ch, cam in _exam_channels(ctx, seen, mac):
        kbps = rates.get(int(ch)) if str(ch).isdigit() else None
        room = cam["room"]
        basis.append({"channel": ch, "camera": cam.get("mac"), "room": room, "seconds": seconds.get(room, 0.0),
                      "kbps": kbps or cfg.readiness.bitrate_mbps * 1000, "bitrate_from": "recorder" if kbps else "config"})
    total = sum(b["kbps"] * 1000 / 8 * b["seconds"] for b in basis)
    return round(total / GIB, 1), basis


def _exam_channels(ctx: Context, seen: Seen, mac: str) -> list[tuple[str, dict[str, Any]]]:
    """``(channel, camera)`` of the recorder's channels whose camera is in an exam room (every
    room when there is no session). A recorder that lists no channels is charged with every
    exam-room camera: better a disk called short than a day's footage lost."""
    assert seen.recorders is not None and ctx.inventory is not None
    rooms = ctx.exam_rooms
    channels = seen.recorders.view.recorders.get(mac, {}).get("channels")
    if channels is None:
        cams = [d for d in ctx.inventory.devices if d.role == "camera" and (rooms is None or d.room in rooms)]
        return [(f"camera:{d.mac}", {"mac": d.mac, "room": d.room, "name": d.name, "ip": d.ip}) for d in cams]
    return [(ch, c["camera"]) for ch, c in sorted(channels.items())
            if c.get("camera") and (rooms is None or c["camera"]["room"] in rooms)]


def recording(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Recording progresses on every exam-room channel (its newest segment is recent), and every
    exam-room camera is recorded by some recorder channel."""
    assert seen.recorders is not None and ctx.inventory is not None
    f = Findings("recording")
    evidence: dict[str, Any] = {}
    recorded: set[str] = set()
    for d in _recorder_list(ctx):
        who = _who({"name": d.name, "ip": d.ip, "room": d.room})
        if not _answering(seen, d.mac):
            f.unknown(t("rd.disk.unreachable", who=who), t("rd.fix.rec.down"))
            continue
        progress = seen.recorders.view.recorders.get(d.mac, {}).get("recording", {})
        for ch, cam in _exam_channels(ctx, seen, d.mac):
            recorded.add(cam.get("mac", ""))
            episode = _episode(seen, "not_recording", f"{d.mac}|{ch}")
            state = progress.get(str(ch), {}).get("recording")
            evidence[f"{d.mac}|{ch}"] = {"camera": cam, "recording": state,
                                         "lag_s": episode.get("lag_s") if episode else None}
            cam_who = _who(cam)
            if episode is not None:
                f.fail(t("rd.recording.stopped", who=who, channel=ch, camera=cam_who,
                         lag=_age(episode.get("lag_s"))), t("rd.fix.recording.stopped"))
            elif state is None:
                f.unknown(t("rd.recording.unknown", who=who, channel=ch, camera=cam_who), t("rd.fix.recording.unknown"))
    rooms = ctx.exam_rooms
    for cam in (c for c in ctx.inventory.devices if c.role == "camera" and (rooms is None or c.room in rooms)):
        if cam.mac not in recorded and all(_answering(seen, r.mac) for r in _recorder_list(ctx)):
            f.unknown(t("rd.recording.unmapped", camera=_who(cam.to_json())), t("rd.fix.recording.unmapped"))
    return f.result(t("rd.recording.ok", n=len(evidence)), evidence)


def _age(seconds: Any) -> str:
    if seconds is None:
        return t("rd.recording.none_found")
    return t("rd.minutes", n=round(float(seconds) / 60, 1))


# -- LAN -------------------------------------------------------------------------------------------

#: LAN episodes that fail the lan_devices item.
LAN_FAULTS = ("unregistered", "ip_changed", "mac_changed", "ip_conflict", "flip_flop")


def lan_devices(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Only registered devices on the exam LAN, each at its registered address (三(二)5)."""
    assert seen.lan is not None
    f = Findings("lan_devices")
    episodes = {k: v for k, v in sorted(seen.lan.episodes.items()) if k.split(":")[0] in LAN_FAULTS}
    for key, e in episodes.items():
        kind = key.split(":")[0]
        f.fail(t(f"rd.lan.{kind}", mac=e.get("mac", ""), ip=e.get("ip", ""), vendor=e.get("vendor") or "?",
                 name=(e.get("entry") or {}).get("name", ""), registered_ip=e.get("registered_ip", ""),
                 macs="、".join(e.get("macs", []))), t(f"rd.fix.lan.{kind}"))
    evidence = {"present": len(seen.lan.devices), "episodes": dict(list(episodes.items())[:MAX_EVIDENCE])}
    return f.result(t("rd.lan.ok", n=len(seen.lan.devices)), evidence)


def terminals(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Every registered exam terminal of the exam rooms answers on the LAN."""
    assert seen.lan is not None and ctx.inventory is not None
    f = Findings("terminals")
    rooms = ctx.exam_rooms
    expected = [d for d in ctx.inventory.devices if d.role == "exam_terminal" and (rooms is None or d.room in rooms)]
    if not expected:
        f.unknown(t("rd.term.none_registered"), t("rd.fix.term.none_registered"))
    missing = [d for d in expected if d.mac not in seen.lan.devices]
    for d in missing:
        f.fail(t("rd.term.missing", who=_who(d.to_json())), t("rd.fix.term.missing"))
    evidence = {"expected": len(expected), "missing": [d.mac for d in missing][:MAX_EVIDENCE]}
    return f.result(t("rd.term.ok", n=len(expected)), evidence)


# -- host ------------------------------------------------------------------------------------------


def host_address(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """This host carries its registered address (三(二)5 「擅自变更考场有关设备 IP 地址」)."""
    assert seen.host is not None and ctx.inventory is not None
    f = Findings("host_address")
    for m in seen.host.registered_mismatch.values():
        f.fail(t("rd.host.mismatch", interface=m["interface"], registered_ip=m["registered_ip"],
                 addrs="、".join(m["addrs"]) or "-"), t("rd.fix.host.mismatch"))
    mine = {v.get("mac") for v in seen.host.interfaces.values()}
    entries = [d for d in ctx.inventory.devices if d.mac in mine]
    if not entries and not f.failed:
        f.unknown(t("rd.host.unregistered"), t("rd.fix.host.unregistered"))
    ok = t("rd.host.ok", addrs="、".join(f"{d.ip or 'DHCP'}（{d.mac}）" for d in entries))
    return f.result(ok, {"registered": [d.to_json() for d in entries], "mismatch": seen.host.registered_mismatch})


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def remote_control(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """No remote-control program running and no listener on a remote-access port (二(四))."""
    assert seen.host is not None
    f = Findings("remote_control")
    for tool in seen.host.remote_tools.values():
        f.fail(t("rd.remote.tool", tool=tool["tool_name"], name=tool["name"], pid=tool["pid"]), t("rd.fix.remote.tool"))
    local = []
    for s in seen.host.remote_listeners.values():
        if _loopback(s["address"]):
            local.append(s)
            continue
        f.fail(t("rd.remote.listener", port=s["port"], protocol=s["protocol"], address=s["address"],
                 process=s.get("process") or "?"), t("rd.fix.remote.listener"))
    ok = t("rd.remote.ok_local", n=len(local)) if local else t("rd.remote.ok")
    return f.result(ok, {"tools": list(seen.host.remote_tools.values()),
                         "listeners": list(seen.host.remote_listeners.values())})


def wireless(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """No wireless interface on the host (二(四) 「严禁使用……无线接入」)."""
    assert seen.host is not None
    f = Findings("wireless")
    for w in seen.host.wireless.values():
        f.fail(t("rd.wireless.found", interface=w["interface"], mac=w["mac"],
                 how=t(f"rd.wireless.{w['evidence']}")), t("rd.fix.wireless"))
    return f.result(t("rd.wireless.ok"), {"wireless": list(seen.host.wireless.values())})


def isolation(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """No configured forbidden target reachable, and no route off the exam subnets (二(四) 物理隔离)."""
    assert seen.isolation is not None
    f = Findings("isolation")
    for r in seen.isolation.targets.values():
        if r["reachable"]:
            f.fail(t("rd.iso.reachable", target=r["target"], how=r["how"]), t("rd.fix.iso.reachable"))
    routes = seen.host.routes_outside if seen.host is not None else {}
    for r in routes.values():
        f.fail(t("rd.iso.route", destination=r["destination"], gateway=r["gateway"] or "-", interface=r["interface"]),
               t("rd.fix.iso.route"))
    routes_checked = seen.host is not None and bool(cfg.watchers.host.exam_subnets)
    ok = t("rd.iso.ok", n=len(seen.isolation.targets)) + ("" if routes_checked else t("rd.iso.routes_off"))
    return f.result(ok, {"targets": seen.isolation.targets, "routes_outside": list(routes.values()),
                         "routes_checked": routes_checked})


# -- logs ------------------------------------------------------------------------------------------


def logs(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Log sources intact since the last manifest (also while the agent was down) and the violations
    reported in the last day; retention not short (二(四): 留存不低于3年, 严禁删除)."""
    assert seen.logs is not None
    f = Findings("logs")
    check = seen.logs
    if not check.has_manifest:
        f.unknown(t("rd.logs.no_manifest"), t("rd.fix.logs.no_manifest"))
    recent = [i for i in check.incidents if now - float(i["at"]) <= LOG_INCIDENT_SECONDS]
    for kind, data in check.events:
        f.fail(t(f"rd.logs.{kind.split('.')[1]}", path=data.get("path", ""), source=data.get("source", "")),
               t("rd.fix.logs.damaged"))
    for i in recent:
        f.fail(t(f"rd.logs.{i['kind'].split('.')[1]}", path=i.get("path", ""), source=i.get("source", ""))
               + t("rd.logs.reported"), t("rd.fix.logs.damaged"))
    for short in check.view.retention_short.values():
        f.fail(t("rd.logs.retention_short", source=short["source"], oldest=short.get("oldest_path") or "-"),
               t("rd.fix.logs.retention_short"))
    evidence = {"found": [{"kind": k, **{x: d.get(x) for x in ("path", "source", "size_before", "inode")}}
                          for k, d in check.events][:MAX_EVIDENCE],
                "reported": recent[-MAX_EVIDENCE:], "retention_short": check.view.retention_short,
                "sources": check.view.sources}
    return f.result(t("rd.logs.ok", n=len(check.view.sources)), evidence)


# -- clocks, outbox, disk --------------------------------------------------------------------------


def clocks(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """The host's clock within 2 s of the collector's; cameras' (ONVIF) and recorders' within 2 s of
    the host's (a device is compared with the host, which is compared with the collector)."""
    f = Findings("clocks")
    evidence: dict[str, Any] = {"max_offset": MAX_CLOCK_OFFSET, "host": None, "devices": {}}
    if ctx.clock is None:
        f.unknown(t("rd.clock.no_collector"), t("rd.fix.clock.no_collector"))
    else:
        evidence["host"] = {"offset": round(ctx.clock.offset, 2), "source": ctx.clock.source, "at": round(ctx.clock.at, 3)}
        if abs(ctx.clock.offset) > MAX_CLOCK_OFFSET:
            f.fail(t("rd.clock.host", offset=round(-ctx.clock.offset, 1)), t("rd.fix.clock.host"))
    for who, offset, mac in _device_clocks(ctx, seen):
        evidence["devices"][mac] = offset
        if abs(offset) > MAX_CLOCK_OFFSET:
            f.fail(t("rd.clock.device", who=who, offset=offset), t("rd.fix.clock.device"))
    ok = t("rd.clock.ok", offset=round(-ctx.clock.offset, 1) if ctx.clock else 0, n=len(evidence["devices"]))
    return f.result(ok, evidence)


def _device_clocks(ctx: Context, seen: Seen) -> list[tuple[str, float, str]]:
    """``(who, device − host seconds, mac)`` of every camera and recorder whose clock was read."""
    by_mac = ctx.inventory.by_mac if ctx.inventory is not None else {}
    out = []
    if seen.cameras is not None:
        for mac, probe in sorted(seen.cameras.probes.items()):
            if probe.get("clock_offset") is not None and mac in by_mac:
                out.append((_who(by_mac[mac].to_json()), float(probe["clock_offset"]), mac))
    if seen.recorders is not None:
        for mac, offset in sorted(seen.recorders.clock_offsets.items()):
            if offset is not None and mac in by_mac:
                out.append((_who(by_mac[mac].to_json()), float(offset), mac))
    return out


def outbox(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Nothing waits in the outbox longer than ``readiness.outbox_max_age`` (records in flight for
    a moment are normal while the service runs); the report itself is committed after the check."""
    f = Findings("outbox")
    age = None if seen.outbox_oldest is None else round(now - seen.outbox_oldest, 1)
    if age is not None and age > cfg.readiness.outbox_max_age:
        f.fail(t("rd.outbox.stuck", n=seen.outbox_depth, minutes=round(age / 60, 1)), t("rd.fix.outbox.stuck"))
    ok = t("rd.outbox.ok") if not seen.outbox_depth else t("rd.outbox.in_flight", n=seen.outbox_depth)
    return f.result(ok, {"depth": seen.outbox_depth, "oldest_age_s": age, "max_age_s": cfg.readiness.outbox_max_age})


def host_disk(cfg: AgentConfig, ctx: Context, seen: Seen, now: float) -> ItemResult:
    """Free space of the agent's data folder at least ``host_min_free_gb`` and ``host_min_free_percent``."""
    f = Findings("host_disk")
    c = cfg.readiness
    need = max(c.host_min_free_gb * GIB, seen.disk_total * c.host_min_free_percent / 100)
    free_gb, need_gb = round(seen.disk_free / GIB, 1), round(need / GIB, 1)
    if seen.disk_free < need:
        f.fail(t("rd.hostdisk.low", path=str(cfg.agent.data_dir), free=free_gb, need=need_gb), t("rd.fix.hostdisk.low"))
    evidence = {"path": str(cfg.agent.data_dir), "free_bytes": seen.disk_free, "total_bytes": seen.disk_total,
                "need_bytes": int(need)}
    return f.result(t("rd.hostdisk.ok", free=free_gb, need=need_gb), evidence)


# -- the seal's baseline ---------------------------------------------------------------------------


def baseline(ctx: Context, seen: Seen) -> dict[str, Any]:
    """What the seal keeps when the venue passes: devices, the host's addresses, cameras, recorders."""
    return {"devices": _devices(seen), "host": _host(seen), "cameras": _cameras(ctx, seen),
            "recorders": _recorders(seen), "config_version": ctx.config_version}


def _devices(seen: Seen) -> dict[str, str]:
    if seen.lan is None:
        return {}
    return {mac: d["ip"] for mac, d in sorted(seen.lan.devices.items()) if d.get("ip")}


def _host(seen: Seen) -> dict[str, list[str]]:
    if seen.host is None:
        return {}
    return {name: list(v["addrs"]) for name, v in sorted(seen.host.interfaces.items())}


def _cameras(ctx: Context, seen: Seen) -> dict[str, dict[str, Any]]:
    if seen.cameras is None or ctx.inventory is None:
        return {}
    out = {}
    for mac, cam in sorted(seen.cameras.cameras.items()):
        dev, probe = ctx.inventory.by_mac.get(mac), seen.cameras.probes.get(mac, {})
        if dev is not None:
            out[mac] = {"ip": dev.ip, "name": dev.name, "room": dev.room, "status": cam.get("status"),
                        "level": probe.get("level"), "origin": probe.get("origin") or None}
    return out


def _recorders(seen: Seen) -> dict[str, dict[str, Any]]:
    if seen.recorders is None:
        return {}
    out = {}
    for mac, rec in sorted(seen.recorders.view.recorders.items()):
        channels = {ch: {"ip": c.get("ip"), "camera": (c.get("camera") or {}).get("mac")}
                    for ch, c in (rec.get("channels") or {}).items()}
        disks = {i: {"name": d["name"], "status": d["status"]} for i, d in (rec.get("disks") or {}).items()}
        out[mac] = {"ip": rec.get("ip"), "model": rec.get("model"), "serial": rec.get("serial"),
                    "firmware": rec.get("firmware"), "disks": disks, "channels": channels}
    return out
