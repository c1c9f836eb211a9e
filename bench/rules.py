#!/usr/bin/env python3
"""Rulebook benchmark: events/s the rulebook evaluates (every rule in rules/), beside ingest in the same run.

For each event mix: a simulated exam day of N venues x M hosts is built and signed first; the
envelopes go through the real :class:`collector.ingest.Ingestor` (signature check, vault fsync,
SQL commit), timed per record; then a fresh :class:`collector.rulerunner.RulebookRunner` with the
store's calendar evaluates exactly those indexed records, timed per event. Target: the rulebook
at least 3x ingest's rate, so it is never the collector's bottleneck. Loopback only: no broker,
no network; everything lives in a temporary directory (and, with ``--db postgresql``, a fresh
schema), removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import logging
import os
import pstats
import random
import shlex
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ingest import Ingestor, Message
from collector.rulebook import Rulebook, matches
from collector.rulefiles import check_rules
from collector.rulerunner import SHIPPED_RULES, RulebookRunner
from collector.runtime import RULES_STEP
from collector.rulewindows import MemoryCalendar, StoreCalendar
from collector.store import Store, schema
from collector.vault import Vault
from protocol import topics
from protocol.envelope import Envelope, record
from protocol.keys import new_private_key, public_b64

ZONE = ZoneInfo("Asia/Shanghai")
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DAY = ("07:30", "18:30")  # the simulated day the agents report over
ROOMS = ("第1考场", "第2考场")
LOBBY = "大厅"  # a camera's room with no exam: rule 410 does not apply there
#: (room, start, end, subject): 2 rooms x 2 sessions per venue.
SESSIONS = ((ROOMS[0], "09:00", "11:00", "低压电工作业"), (ROOMS[0], "14:00", "16:00", "高压电工作业"),
            (ROOMS[1], "09:30", "11:30", "焊接与热切割作业"), (ROOMS[1], "14:30", "16:30", "高处作业"))
MAINTENANCE_SHARE = 0.05  # venues with an approved recorder maintenance window (12:00-13:00, rule 510)
SEALED_SHARE = 0.9  # venues sealed by a passing readiness check the day before (17:00) until the last exam ends
TARGET = 3.0

Timeline = list[tuple[float, str, str, dict[str, Any]]]  # (at, "rec" | "death" | "birth", kind, data)


# -- the simulated venues and agents ---------------------------------------------------------------

@dataclass
class BenchAgent:
    """One agent: who it is, what it watches, and its stream position."""

    agent_id: str
    venue_id: str
    v: int  # venue number
    h: int  # host number within the venue
    key: Ed25519PrivateKey
    boot: int = 0
    next_seq: int = 1
    cameras: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = f"{self.v >> 8:02x}:{self.v & 255:02x}:{self.h:02x}"
        rooms = (ROOMS[0], ROOMS[1], LOBBY)
        self.cameras = [{"mac": f"02:{p}:00:{c:02x}", "ip": f"198.51.100.{10 + 3 * self.h + c}", "room": rooms[c],
                         "name": f"{rooms[c]}-{self.h}-{c}", "vendor": "Hikvision", "channel": c + 1,
                         "url": f"rtsp://198.51.100.{10 + 3 * self.h + c}/Streaming/Channels/101"} for c in range(3)]
        self.recorder = {"recorder": f"02:{p}:01:00", "ip": f"198.51.100.{200 + self.h}", "name": f"NVR-{self.h}",
                         "room": "监控室", "vendor": "Hikvision", "model": "DS-7608NI", "serial": f"SN{self.v:04d}{self.h:02d}",
                         "firmware": "V4.30"}
        self.devices = [{"mac": f"02:{p}:02:{d:02x}", "ip": f"192.0.2.{20 + d}", "vendor": "Dell", "randomized": False,
                         "hostname": f"exam-{self.h}-{d}", "entry": f"考试终端-{d}"} for d in range(12)]

    @property
    def boot_id(self) -> str:
        return f"{self.agent_id}-boot{self.boot}"


def make_agents(venues: int, hosts: int) -> list[BenchAgent]:
    return [BenchAgent(f"v{v:04d}-h{h:02d}", venue_id(v), v, h, new_private_key())
            for v in range(venues) for h in range(hosts)]


def venue_id(v: int) -> str:
    return f"V{440100000 + v}"


def at(day: dt.date, hhmm: str) -> float:
    h, m = (int(x) for x in hhmm.split(":"))
    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=ZONE).timestamp()


# -- event data --------------------------------------------------------------------------------------

def _cam(a: BenchAgent, r: random.Random, exam_only: bool = False) -> dict[str, Any]:
    return r.choice(a.cameras[:2] if exam_only else a.cameras)


def _probe(level: str, outcome: str, t: float) -> dict[str, Any]:
    return {"level": level, "target_level": "L3", "outcome": outcome, "error": "" if outcome == "ok" else "connection refused",
            "statuses": [200, 200] if outcome == "ok" else [], "rtp_bytes": 48213 if outcome == "ok" else 0,
            "rtp_packets": 41 if outcome == "ok" else 0, "probed_at": round(t, 3), "duration_ms": 812}


def lan_snapshot(a: BenchAgent, r: random.Random, t: float) -> dict[str, Any]:
    return {"devices": {d["mac"]: {**d, "first_seen": round(t - 3600, 3)} for d in a.devices}, "episodes": {}}


def host_snapshot(a: BenchAgent, r: random.Random, t: float) -> dict[str, Any]:
    return {"interfaces": {"eth0": {"mac": f"02:00:00:00:{a.v & 255:02x}:{a.h:02x}", "up": True, "wireless": False,
                                    "addrs": [f"192.0.2.{100 + a.h}/24"]}, "lo": {"mac": "", "up": True, "addrs": ["127.0.0.1/8"]}},
            "routes": [{"destination": "192.0.2.0/24", "gateway": "", "interface": "eth0"}],
            "listeners": [{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": "exam-server"}],
            "tools": []}


def cameras_snapshot(a: BenchAgent, r: random.Random, t: float) -> dict[str, Any]:
    return {"cameras": {c["mac"]: {"status": "up", "since": round(t - 7200, 3), "data": {**c, "level": "L3"}, "reboots": 0,
                                   "reboot": None} for c in a.cameras},
            "blind": None, "ptz": {}, "rooms": {room: {"covered": True} for room in ROOMS}}


def recorders_snapshot(a: BenchAgent, r: random.Random, t: float) -> dict[str, Any]:
    rec = a.recorder
    return {"recorders": {rec["recorder"]: {**rec, "status": "up", "disks": [{"disk": "1", "status": "ok", "capacity_mb": 3815447}],
                                            "channels": [{"channel": c["channel"], "status": "online", "camera": c["mac"]}
                                                         for c in a.cameras]}},
            "episodes": {}}


def _logfile(a: BenchAgent, r: random.Random, t: float, source: str = "syslog") -> dict[str, Any]:
    return {"source": source, "type": "system", "path": f"/var/log/{source}", "size_before": r.randint(10_000, 900_000),
            "inode": r.randint(100_000, 999_999), "dev": 2049, "file_key": f"2049:{r.randint(100_000, 999_999)}",
            "shipped_offset": r.randint(10_000, 900_000)}


#: Events no rule opens a case on: (kind, weight, data). Weights are relative.
SINGLES: list[tuple[str, float, Callable[[BenchAgent, random.Random, float], dict[str, Any]]]] = [
    ("lan.snapshot", 18, lan_snapshot),
    ("host.snapshot", 18, host_snapshot),
    ("cameras.snapshot", 12, cameras_snapshot),
    ("recorders.snapshot", 10, recorders_snapshot),
    ("logs.snapshot", 6, lambda a, r, t: {"sources": {"syslog": {"path": "/var/log/syslog", "shipped": r.randint(1, 10**6)},
                                                      "auth": {"path": "/var/log/auth.log", "shipped": r.randint(1, 10**5)}}}),
    ("isolation.snapshot", 6, lambda a, r, t: {"targets": {"203.0.113.10": "unreachable", "198.18.0.1": "unreachable"}}),
    ("camera.up", 6, lambda a, r, t: {**_cam(a, r), **_probe("L3", "ok", t), "previous": "up", "successes": 2}),
    ("log.rotated", 6, lambda a, r, t: {**_logfile(a, r, t), "rotated_to": "/var/log/syslog.1", "mode": "rename"}),
    ("log.moved", 3, lambda a, r, t: {**_logfile(a, r, t), "moved_to": "/var/log/syslog.1", "within_set": True}),
    ("host.remote_listener", 3, lambda a, r, t: {"protocol": "tcp", "address": "127.0.0.1", "port": 5900, "pid": 990,
                                                 "process": "x11vnc"}),  # loopback: rule 210's filter refuses it
    ("device.missing", 3, lambda a, r, t: {"mac": r.choice(a.devices)["mac"], "registered_ip": "192.0.2.21",
                                           "entry": "考试终端-1", "last_seen": round(t - 120, 3)}),
    ("device.returned", 3, lambda a, r, t: {"mac": r.choice(a.devices)["mac"], "registered_ip": "192.0.2.21",
                                            "entry": "考试终端-1", "last_seen": round(t, 3), "now": round(t, 3)}),
    ("watcher.error", 1, lambda a, r, t: {"watcher": "cameras", "error": "timed out"}),
    ("watcher.recovered", 1, lambda a, r, t: {"watcher": "cameras"}),
]


def _pair(opener: str, clearer: str, data: Callable[[BenchAgent, random.Random, float], dict[str, Any]],
          extra_close: dict[str, Any] | None = None) -> Callable[[BenchAgent, random.Random, float], list[tuple[str, dict[str, Any]]]]:
    def build(a: BenchAgent, r: random.Random, t: float) -> list[tuple[str, dict[str, Any]]]:
        d = data(a, r, t)
        return [(opener, d), (clearer, {**d, **(extra_close or {})})]
    return build


def _camera_fault(kind: str, level: str) -> Callable[[BenchAgent, random.Random, float], list[tuple[str, dict[str, Any]]]]:
    def build(a: BenchAgent, r: random.Random, t: float) -> list[tuple[str, dict[str, Any]]]:
        cam = _cam(a, r)
        fault = {**cam, **_probe(level, "fail", t), "previous": "up", "since": round(t, 3), "first_failure_at": round(t, 3),
                 "failures": 3, "recorder_sees": kind == "camera.path_problem"}
        return [(kind, fault), ("camera.up", {**cam, **_probe("L3", "ok", t), "previous": kind.split(".")[1],
                                              "successes": 2, "fault_since": round(t, 3)})]
    return build


#: Fault episodes: (name, weight, events). Each gives its opener and (except log.deleted) the event
#: that ends it, some seconds to minutes later; "agent offline" is a Last Will then a new birth,
#: which ingest turns into the collector's own agent.offline / agent.online.
EPISODES: list[tuple[str, float, Callable[[BenchAgent, random.Random, float], list[tuple[str, dict[str, Any]]]]]] = [
    ("camera down", 14, _camera_fault("camera.down", "L0")),
    ("camera stalled", 6, _camera_fault("camera.stream_stalled", "L3")),
    ("camera path problem", 4, _camera_fault("camera.path_problem", "L0")),
    ("camera turned away", 3, _pair("camera.ptz_moved", "camera.ptz_restored", lambda a, r, t: {
        **_cam(a, r, True), "home": {"elevation": 0, "azimuth": 1800, "zoom": 10},
        "before": {"elevation": 0, "azimuth": 1800, "zoom": 10}, "after": {"elevation": 0, "azimuth": 2700, "zoom": 10},
        "since": round(t, 3), "window_since": round(t - 900, 3), "tolerance": 5})),
    ("room uncovered", 2, _pair("camera.room_uncovered", "camera.room_covered", lambda a, r, t: {
        "room": r.choice(ROOMS), "since": round(t, 3), "window_since": round(t - 900, 3),
        "cameras": [{"mac": c["mac"], "name": c["name"], "state": "down"} for c in a.cameras[:2]]})),
    ("recorder down", 5, _pair("recorder.down", "recorder.up", lambda a, r, t: {
        **a.recorder, "since": round(t, 3), "error": "timed out"})),
    ("channel not recording", 5, _pair("recorder.not_recording", "recorder.recording", lambda a, r, t: {
        **a.recorder, "channel": r.randint(1, 3), "camera": a.cameras[0]["mac"], "newest_end": round(t - 600, 3),
        "lag_s": 600.0, "max_record_lag": 300, "searched_s": 3600, "clock": round(t, 3)})),
    ("unregistered device", 10, _pair("device.unregistered", "device.left", lambda a, r, t: {
        "mac": f"0a:{r.randint(0, 255):02x}:{r.randint(0, 255):02x}:{r.randint(0, 255):02x}:{a.h:02x}:{r.randint(0, 255):02x}",
        "ip": f"192.0.2.{r.randint(130, 250)}", "vendor": "", "randomized": True, "first_seen": round(t, 3),
        "last_seen": round(t, 3), "how": "arp", "hostname": "", "vendor_class": ""})),
    ("registered device re-addressed", 5, _pair("device.ip_changed", "device.ip_restored", lambda a, r, t: {
        **(d := r.choice(a.devices)), "registered_ip": d["ip"], "ip": f"192.0.2.{r.randint(130, 250)}",
        "first_seen": round(t, 3), "last_seen": round(t, 3), "how": "arp"})),
    ("remote-control tool", 4, _pair("host.remote_tool", "host.remote_tool_gone", lambda a, r, t: {
        "tool": "sunlogin", "tool_name": "向日葵", "category": "remote_control", "pid": r.randint(1000, 60000),
        "pids": [], "name": "SunloginClient", "exe": "/usr/local/sunlogin/bin/sunloginclient", "cmdline": ""})),
    ("wireless adapter", 3, _pair("host.wireless_present", "host.wireless_gone", lambda a, r, t: {
        "interface": "wlx00e04c680001", "mac": "00:e0:4c:68:00:01", "up": False,
        "evidence": "/sys/class/net/wlx00e04c680001/phy80211"})),
    ("isolation breached", 3, _pair("isolation.breached", "isolation.restored", lambda a, r, t: {
        "target": "203.0.113.10", "method": "tcp", "how": "connect", "rtt_ms": 3.2})),
    ("log retention short", 2, _pair("log.retention_short", "log.retention_ok", lambda a, r, t: {
        "source": "syslog", "keep_days": 28})),
    ("log deleted", 4, lambda a, r, t: [("log.deleted", {**_logfile(a, r, t, r.choice(("syslog", "auth", "app"))),
                                                         "unshipped_bytes": 0})]),
    ("agent offline", 8, lambda a, r, t: [("agent.offline", {}), ("agent.online", {})]),
    # Changes that rule 710 judges when the venue is sealed (a passing readiness check until the last exam ends).
    ("config applied", 2, lambda a, r, t: [("config.applied", {"version": r.randint(2, 20)})]),
    ("host address changed", 2, lambda a, r, t: [("host.address_changed", {
        "interface": "eth0", "mac": f"02:00:00:00:{a.v & 255:02x}:{a.h:02x}", "before": [f"192.0.2.{100 + a.h}/24"],
        "after": [f"192.0.2.{r.randint(130, 250)}/24"], "added": [], "removed": []})]),
    ("camera rebooted", 2, lambda a, r, t: [("camera.rebooted", {**_cam(a, r), "how": "uptime", "old_origin": 1,
                                                                  "new_origin": 2, "detected_at": round(t, 3)})]),
    ("recorder rebooted", 1, lambda a, r, t: [("recorder.rebooted", {**a.recorder, "previous_boot": "b1", "boot": "b2",
                                                                      "uptime_s": 40, "clock": round(t, 3)})]),
]


LONE = ("log deleted", "config applied", "host address changed", "camera rebooted", "recorder rebooted")


def plan_agent(a: BenchAgent, n: int, share: float, r: random.Random, t0: float, t1: float) -> Timeline:
    """``n`` indexed events of one agent over [t0, t1], in time order; ``share`` of them in fault episodes."""
    fault_events = round(n * share)
    out: Timeline = []
    outages: list[tuple[float, float]] = []
    names, weights = [e[0] for e in EPISODES], [e[1] for e in EPISODES]
    built = 0
    while built < fault_events:
        # the last fault event of an odd count is one of the single-event episodes
        pool = range(len(EPISODES)) if fault_events - built > 1 else [names.index(x) for x in LONE]
        i = r.choices(pool, [weights[k] for k in pool])[0]
        t = r.uniform(t0, t1 - 60)
        dur = r.uniform(10, 55) if r.random() < 0.35 else r.uniform(120, 2400)  # blips below held, and real faults
        t_end = min(t + dur, t1 - 1)
        events = EPISODES[i][2](a, r, t)
        if names[i] == "agent offline":
            if any(s - 60 <= t_end and t <= e + 60 for s, e in outages):
                continue  # one outage at a time
            outages.append((t, t_end))
            out += [(t, "death", "agent.offline", {}), (t_end, "birth", "agent.online", {})]
        else:
            out.append((t, "rec", *events[0]))
            if len(events) > 1:
                out.append((t_end, "rec", *events[1]))
        built += len(events)
    kinds, kw = [s[0] for s in SINGLES], [s[1] for s in SINGLES]
    for _ in range(n - built):
        i = r.choices(range(len(SINGLES)), kw)[0]
        t = r.uniform(t0, t1)
        out.append((t, "rec", kinds[i], SINGLES[i][2](a, r, t)))
    out.sort(key=lambda x: x[0])
    return out


# -- envelopes ---------------------------------------------------------------------------------------

def envelopes(a: BenchAgent, timeline: Timeline, per_env: int) -> list[tuple[float, Message]]:
    """Sign the agent's day as it would send it: ``per_env`` records per envelope; a Last Will
    when it dies; while it is away its records wait and follow its next birth."""
    out: list[tuple[float, Message]] = []
    pending: list[tuple[float, str, dict[str, Any]]] = []
    away = False

    def flush(send_at: float) -> None:
        nonlocal pending
        for i in range(0, len(pending), per_env):
            chunk = pending[i:i + per_env]
            recs = tuple(record(kind, t, data, seq=a.next_seq + k) for k, (t, kind, data) in enumerate(chunk))
            env = Envelope(a.agent_id, a.boot_id, a.next_seq, round(send_at, 3), "ev", recs).signed(a.key)
            a.next_seq += len(chunk)
            out.append((send_at, Message(topics.topic(a.agent_id, "ev"), env.encode(), send_at)))
        pending = []

    def state(kind: str, t: float, data: dict[str, Any]) -> None:
        env = Envelope(a.agent_id, a.boot_id, a.next_seq - 1, round(t, 3), "state", (record(kind, t, data),)).signed(a.key)
        out.append((t, Message(topics.topic(a.agent_id, "state"), env.encode(), t)))

    for t, what, kind, data in timeline:
        if what == "rec":
            pending.append((t, kind, data))
            if not away and len(pending) >= per_env:
                flush(t)
        elif what == "death":
            flush(pending[-1][0] if pending else t)
            state("death", t, {"online": False})
            away = True
        else:
            a.boot += 1
            state("birth", t, {"online": True, "version": "bench", "heartbeat_interval": 10.0, "config_version": 0})
            away = False
            flush(t)
    flush(timeline[-1][0] if timeline else 0.0)
    return out


@dataclass
class Workload:
    """One mix, built and signed: the messages in arrival order and what the day contains."""

    name: str
    messages: list[Message]
    n_messages: int
    kinds: Counter[str]
    react: Counter[str]  # "opens" / "clears" / "none": what the rulebook's rule index does with each event
    payload_bytes: int


def build(name: str, agents: list[BenchAgent], args: argparse.Namespace, share: float, day: dt.date) -> Workload:
    r = random.Random(f"{args.seed}-{name}")
    t0, t1 = at(day, DAY[0]), at(day, DAY[1])
    timed: list[tuple[float, Message]] = []
    kinds: Counter[str] = Counter()
    book = Rulebook(check_rules(SHIPPED_RULES)[0], MemoryCalendar())
    react: Counter[str] = Counter()
    for a in agents:
        a.boot, a.next_seq = 0, 1
        tl = plan_agent(a, args.events_per_agent, share, r, t0, t1)
        for _, _, kind, data in tl:
            kinds[kind] += 1
            if any(matches(m, data) for _, m in book.openers.get(kind, ())):
                react["opens"] += 1
            elif kind in book.clearers:
                react["clears"] += 1
            else:
                react["none"] += 1
        timed += envelopes(a, tl, args.records_per_envelope)
    timed.sort(key=lambda x: x[0])  # stable: each agent's own order stays
    msgs = [m for _, m in timed]
    return Workload(name, msgs, len(msgs), kinds, react, sum(len(m.payload) for m in msgs))


# -- the store ---------------------------------------------------------------------------------------

@contextmanager
def database(db: str, tmp: Path) -> Iterator[str]:
    """SQLite in ``tmp``; for PostgreSQL a fresh schema, dropped afterwards."""
    if not db.startswith("postgresql"):
        yield f"sqlite:///{tmp / 'index.sqlite3'}"
        return
    url = PG_DEFAULT if db == "postgresql" else db
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def prepare(store: Store, agents: list[BenchAgent], day: dt.date, venues: int) -> None:
    """Venues, enrolled agents (online since the night, boot 0), today's sessions, seals, a few maintenance windows."""
    for v in range(venues):
        store.add_venue(venue_id(v))
    for a in agents:
        store.enroll_agent(a.agent_id, a.venue_id, public_b64(a.key))
    ag = schema.agents
    with store.engine.begin() as conn:
        conn.execute(ag.update().where(ag.c.id == sa.bindparam("p_id")).values(online=True, boot=sa.bindparam("p_boot")),
                     [{"p_id": a.agent_id, "p_boot": a.boot_id} for a in agents])
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=time.time(), imported_by="bench", source="bench/rules.py", sha256="0" * 64,
            months=[day.strftime("%Y-%m")], sessions=venues * len(SESSIONS))).inserted_primary_key[0]
        conn.execute(schema.exam_sessions.insert(), [
            {"version_id": version, "session_id": f"{venue_id(v)}-{i}", "venue_id": venue_id(v), "room": room,
             "subject": subject, "start": at(day, start), "end": at(day, end)}
            for v in range(venues) for i, (room, start, end, subject) in enumerate(SESSIONS)])
        last_end = max(at(day, end) for _, _, end, _ in SESSIONS)
        sealed_at = at(day - dt.timedelta(days=1), "17:00")
        conn.execute(schema.seals.insert(), [
            {"venue_id": venue_id(v), "exam_day": day.isoformat(), "sealed_at": sealed_at, "until": last_end,
             "report_id": v + 1, "baseline": {}, "changes": []}
            for v in range(venues) if random.Random(f"seal-{v}").random() < SEALED_SHARE])
        maint = [v for v in range(venues) if random.Random(v).random() < MAINTENANCE_SHARE]
        if maint:
            conn.execute(schema.maintenance_windows.insert(), [
                {"venue_id": venue_id(v), "start": at(day, "12:00"), "end": at(day, "13:00"), "rules": [510],
                 "reason": "录像机硬盘更换", "declared_by": "考点", "declared_at": 0, "status": "approved",
                 "decided_by": "bench", "decided_at": 0} for v in maint])


# -- the phases --------------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    events: int
    ingest_s: float
    ingest_records: int
    dead_letters: int
    rules_s: float
    rules_events: int
    steps: int
    cpu: tuple[float, float]  # this process's CPU seconds: ingest, rulebook (wall >> CPU: the machine was shared)
    split: dict[str, float]
    cases: list[tuple[int, str, str, int]]  # rule, severity, state, count
    conditions: int
    profile: str = ""


def run_mix(w: Workload, agents: list[BenchAgent], args: argparse.Namespace, day: dt.date, tmp: Path) -> Result:
    """Ingest the mix into a fresh vault and store, then run a fresh rulebook over the indexed records."""
    with database(args.db, tmp) as url:
        store = Store(url)
        try:
            store.migrate()
            if store.engine.dialect.name != "sqlite":
                with store.engine.connect() as conn:
                    args.db_version = conn.execute(sa.text("SELECT version()")).scalar_one().split(" on ")[0]
            for a in agents:
                a.boot = 0
            prepare(store, agents, day, args.venues)
            vault = Vault(tmp / "vault", new_private_key(), witness=tmp / "vault-witness")
            try:
                ing = Ingestor(store, vault, new_private_key())
                ing.load()
                t, c = time.perf_counter(), time.process_time()
                for i in range(0, len(w.messages), args.batch):
                    ing.handle(w.messages[i:i + args.batch])
                    vault.tick()
                ingest_s, ingest_cpu = time.perf_counter() - t, time.process_time() - c
            finally:
                vault.close()
            with store.engine.connect() as conn:
                indexed = conn.execute(sa.select(sa.func.count()).select_from(schema.records)).scalar_one()
            if store.engine.dialect.name == "postgresql":
                # What autovacuum does within a minute of such a load in production: without statistics
                # the planner takes the fresh table for nearly empty and answers every step's
                # "id > cursor ORDER BY id LIMIT n" with a parallel seq scan of all of it (~250 ms at
                # 300k rows instead of ~2 ms by the primary key).
                with store.engine.begin() as conn:
                    conn.execute(sa.text("ANALYZE"))

            end_of_day = at(day, DAY[1]) + 3600
            runner = RulebookRunner(store, SHIPPED_RULES, StoreCalendar(store))
            split = {"read": 0.0, "save": 0.0}
            for part, name in (("read", "_next_events"), ("save", "_save")):
                setattr(runner, name, _timed(getattr(runner, name), split, part))
            profiler = cProfile.Profile() if args.profile else None
            total = steps = 0
            t, c = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            while True:
                n = runner.step(now=end_of_day, limit=args.step_limit)
                total, steps = total + n, steps + 1
                if n == 0:
                    break
            if profiler:
                profiler.disable()
            rules_s, rules_cpu = time.perf_counter() - t, time.process_time() - c
            c = schema.cases.c
            with store.engine.connect() as conn:
                cases = [tuple(row) for row in conn.execute(
                    sa.select(c.rule_id, c.severity, c.state, sa.func.count()).group_by(c.rule_id, c.severity, c.state)
                    .order_by(c.rule_id, c.severity, c.state))]
            prof = ""
            if profiler:
                s = io.StringIO()
                st = pstats.Stats(profiler, stream=s)
                s.write(shares(st, total, rules_s))
                st.sort_stats("tottime").print_stats(args.profile)
                st.sort_stats("cumulative").print_stats(args.profile)
                prof = s.getvalue()
            return Result(w.name, sum(w.kinds.values()), ingest_s, indexed, ing.counters["dead_letters"], rules_s, total,
                          steps, (ingest_cpu, rules_cpu), split, cases, len(runner.rulebook.conditions), prof)
        finally:
            store.close()


#: Where the rulebook's time goes: (label, (file suffix, function)...), by cumulative time.
PARTS = (
    ("read: RulebookRunner._next_events (SELECT, JSON decode of data, Event objects)", ("rulerunner.py", "_next_events")),
    ("  of which json decode of records.data", ("json/decoder.py", "raw_decode")),
    ("case writes: StoreSink.open", ("cases.py", "open")),
    ("case writes: StoreSink.update", ("cases.py", "update")),
    ("case writes: StoreSink.close", ("cases.py", "close")),
    ("case writes: StoreSink.escalate + affects", ("cases.py", "escalate"), ("cases.py", "affects")),
    ("rule memory: RulebookRunner._save (rule_state DELETE + INSERT)", ("rulerunner.py", "_save")),
    ("  of which Rulebook.take_changes (Condition.to_json = dataclasses.asdict)", ("rulebook.py", "take_changes")),
    ("transaction commit", ("sqlalchemy/engine/base.py", "_commit_impl")),
    ("across all: SQLAlchemy Connection.execute (compile cache, params, run)", ("sqlalchemy/engine/base.py", "execute")),
    ("across all: SQLAlchemy .values(...) building statements with literals", ("sqlalchemy/sql/dml.py", "values")),
)


def shares(st: pstats.Stats, events: int, seconds: float) -> str:
    """The parts above: seconds, µs/event and share of the (profiled) rulebook time."""
    stats = st.stats  # type: ignore[attr-defined]
    lines = [f"where the rulebook's time goes (under cProfile: {seconds:.1f} s for {events} events, "
             f"{1e6 * seconds / max(events, 1):.1f} µs/event):"]
    for label, *keys in PARTS:
        t = sum(ct for (f, _, fn), (_, _, _, ct, _) in stats.items()
                for suffix, name in keys if f.endswith(suffix) and fn == name)
        lines.append(f"  {label:78} {t:7.2f} s {1e6 * t / max(events, 1):7.1f} µs/event {100 * t / max(seconds, 1e-9):5.1f} %")
    return "\n".join(lines) + "\n\n"


def _timed(fn: Callable[..., Any], acc: dict[str, float], part: str) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            acc[part] += time.perf_counter() - t
    return wrapper


# -- output ------------------------------------------------------------------------------------------

def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    return f"nproc {len(os.sched_getaffinity(0))} ({model}), Python {sys.version.split()[0]}"


def describe(w: Workload) -> str:
    n = sum(w.kinds.values())
    pct = {k: 100 * v / n for k, v in w.react.items()}
    top = ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in w.kinds.most_common())
    return (f"  {w.name}: {n} events in {w.n_messages} messages ({w.payload_bytes / w.n_messages:.0f} B avg); "
            f"no rule reacts {pct.get('none', 0):.1f}%, opens/extends a condition {pct.get('opens', 0):.1f}%, "
            f"clearing kind {pct.get('clears', 0):.1f}%\n    {top}")


def report(args: argparse.Namespace, day: dt.date, works: list[Workload], results: list[Result]) -> bool:
    if args.db.startswith("postgresql"):
        db = f"{PG_DEFAULT if args.db == 'postgresql' else args.db}, a fresh schema per mix ({args.db_version})"
    else:
        db = f"SQLite {sqlite3.sqlite_version}, a file in the temp dir"
    print(f"command:  {shlex.join([sys.executable, *sys.argv])}\nmachine:  {machine()}\ndatabase: {db}")
    print(f"workload: {args.venues} venues x {args.hosts} hosts = {args.venues * args.hosts} agents, "
          f"{args.events_per_agent} events/agent over {day} {DAY[0]}-{DAY[1]} Asia/Shanghai; "
          f"{len(SESSIONS)} exam sessions/venue (2 rooms x 2); {SEALED_SHARE:.0%} of venues sealed since the day before, "
          f"{MAINTENANCE_SHARE:.0%} with approved maintenance; {args.records_per_envelope} records/envelope; "
          f"ingest batches of {args.batch} messages; rulebook step limit {args.step_limit}, now = end of day; "
          f"{len(check_rules(SHIPPED_RULES)[0])} rules from {SHIPPED_RULES}")
    print("mix (share of events):")
    for w in works:
        print(describe(w))
    print()
    hdr = (f"{'mix':10} {'events':>8} {'ingest rec/s':>13} {'µs/event':>9} {'rulebook ev/s':>14} {'µs/event':>9} "
           f"{'ratio':>6} {'target':>7}  result")
    print(hdr)
    ok = True
    for r in results:
        ing_rate, rb_rate = r.ingest_records / r.ingest_s, r.rules_events / max(r.rules_s, 1e-9)
        ratio = rb_rate / ing_rate
        sound = r.ingest_records == r.events == r.rules_events and r.dead_letters == 0
        passed = ratio >= TARGET and sound
        ok = ok and passed
        print(f"{r.name:10} {r.events:8d} {ing_rate:13,.0f} {1e6 * r.ingest_s / r.ingest_records:9.1f} "
              f"{rb_rate:14,.0f} {1e6 * r.rules_s / max(r.rules_events, 1):9.1f} {ratio:6.2f} {'>= 3x':>7}  "
              f"{'PASS' if passed else 'FAIL'}{' (profiled)' if args.profile else ''}")
    print()
    for r in results:
        e = max(r.rules_events, 1)
        rest = r.rules_s - r.split["read"] - r.split["save"]
        opened = sum(n for *_, n in r.cases)
        by_rule = Counter()
        for rule, _, _, n in r.cases:
            by_rule[rule] += n
        print(f"{r.name}: indexed {r.ingest_records} of {r.events} records (dead letters {r.dead_letters}) in "
              f"{r.ingest_s:.1f} s; rulebook {r.rules_events} events in {r.rules_s:.1f} s over {r.steps} steps")
        cpu_ing, cpu_rb = r.ingest_records / max(r.cpu[0], 1e-9), r.rules_events / max(r.cpu[1], 1e-9)
        print(f"  this process's CPU time / wall time: ingest {100 * r.cpu[0] / r.ingest_s:.0f} %, rulebook "
              f"{100 * r.cpu[1] / r.rules_s:.0f} %; per CPU second: ingest {cpu_ing:,.0f} rec, rulebook {cpu_rb:,.0f} ev, "
              f"ratio {cpu_rb / cpu_ing:.2f}")
        print(f"  rulebook µs/event: read from the index {1e6 * r.split['read'] / e:.1f}, evaluate + case writes + commit "
              f"{1e6 * rest / e:.1f}, save memory {1e6 * r.split['save'] / e:.1f}")
        print(f"  cases opened: {opened} ({', '.join(f'{k}: {v}' for k, v in sorted(by_rule.items())) or 'none'}); "
              f"open {sum(n for _, _, s, n in r.cases if s == 'open')}; conditions left in memory {r.conditions}")
        if r.name == "typical" and opened == 0:
            print("  WARNING: no case opened although the mix has faults")
            ok = False
    print(f"\ntarget: rulebook >= {TARGET:g}x ingest's rate on every mix: {'met' if ok else 'MISSED'}")
    for r in results:
        if r.profile:
            print(f"\n--- cProfile of the rulebook, mix {r.name} ---\n{r.profile}")
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--venues", type=int, default=500)
    p.add_argument("--hosts", type=int, default=10, help="agents per venue")
    p.add_argument("--events-per-agent", type=int, default=100, help="indexed events per agent over the day")
    p.add_argument("--mix", choices=("typical", "worst", "both"), default="both",
                   help="typical: ~10%% of events in fault episodes; worst: every event opens or clears a condition")
    p.add_argument("--fault-share", type=float, default=0.10, help="share of events in fault episodes (typical mix)")
    p.add_argument("--records-per-envelope", type=int, default=5)
    p.add_argument("--batch", type=int, default=1000, help="messages per Ingestor.handle (the service's batch_max)")
    p.add_argument("--step-limit", type=int, default=RULES_STEP, help="events per RulebookRunner.step")
    p.add_argument("--db", default="", help="empty: SQLite in the temp dir; 'postgresql' (= " + PG_DEFAULT +
                   ") or a postgresql+psycopg:// URL: a fresh schema per mix, dropped afterwards")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="run the rulebook under cProfile and print its N costliest functions (slows it down)")
    p.add_argument("--quick", action="store_true", help="smoke run: 20 venues x 10 hosts x 50 events")
    args = p.parse_args(argv)
    if args.quick:
        args.venues, args.hosts, args.events_per_agent = 20, 10, 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    day = dt.datetime.now(ZONE).date()
    agents = make_agents(args.venues, args.hosts)
    mixes = [("typical", args.fault_share), ("worst", 1.0)]
    mixes = [m for m in mixes if args.mix in ("both", m[0])]
    works, results = [], []
    for name, share in mixes:
        t = time.perf_counter()
        w = build(name, agents, args, share, day)
        print(f"[{name}] built and signed {len(w.messages)} messages in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="vg-bench-rules-") as tmp:
            results.append(run_mix(w, agents, args, day, Path(tmp)))
        print(f"[{name}] done", file=sys.stderr)
        w.messages = []  # free the payloads; the description keeps the counts
        works.append(w)
    return 0 if report(args, day, works, results) else 1


if __name__ == "__main__":
    sys.exit(main())
