#!/usr/bin/env python3
"""Readiness benchmark: N venues x M agents answer one readiness round through Mosquitto and the
real collector process; the time from the rounds being requested until every venue report is
complete, beside the broker's raw round trip of the same messages, measured in the same run.

Phases, on loopback, in a temp dir, bounded in time: (1) raw: a plain client publishes the same
number of signed commands (same size) into a broker without a collector; the same simulated agents
verify them and answer with the same signed reports; ``mosquitto_sub`` counts the reports.
(2) collector: the real ``venueguard-collector run`` (a child process, with timers around its
ingest and readiness steps) holds the enrolled agents; exam sessions for tomorrow appear while it
runs, its schedule opens every venue's round in one pass, and the store is polled until every
venue report is written, sealed and vaulted.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ContextManager, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from collector import readiness as rd  # noqa: E402
from collector.broker import Mosquitto, free_port, mosquitto_binary  # noqa: E402
from protocol import topics  # noqa: E402
from protocol.envelope import Envelope, record  # noqa: E402
from protocol.errors import ProtocolError  # noqa: E402
from protocol.keys import load_public_b64, new_private_key, public_b64  # noqa: E402
from protocol.readiness import ITEMS, REPORT_KIND, Command, ItemResult, Report, command_message, parse_command  # noqa: E402

from pgschema import pg_schema  # noqa: E402  (bench/ is on sys.path)

TZ = "Asia/Shanghai"  # the collector's default [schedule] timezone
BOOT = "bench-boot"
ROOMS = 4
#: The birth's heartbeat interval: the simulated agents send no heartbeats, and the collector must
#: not mark them offline (5,000 agent.offline events) in the middle of the round.
BIRTH_HEARTBEAT = 3600.0


# -- the simulated venues ------------------------------------------------------------------------

def venue_id(v: int) -> str:
    return f"RV{v:04d}"


def agent_id(v: int, a: int) -> str:
    return f"rv{v:04d}-a{a:02d}"


def venue_lan(v: int, n: int) -> list[dict[str, Any]]:
    """The venue's registered LAN: ~40 % cameras (two per room first), one recorder, the rest exam
    terminals. Every agent of the venue sees the same LAN (merge_baselines unions them)."""
    cams = max(1, (n * 2) // 5)
    out = []
    for i in range(n):
        mac = f"02:{v >> 8 & 0xff:02x}:{v & 0xff:02x}:00:00:{i + 1:02x}"
        ip = f"192.0.2.{i + 20}"
        room = f"第{i % ROOMS + 1}考场"
        if i < cams:
            role, name = "camera", f"{room}摄像头{i // ROOMS + 1}"
        elif i == cams:
            role, name, room = "recorder", "硬盘录像机", "监控室"
        else:
            role, name = "exam_terminal", f"{room}考试机{i - cams}"
        out.append({"mac": mac, "ip": ip, "role": role, "room": room, "name": name})
    return out


def build_items(v: int, a: int, lan: list[dict[str, Any]]) -> tuple[tuple[ItemResult, ...], dict[str, Any]]:
    """All 14 items, passing, with evidence shaped like agent/readiness_items.py's; and the baseline."""
    cams = [d for d in lan if d["role"] == "camera"]
    recs = [d for d in lan if d["role"] == "recorder"]
    terms = [d for d in lan if d["role"] == "exam_terminal"]
    rooms = sorted({d["room"] for d in cams})
    host_ip = f"192.0.2.{200 + a}"
    host_mac = f"02:{v >> 8 & 0xff:02x}:{v & 0xff:02x}:ff:00:{a:02x}"
    rec_facts = {r["mac"]: {"ip": r["ip"], "name": r["name"], "state": "up", "model": "DS-7608NI-K2",
                            "serial": f"DS-7608NI-K20820{v:04d}", "firmware": "V4.30.085 build 200916"} for r in recs}
    channels = [(str(k + 1), c) for k, c in enumerate(cams)]
    basis = [{"channel": ch, "camera": c["mac"], "room": c["room"], "seconds": 9000.0, "kbps": 4096,
              "bitrate_from": "recorder"} for ch, c in channels]
    disks = {"1": {"name": "hdd1", "status": "ok", "fault": False, "capacity_mb": 3815447, "free_mb": 1523411}}
    evidence: dict[str, dict[str, Any]] = {
        "cameras": {"exam_rooms": rooms, "no_ip": [], "cameras": {
            c["mac"]: {"name": c["name"], "ip": c["ip"], "room": c["room"], "status": "up", "level": "L3", "error": "",
                       "rtp_packets": 212} for c in cams}},
        "recorders": rec_facts,
        "recorder_disks": {r["mac"]: {"free_gb": 1487.7, "need_gb": 36.9, "basis": basis, "disks": disks} for r in recs},
        "recording": {f"{r['mac']}|{ch}": {"camera": {"mac": c["mac"], "room": c["room"], "name": c["name"], "ip": c["ip"]},
                                          "recording": True, "lag_s": None} for r in recs for ch, c in channels},
        "lan_devices": {"present": len(lan), "episodes": {}},
        "terminals": {"expected": len(terms), "missing": []},
        "host_address": {"registered": [{"mac": host_mac, "ip": host_ip, "role": "server", "room": "监控室",
                                         "name": f"监测主机{a}"}], "mismatch": {}},
        "remote_control": {"tools": [], "listeners": []},
        "wireless": {"wireless": []},
        "isolation": {"targets": {t: {"target": t, "reachable": False, "how": "icmp+tcp"} for t in
                                  ("114.114.114.114", "223.5.5.5", "www.baidu.com")},
                      "routes_outside": [], "routes_checked": True},
        "logs": {"found": [], "reported": [], "retention_short": {}, "sources": {
            s: {"path": p, "type": "file", "files": 14, "oldest": "2023-03-01", "bytes": 48211933} for s, p in
            (("syslog", "/var/log/syslog"), ("auth", "/var/log/auth.log"), ("exam-app", "/opt/exam/logs/app.log"))}},
        "clocks": {"max_offset": 2.0, "host": None, "devices": {c["mac"]: 0.4 for c in cams + recs}},
        "outbox": {"depth": 0, "oldest_age_s": None, "max_age_s": 600.0},
        "host_disk": {"path": "/var/lib/venueguard", "free_bytes": 183_000_000_000, "total_bytes": 250_000_000_000,
                      "need_bytes": 12_500_000_000},
    }
    seen = {
        "cameras": f"{len(rooms)} 个考场的 {len(cams)} 台摄像头均能取到视频流（L3）",
        "recorders": f"{len(recs)} 台录像机均在线，账号可登录",
        "recorder_disks": "硬盘均正常，剩余空间足够考试日约 4.0 小时考试的录像",
        "recording": f"{len(channels)} 个考场通道均在持续录像",
        "lan_devices": f"局域网内 {len(lan)} 台设备均已登记，地址与登记一致",
        "terminals": f"考场的 {len(terms)} 台考试机均已开机在网",
        "host_address": f"本机地址与登记一致：{host_ip}（{host_mac}）",
        "remote_control": "未发现远程控制软件或远程访问端口",
        "wireless": "未发现无线网卡",
        "isolation": "3 个禁止访问的目标均不可达",
        "logs": "3 个日志来源完整，留存满足要求",
        "clocks": f"本机时钟与采集端相差 0.0 秒，{len(cams) + len(recs)} 台设备时钟与本机相差均不超过 2 秒",
        "outbox": "所有记录均已上报",
        "host_disk": "数据目录剩余 170.4 GB（要求至少 11.6 GB）",
    }
    items = tuple(ItemResult(i, "pass", seen[i], "", evidence[i]) for i in ITEMS)
    baseline = {
        "devices": {d["mac"]: d["ip"] for d in lan},
        "host": {"eth0": [f"{host_ip}/24"]},
        "cameras": {c["mac"]: {"ip": c["ip"], "name": c["name"], "room": c["room"], "status": "up", "level": "L3",
                               "origin": None} for c in cams},
        "recorders": {r["mac"]: {"ip": r["ip"], "model": "DS-7608NI-K2", "serial": f"DS-7608NI-K20820{v:04d}",
                                 "firmware": "V4.30.085 build 200916", "disks": {"1": {"name": "hdd1", "status": "ok"}},
                                 "channels": {ch: {"ip": c["ip"], "camera": c["mac"]} for ch, c in channels}}
                      for r in recs},
        "config_version": 0,
    }
    return items, baseline


@dataclass(frozen=True)
class Spec:
    """One simulated agent, as handed to a worker process (plain data: it is pickled)."""

    agent_id: str
    venue_id: str
    v: int
    a: int
    key: bytes  # raw Ed25519 private key


def make_specs(venues: int, per_venue: int) -> list[Spec]:
    out = []
    for v in range(venues):
        for a in range(per_venue):
            raw = new_private_key().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                  serialization.NoEncryption())
            out.append(Spec(agent_id(v, a), venue_id(v), v, a, raw))
    return out


def private_key(spec: Spec) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(spec.key)


# -- the simulated agents (worker processes) -----------------------------------------------------

class AgentsWorker:
    """Many simulated agents on ONE MQTT v5 connection.

    Each agent's own topics are subscribed one by one (``vg/v1/<agent>/cmd`` and ``/ack``), not a
    wildcard, so every command and ack reaches exactly one worker once. A real deployment has one
    connection per agent, with an ACL; the bench broker has none, and the collector checks the
    topic against the envelope's agent and the signature, not the MQTT client id.
    """

    def __init__(self, port: int, specs: list[Spec], collector_pub: str, devices: int, ack_timeout: float) -> None:
        self.ack_timeout = ack_timeout
        self.specs = {s.agent_id: s for s in specs}
        self.keys = {s.agent_id: private_key(s) for s in specs}
        self.collector_pub = load_public_b64(collector_pub)
        lans = {s.v: venue_lan(s.v, devices) for s in specs}
        # Report.to_json (dataclasses.asdict, a deep copy) costs ~1.3 ms for a 9.5 KiB report: done
        # once per agent here, so the simulated agents do not eat the CPU the collector is measured on.
        self.prebuilt = {}
        for s in specs:
            items, baseline = build_items(s.v, s.a, lans[s.v])
            self.prebuilt[s.agent_id] = Report(s.agent_id, 0, "", 0.0, 0.0, items, baseline, 0, True).to_json()
        self.lock = threading.Lock()
        self.next_seq = {a: 1 for a in self.specs}  # the outbox seq: the report is each agent's first record
        self.rounds: dict[str, int] = {}
        self.t_cmd: dict[str, float] = {}
        self.t_pub: dict[str, float] = {}
        self.t_ack: dict[str, float] = {}
        self.report_seq: dict[str, int] = {}
        self.birth_acked: set[str] = set()
        self.sizes: list[int] = []
        self.refused: list[str] = []
        self.repeats = 0
        self.payloads: dict[str, bytes] = {}
        self.last_sent: dict[str, float] = {}
        self.resends = 0
        self._stop = threading.Event()
        self._subacks = 0
        self._connected = threading.Event()
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rbench-{uuid.uuid4().hex[:10]}",
                                      protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.on_connect = lambda *_: self._connected.set()
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=120)
        c.loop_start()
        if not self._connected.wait(15):
            raise RuntimeError("a worker could not connect to the broker")
        threading.Thread(target=self._resender, name="resend", daemon=True).start()

    def _resender(self) -> None:
        """As the agent's uplink does: a report not acked within ``ack_timeout`` is sent again (the
        same record, so the collector counts a duplicate)."""
        while not self._stop.wait(0.25):
            now = time.time()
            with self.lock:
                due = [a for a, t in self.last_sent.items() if a not in self.t_ack and now - t > self.ack_timeout]
                for a in due:
                    self.last_sent[a] = now
                self.resends += len(due)
            for a in due:
                self.client.publish(topics.topic(a, "rpt"), self.payloads[a], qos=1)

    def subscribe(self, timeout: float) -> None:
        """Every agent's cmd and ack topic, 200 filters per SUBSCRIBE; wait for every SUBACK."""
        filters = [(topics.topic(a, s), 1) for a in self.specs for s in ("cmd", "ack")]
        chunks = [filters[i:i + 200] for i in range(0, len(filters), 200)]
        for chunk in chunks:
            self.client.subscribe(chunk)
        deadline = time.monotonic() + timeout
        while self._subacks < len(chunks):
            if time.monotonic() > deadline:
                raise RuntimeError(f"a worker got {self._subacks} of {len(chunks)} SUBACKs")
            time.sleep(0.02)

    def _on_subscribe(self, *_: Any) -> None:
        self._subacks += 1  # only the network thread writes it

    def births(self, timeout: float) -> int:
        """Retained births (as the agent's uplink sends on connect), resent until the collector acks."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                missing = [a for a in self.specs if a not in self.birth_acked]
            if not missing or time.monotonic() > deadline:
                return len(self.specs) - len(missing)
            for a in missing:
                now = time.time()
                birth = record("birth", now, {"online": True, "version": "bench", "heartbeat_interval": BIRTH_HEARTBEAT,
                                              "config_version": 0})
                env = Envelope(a, BOOT, 0, round(now, 3), "state", (birth,)).signed(self.keys[a])
                self.client.publish(topics.topic(a, "state"), env.encode(), qos=1, retain=True)
            end = min(deadline, time.monotonic() + 10)
            while time.monotonic() < end:
                with self.lock:
                    if len(self.birth_acked) == len(self.specs):
                        break
                time.sleep(0.05)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("/cmd"):
            self._command(msg.topic.split("/")[2], msg.payload, now)
        elif msg.topic.endswith("/ack"):
            doc = json.loads(msg.payload)  # the agents' ack verification is not what is measured
            who, acked = doc["agent_id"], doc["records"][0]["data"]["acked"]
            with self.lock:
                self.birth_acked.add(who)
                if who in self.report_seq and acked >= self.report_seq[who] and who not in self.t_ack:
                    self.t_ack[who] = now

    def _command(self, who: str, payload: bytes, received: float) -> None:
        """What ReadinessService does: verify (collector key, agent, venue, deadline), run the check
        (here: the prebuilt all-pass items, no waiting), commit ONE rpt record, publish it signed."""
        spec = self.specs[who]
        try:
            cmd = parse_command(payload, self.collector_pub, who)
            if cmd.venue_id != spec.venue_id:
                raise ProtocolError("wrong_venue", cmd.venue_id)
            if received > cmd.deadline:
                raise ProtocolError("expired", str(cmd.deadline))
        except ProtocolError as exc:
            self.refused.append(f"{who}: {exc}")
            return
        if self.rounds.get(who) == cmd.round_id:
            self.repeats += 1  # QoS 1 may deliver twice; the agent ignores a repeat
            return
        self.rounds[who] = cmd.round_id
        doc = dict(self.prebuilt[who])  # Report.to_json() of this agent's all-pass report
        host = {"offset": round(cmd.issued_at - received, 2), "source": "command", "at": round(received, 3)}
        doc["items"] = [{**i, "evidence": {**i["evidence"], "host": host}} if i["item"] == "clocks" else i
                        for i in doc["items"]]
        finished = time.time()
        doc.update(round_id=cmd.round_id, exam_day=cmd.exam_day, started_at=received, finished_at=finished)
        seq = self.next_seq[who]
        self.next_seq[who] = seq + 1
        env = Envelope(who, BOOT, seq, round(finished, 3), "rpt", (record(REPORT_KIND, finished, doc, seq=seq),))
        payload_out = env.signed(self.keys[who]).encode()
        with self.lock:
            self.report_seq[who] = seq
            self.t_cmd[who] = received
            self.payloads[who] = payload_out
        self.client.publish(topics.topic(who, "rpt"), payload_out, qos=1)
        with self.lock:
            self.t_pub[who] = self.last_sent[who] = time.time()
            self.sizes.append(len(payload_out))

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"t_cmd": dict(self.t_cmd), "t_pub": dict(self.t_pub), "t_ack": dict(self.t_ack),
                    "sizes": list(self.sizes), "refused": list(self.refused), "repeats": self.repeats,
                    "births_acked": len(self.birth_acked), "resends": self.resends}

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def worker_main(conn: Connection, port: int, specs: list[Spec], collector_pub: str, devices: int,
                ack_timeout: float) -> None:
    """Child-process entry: subscribe, then obey the parent (births / stats / stop)."""
    try:
        w = AgentsWorker(port, specs, collector_pub, devices, ack_timeout)
        w.subscribe(60)
        conn.send(("ready", len(specs)))
        while True:
            if not conn.poll(1.0):
                if os.getppid() == 1:  # the parent died: do not linger
                    return
                continue
            what, arg = conn.recv()
            if what == "births":
                conn.send(("births", w.births(arg)))
            elif what == "stats":
                conn.send(("stats", w.stats()))
            elif what == "stop":
                w.close()
                return
    except Exception as exc:  # noqa: BLE001 - the parent must hear why
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Workers:
    """The worker processes (spawned: forking would copy the parent's threads' locks)."""

    def __init__(self, n: int, port: int, specs: list[Spec], collector_pub: str, devices: int,
                 ack_timeout: float = math.inf) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        for k in range(n):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(theirs, port, specs[k::n], collector_pub, devices, ack_timeout),
                            daemon=True)
            p.start()
            self.procs.append(p)
            self.conns.append(mine)

    def ask(self, what: str, arg: Any, timeout: float, expect: str) -> list[Any]:
        for c in self.conns:
            if what:
                c.send((what, arg))
        return self.collect(expect, timeout)

    def collect(self, expect: str, timeout: float) -> list[Any]:
        deadline, out = time.monotonic() + timeout, []
        for c in self.conns:
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a worker did not answer {expect!r} within {timeout:.0f} s")
            kind, value = c.recv()
            if kind != expect:
                raise RuntimeError(f"worker: {value}" if kind == "error" else f"worker sent {kind!r}, not {expect!r}")
            out.append(value)
        return out

    def stop(self) -> None:
        for c in self.conns:
            try:
                c.send(("stop", None))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def merge(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"t_cmd": {}, "t_pub": {}, "t_ack": {}, "sizes": [], "refused": [], "repeats": 0,
                           "births_acked": 0, "resends": 0}
    for s in stats:
        for k in ("t_cmd", "t_pub", "t_ack"):
            out[k].update(s[k])
        out["sizes"] += s["sizes"]
        out["refused"] += s["refused"]
        out["repeats"] += s["repeats"]
        out["births_acked"] += s["births_acked"]
        out["resends"] += s["resends"]
    return out


# -- phase 1: the broker's raw round trip --------------------------------------------------------

def raw_phase(tmp: Path, specs: list[Spec], args: argparse.Namespace, day: str) -> dict[str, Any]:
    """The same commands and reports through a broker with no collector: a plain paho client plays
    the collector (commands signed ahead), the same workers answer, ``mosquitto_sub`` counts."""
    key = new_private_key()
    broker = Mosquitto(tmp / "raw-broker", persistence=False).start()
    port, ready, sub, workers = str(broker.port), "bench/ready", None, None
    pub: mqtt.Client | None = None
    try:
        workers = Workers(args.workers, broker.port, specs, public_b64(key), args.devices)
        workers.collect("ready", 120)
        now = time.time()
        by_venue: dict[str, list[str]] = defaultdict(list)
        for s in specs:
            by_venue[s.venue_id].append(s.agent_id)
        commands = [command_message(key, a, Command(n + 1, v, day, now + args.deadline_minutes * 60, now))
                    for n, (v, agents) in enumerate(sorted(by_venue.items())) for a in agents]
        subprocess.run(["mosquitto_pub", "-p", port, "-t", ready, "-m", "go", "-r", "-q", "1"], check=True)
        sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", "1", "-t", f"{topics.PREFIX}/+/rpt", "-t", ready,
                                "-C", str(len(specs) + 1)], stdout=subprocess.PIPE)
        sub.stdout.readline()  # type: ignore[union-attr]  # the retained marker: subscribed
        got = {"lines": 0, "end": 0.0}

        def drain() -> None:
            while chunk := sub.stdout.read1(1 << 20):  # type: ignore[union-attr]
                got["lines"] += chunk.count(b"\n")
            got["end"] = time.time()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        connected = threading.Event()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rbench-raw-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.on_connect = lambda *_: connected.set()
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        if not connected.wait(10):
            raise RuntimeError("the raw phase's publisher could not connect")
        t0 = time.time()
        for name, payload, retain in commands:
            pub.publish(name, payload, qos=1, retain=retain)
        published = time.time()
        reader.join(args.timeout)
        if sub.poll() is None:
            sub.kill()
        sub.wait()
        reader.join(5)
        stats = merge(workers.ask("stats", None, 30, "stats"))
        return {"t0": t0, "published": published - t0, "done": got["lines"], "end": (got["end"] or time.time()) - t0,
                "agents": stats, "command_bytes": sum(len(p) for _, p, _ in commands) / max(1, len(commands))}
    finally:
        if pub is not None:
            pub.disconnect()
            pub.loop_stop()
        if workers is not None:
            workers.stop()
        if sub is not None and sub.poll() is None:
            sub.kill()
        broker.stop()


# -- phase 2: the real collector -----------------------------------------------------------------

def database(url: str) -> ContextManager[str]:
    """'' (SQLite in the data dir) as is; for PostgreSQL a fresh schema, dropped afterwards."""
    return pg_schema(url)


def enroll_all(store: Any, specs: list[Spec]) -> None:
    """Venues and agents in two executemany inserts (what Store.add_venue / enroll_agent write)."""
    from collector.store import schema

    now = time.time()
    venues = sorted({s.venue_id for s in specs})
    with store.engine.begin() as conn:
        conn.execute(schema.venues.insert(), [{"id": v, "name": f"模拟考点{v}", "created_at": now} for v in venues])
        conn.execute(schema.agents.insert(), [
            {"id": s.agent_id, "venue_id": s.venue_id, "public_key": public_b64(private_key(s)), "enrolled_at": now,
             "revoked": False, "online": False, "acked_seq": 0} for s in specs])


def add_sessions(store: Any, venues: list[str], day: str) -> float:
    """Two exam sessions per venue on ``day`` (09:00–11:00 and 14:00–16:00 local), as one schedule
    version; returns the last end (the seals' ``until``)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from collector.store import schema

    zone = ZoneInfo(TZ)
    at = lambda hhmm: dt.datetime.fromisoformat(f"{day} {hhmm}").replace(tzinfo=zone).timestamp()  # noqa: E731
    slots = [("S1", at("09:00"), at("11:00")), ("S2", at("14:00"), at("16:00"))]
    with store.engine.begin() as conn:
        version = conn.execute(schema.schedule_versions.insert().values(
            imported_at=time.time(), imported_by="bench", source="bench/readiness.py", sha256="0" * 64,
            months=[day[:7]], sessions=len(venues) * len(slots))).inserted_primary_key[0]
        conn.execute(schema.exam_sessions.insert(), [
            {"version_id": version, "session_id": f"{v}-{sid}", "venue_id": v, "room": f"第{k % ROOMS + 1}考场",
             "subject": "低压电工作业", "start": start, "end": end}
            for v in venues for k, (sid, start, end) in enumerate(slots)])
    return slots[-1][2]


def collector_toml(data: Path, db_url: str, port: int, scheduled: bool, deadline_minutes: float) -> str:
    return "\n".join([
        "[collector]", f'data_dir = "{data}"', f'database_url = "{db_url}"', 'log_level = "info"', "",
        "[broker]", f"port = {port}", "",
        "[web]", f"port = {free_port()}", "",
        "[schedule]", f'timezone = "{TZ}"', "",
        "[readiness]", 'time = "00:00"', f"scheduled = {'true' if scheduled else 'false'}",
        f"deadline_minutes = {deadline_minutes}", ""]) + "\n"


def collector_phase(tmp: Path, db_url: str, specs: list[Spec], args: argparse.Namespace, day: str) -> dict[str, Any]:
    """Enroll, start the collector process and the agents, open the rounds, poll until complete."""
    from collector import keys as ckeys
    from collector import readiness_store as rs
    from collector.store import Store, schema

    data = tmp / "collector"
    data.mkdir(parents=True)
    url = db_url or f"sqlite:///{data / 'index.sqlite3'}"
    venues = sorted({s.venue_id for s in specs})
    broker = Mosquitto(tmp / "broker", persistence=False).start()
    store = Store(url)
    proc: subprocess.Popen[bytes] | None = None
    workers: Workers | None = None
    log_path, stats_path = tmp / "collector.log", tmp / "collector-stats.json"
    out: dict[str, Any] = {"log": log_path}
    try:
        store.migrate()
        t = time.monotonic()
        enroll_all(store, specs)
        out["enroll_s"] = time.monotonic() - t
        key = ckeys.load_or_create(data / "collector.key")  # as `enroll` does; the collector loads it
        scheduled = args.trigger == "schedule"
        if not scheduled:
            out["until"] = add_sessions(store, venues, day)
        toml = tmp / "collector.toml"
        toml.write_text(collector_toml(data, url, broker.port, scheduled, args.deadline_minutes))
        child = [sys.executable, str(Path(__file__).resolve()), "--collector-child", str(toml), str(stats_path)]
        if args.profile:
            child.append("--profile")
        env = dict(os.environ, PYTHONPATH=str(ROOT), VENUEGUARD_LANG="en")
        with log_path.open("ab") as fh:
            proc = subprocess.Popen(child, stdout=fh, stderr=fh, env=env, cwd=ROOT)
        workers = Workers(args.workers, broker.port, specs, public_b64(key), args.devices, args.ack_timeout)
        workers.collect("ready", 120)
        births = sum(workers.ask("births", args.timeout, args.timeout + 30, "births"))
        if proc.poll() is not None:
            raise RuntimeError(f"the collector exited ({proc.returncode}); see its log")
        if births != len(specs):
            raise RuntimeError(f"only {births} of {len(specs)} births were acked")
        out["births"] = births
        time.sleep(1.0)  # the rulebook and notifier take the 5,000 agent.online events off the top first

        r, v = schema.readiness_rounds.c, schema.venue_reports.c
        if scheduled:
            out["until"] = add_sessions(store, venues, day)  # the scheduler sees it within 10 s
            deadline = time.monotonic() + 60
            while True:
                with store.engine.connect() as conn:
                    n, first = conn.execute(sa.select(sa.func.count(), sa.func.min(r.requested_at))).one()
                if n >= len(venues) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if n < len(venues):
                raise RuntimeError(f"the schedule opened {n} of {len(venues)} rounds within 60 s")
            t0 = float(first)
        else:
            t0 = time.time()
            for venue in venues:
                rs.request_round(store, venue, day, "bench", time.time())
            out["requested_s"] = time.time() - t0
        seen: dict[str, float] = {}
        vaulted_at = None
        deadline = time.monotonic() + args.timeout
        last_id = 0
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                rows = conn.execute(sa.select(v.id, v.venue_id).where(v.id > last_id).order_by(v.id)).all()
                now = time.time()
                for rid, venue in rows:
                    seen.setdefault(venue, now)
                    last_id = max(last_id, rid)
                if len(seen) >= len(venues):
                    left = conn.execute(sa.select(sa.func.count()).where(v.vault_index.is_(None))).scalar_one()
                    if left == 0:
                        vaulted_at = now
                        break
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited ({proc.returncode}) during the round; see its log")
            time.sleep(args.poll)
        out.update(t0=t0, seen=seen, vaulted_at=vaulted_at)
        time.sleep(1.0)  # the last acks reach the agents
        out["agents"] = merge(workers.ask("stats", None, 30, "stats"))
        out["db"] = db_facts(store, len(venues))
    except Exception as exc:  # noqa: BLE001 - keep what was measured and the collector's timers
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"ERROR: {out['error']}", file=sys.stderr)
    finally:
        if workers is not None:
            workers.stop()
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            out["collector_rc"] = proc.returncode
        if stats_path.exists():
            out["collector"] = json.loads(stats_path.read_text())
            prof = stats_path.with_suffix(".prof")
            if prof.exists():
                out["profile_text"] = profile_text(prof)
        out["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:] if log_path.exists() else []
        store.close()
        broker.stop()
    return out


def db_facts(store: Any, n_venues: int) -> dict[str, Any]:
    """What the store holds after the round: the checks."""
    from collector.store import schema

    r, v, z, a, d = (schema.readiness_rounds.c, schema.venue_reports.c, schema.seals.c, schema.agent_reports.c,
                     schema.dead_letters.c)
    with store.engine.connect() as conn:
        rounds = conn.execute(sa.select(r.id, r.venue_id, r.state, r.requested_at, r.sent_at, r.agents)).all()
        reports = conn.execute(sa.select(v.id, v.round_id, v.venue_id, v.result, v.completed_at, v.vault_index,
                                         v.agents)).all()
        seals = conn.execute(sa.select(z.venue_id, z.report_id, z.until, z.baseline)).all()
        answers = conn.execute(sa.select(a.result, a.late, sa.func.count()).group_by(a.result, a.late)).all()
        dead = conn.execute(sa.select(sa.func.count()).select_from(schema.dead_letters)).scalar_one()
        dead_reasons = conn.execute(sa.select(d.reason, sa.func.count()).group_by(d.reason)).all()
    sealed = {s.report_id for s in seals}
    return {
        "rounds": len(rounds), "complete": sum(1 for x in rounds if x.state == "complete"),
        "sent_min": min((x.sent_at for x in rounds if x.sent_at), default=None),
        "sent_max": max((x.sent_at for x in rounds if x.sent_at), default=None),
        "addressed": sum(len(x.agents or []) for x in rounds),
        "reports": len(reports), "results": dict(_count(x.result for x in reports)),
        "agents_pass": sum(1 for x in reports for g in x.agents if g["result"] == "pass"),
        "vaulted": sum(1 for x in reports if x.vault_index is not None),
        "sealed": sum(1 for x in reports if x.id in sealed), "seals": len(seals),
        "seal_devices": sorted({len(s.baseline.get("devices", {})) for s in seals}),
        "answers": [(res, bool(late), n) for res, late, n in answers],
        "completed_at": {x.venue_id: x.completed_at for x in reports},
        "dead_letters": dead, "dead_reasons": dict(dead_reasons), "venues": n_venues,
    }


def _count(values: Iterator[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in values:
        out[x] += 1
    return out


def profile_text(path: Path, top: int = 30) -> str:
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# -- inside the collector process: the real `run`, with timers --------------------------------------

def collector_child(toml: str, stats_path: str, profile: bool) -> int:
    """``venueguard-collector --config TOML run`` with perf_counter timers around the ingest thread's
    steps (Ingestor.handle and tick, the rulebook tick, each ReadinessRunner step, each
    complete_round); optionally cProfile over the ingest thread's handle and readiness ticks.
    Writes the timers as JSON when the collector stops (SIGTERM)."""
    import cProfile

    from collector import cli
    from collector import readiness_store as rs
    from collector.ingest import Ingestor
    from collector.readinessrunner import ReadinessRunner
    from collector.runtime import Collector
    from collector.service import IngestService

    timers: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0, 0])  # seconds, calls, max, items
    marks: dict[str, Any] = {"completed": [], "sent": [], "handle": [], "ticks": []}
    prof = cProfile.Profile() if profile else None

    def timed(name: str, fn: Any, count: Any = None, profiled: bool = False) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            start_wall, t = time.time(), time.perf_counter()
            if profiled and prof is not None:
                prof.enable()
            try:
                result = fn(*a, **kw)
            finally:
                if profiled and prof is not None:
                    prof.disable()
                d = time.perf_counter() - t
                rec = timers[name]
                rec[0] += d
                rec[1] += 1
                rec[2] = max(rec[2], d)
            n = count(a, result) if count else 0
            rec[3] += n
            if name == "ingest.handle":
                marks["counters"] = dict(a[0].counters)
                marks["handle"].append((round(start_wall, 3), round(d, 4), n, sum(1 for m in a[1] if m.topic.endswith("/rpt"))))
            elif name == "readiness.tick" and d > 0.01:
                marks["ticks"].append((round(start_wall, 3), round(d, 4)))
            elif name == "readiness.send" and n:
                marks["sent"].append((round(time.time(), 3), n, round(d, 4)))
            elif name == "readiness.complete_round" and result is not None:
                marks["completed"].append((a[1]["venue_id"], round(time.time(), 4), round(d, 5)))
            return result
        return wrapper

    size = lambda a, r: len(r) if r is not None else 0  # noqa: E731
    Ingestor.handle = timed("ingest.handle", Ingestor.handle, lambda a, r: len(a[1]), profiled=True)  # type: ignore[method-assign]
    Ingestor.tick = timed("ingest.tick", Ingestor.tick)  # type: ignore[method-assign]
    Collector._rules_tick = timed("rules.tick", Collector._rules_tick)  # type: ignore[method-assign]
    IngestService._publish = timed("mqtt.publish", IngestService._publish, lambda a, r: len(a[1]))  # type: ignore[method-assign]
    ReadinessRunner.tick = timed("readiness.tick", ReadinessRunner.tick, profiled=True)  # type: ignore[method-assign]
    ReadinessRunner.schedule = timed("readiness.schedule", ReadinessRunner.schedule, size)  # type: ignore[method-assign]
    ReadinessRunner.send = timed("readiness.send", ReadinessRunner.send, size)  # type: ignore[method-assign]
    ReadinessRunner.complete = timed("readiness.complete", ReadinessRunner.complete, size)  # type: ignore[method-assign]
    ReadinessRunner.vault_reports = timed("readiness.vault_reports", ReadinessRunner.vault_reports,
                                          lambda a, r: r or 0)  # type: ignore[method-assign]
    rs.take_reports = timed("readiness.take_reports", rs.take_reports, lambda a, r: r or 0)
    rs.due_rounds = timed("readiness.due_rounds", rs.due_rounds, size)
    rs.complete_round = timed("readiness.complete_round", rs.complete_round, lambda a, r: int(r is not None))
    rs.mark_sent = timed("readiness.mark_sent", rs.mark_sent)
    try:
        return cli.main(["--config", toml, "run"])
    finally:
        Path(stats_path).write_text(json.dumps({"timers": timers, "marks": marks}))
        if prof is not None:
            prof.dump_stats(str(Path(stats_path).with_suffix(".prof")))


# -- report --------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN when empty)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))] if s else math.nan


def spread(values: list[float]) -> str:
    return f"p50 {pct(values, 50):6.2f}   p95 {pct(values, 95):6.2f}   max {max(values, default=math.nan):6.2f}"


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    mq = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.partition("\n")[0]
    return f"nproc {len(os.sched_getaffinity(0))} ({model}), Python {sys.version.split()[0]}, {mq}"


def report(args: argparse.Namespace, n_agents: int, raw: dict[str, Any] | None, col: dict[str, Any]) -> bool:
    """Print the figures; return True when the round completed in full and every check passed."""
    n_venues = args.venues
    ag, db = col.get("agents") or {}, col.get("db") or {}
    t0 = col.get("t0")
    marks = (col.get("collector") or {}).get("marks", {})
    sizes = ag.get("sizes") or (raw or {}).get("agents", {}).get("sizes") or [0]
    print(f"command:  {shlex.join([sys.executable, *sys.argv])}\nmachine:  {machine()}\n"
          f"database: {args.db or 'sqlite (in the temp data dir)'}\n"
          f"workload: {n_venues} venues x {args.agents} agents = {n_agents} agents; one report each "
          f"(14 items passing, {args.devices} devices in the baseline): {sum(sizes) / len(sizes) / 1024:.1f} KiB signed "
          f"envelope; command {((raw or {}).get('command_bytes') or 0):.0f} B\n"
          f"agents:   {args.workers} worker processes, one MQTT v5 connection each, subscribed to each of its agents' "
          f"own cmd and ack topics; an agent answers as soon as its command verifies (no real check time)\n"
          f"trigger:  {'the collector schedule ([readiness] time 00:00): sessions for tomorrow written while it runs, all rounds opened in one pass' if args.trigger == 'schedule' else 'rs.request_round per venue (what `readiness run` writes), from this process'}\n")
    def row(label: str, value: str) -> None:
        print(f"  {label:<60} {value}")

    if raw is not None:
        print(f"{'baseline: broker raw round trip, no collector':62} seconds")
        row(f"{n_agents} commands published (pre-signed, one paho client)", f"{raw['published']:6.2f}")
        row(f"reports received by mosquitto_sub ({raw['done']} of {n_agents})", f"{raw['end']:6.2f}")
        print()
    if t0 is None:
        print("collector phase did not reach the round")
    else:
        rel = lambda x: (x - t0) if x else math.nan  # noqa: E731
        seen = col.get("seen") or {}
        t_cmd, t_pub, t_ack = ag.get("t_cmd", {}), ag.get("t_pub", {}), ag.get("t_ack", {})
        print(f"{'collector: seconds after the rounds were requested (t0)':62} seconds")
        row(f"{db.get('rounds', 0)} rounds marked sent, first / last", f"{rel(db.get('sent_min')):6.2f} / {rel(db.get('sent_max')):.2f}")
        row(f"commands received by agents ({len(t_cmd)}), first / last",
            f"{rel(min(t_cmd.values(), default=0)):6.2f} / {rel(max(t_cmd.values(), default=0)):.2f}")
        row(f"reports published ({len(t_pub)}), last", f"{rel(max(t_pub.values(), default=0)):6.2f}")
        row(f"reports acked by the collector ({len(t_ack)}), last", f"{rel(max(t_ack.values(), default=0)):6.2f}")
        done = max(seen.values()) if len(seen) >= n_venues else None
        row(f"ALL VENUE REPORTS COMPLETE ({len(seen)} of {n_venues})", f"{rel(done):6.2f}")
        row("all venue reports vaulted", f"{rel(col.get('vaulted_at')):6.2f}")
        if raw is not None and done:
            row("ratio complete / raw round trip", f"{(done - t0) / max(raw['end'], 1e-9):6.1f}")
        written = [t - t0 for _, t, _ in marks.get("completed", [])]
        if written:
            row("per venue, t0 -> report committed (collector clock)", spread(written))
        if seen:
            row(f"per venue, t0 -> report row seen by a {args.poll:g} s poll", spread([x - t0 for x in seen.values()]))
        lat = [t_ack[a] - t_pub[a] for a in t_ack if a in t_pub]
        if lat:
            row("per agent, report published -> acked", spread(lat))
        row(f"reports resent by agents (no ack within {args.ack_timeout:g} s)", str(ag.get("resends", 0)))
        row("collector counters", str(marks.get("counters", {})))
        print()
    timers = (col.get("collector") or {}).get("timers", {})
    if timers:
        print("collector ingest thread, whole run (its own perf_counter timers; readiness steps nest in readiness.tick):")
        print(f"  {'step':28} {'seconds':>8} {'calls':>7} {'max s':>7} {'items':>7}")
        for name in ("ingest.handle", "ingest.tick", "rules.tick", "mqtt.publish", "readiness.tick", "readiness.schedule",
                     "readiness.send", "readiness.mark_sent", "readiness.take_reports", "readiness.complete",
                     "readiness.due_rounds", "readiness.complete_round", "readiness.vault_reports"):
            if name in timers:
                s, c, m, n = timers[name]
                print(f"  {name:28} {s:8.2f} {int(c):7d} {m:7.3f} {int(n):7d}")
        handle = marks.get("handle", []) if t0 else []
        rpt = [h for h in handle if h[3]]
        if rpt:
            print(f"  of ingest.handle: the {sum(h[3] for h in rpt)} reports came in {len(rpt)} batches taking "
                  f"{sum(h[1] for h in rpt):.2f} s (the collector just ingesting them: the second baseline)")
        print()
    if col.get("profile_text"):
        print("cProfile of the ingest thread (Ingestor.handle + ReadinessRunner.tick), top by cumulative time:")
        print(col["profile_text"])
    ok = True
    if db:
        results = db["results"]
        checks = [
            (f"{db['reports']}/{n_venues} venue reports, results {dict(results)}", results.get("pass", 0) == n_venues),
            (f"{db['sealed']}/{n_venues} sealed (seal baselines hold {db['seal_devices']} devices)", db["sealed"] == n_venues),
            (f"{db['vaulted']}/{n_venues} vaulted", db["vaulted"] == n_venues),
            (f"{db['agents_pass']}/{n_agents} agents PASS in the venue reports", db["agents_pass"] == n_agents),
            (f"agent reports (result, late, count): {db['answers']}", db["answers"] == [("pass", False, n_agents)]),
            (f"{db['complete']}/{db['rounds']} rounds complete, {db['addressed']} agents addressed",
             db["complete"] == db["rounds"] == n_venues and db["addressed"] == n_agents),
            (f"{db['dead_letters']} dead letters {db['dead_reasons'] or ''}", db["dead_letters"] == 0),
            (f"{len(ag.get('refused', []))} commands refused by agents, {ag.get('repeats', 0)} repeats",
             not ag.get("refused")),
        ]
        print("checks: " + "; ".join(f"{text}{'' if good else ' <- FAILED'}" for text, good in checks))
        ok = all(good for _, good in checks)
    else:
        ok = False
    seen = col.get("seen") or {}
    if t0 is not None and len(seen) >= n_venues:
        took = max(seen.values()) - t0
        print(f"target: every venue report complete < 60 s after the rounds are requested: "
              f"{'met' if took < 60 else 'MISSED'} ({took:.1f} s)")
    else:
        ok = False
        print(f"INCOMPLETE: {len(seen)} of {n_venues} venue reports within --timeout {args.timeout:g} s; "
              f"collector log {col.get('log')} (kept with --keep):")
        print("\n".join("  " + ln for ln in col.get("log_tail", [])))
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--venues", type=int, default=500)
    p.add_argument("--agents", type=int, default=10, help="agents per venue")
    p.add_argument("--devices", type=int, default=20, help="devices on each venue's LAN (in every report's baseline)")
    p.add_argument("--workers", type=int, default=4, help="processes playing the agents")
    p.add_argument("--quick", action="store_true", help="20 venues x 3 agents, a short check of the whole path")
    p.add_argument("--trigger", choices=("schedule", "request"), default="schedule",
                   help="schedule: the collector's own scheduler opens every round in one pass; request: this "
                        "process calls readiness_store.request_round per venue (as `readiness run` does)")
    p.add_argument("--db", default="", help="store URL; empty = SQLite in the temp dir; postgresql+psycopg://... "
                                            "gets a fresh schema, dropped afterwards")
    p.add_argument("--no-raw", action="store_true", help="skip the raw broker baseline")
    p.add_argument("--ack-timeout", type=float, default=15.0,
                   help="an agent resends its report when no ack came within this many seconds (the agent's "
                        "[uplink] ack_timeout default); 0 = never")
    p.add_argument("--deadline-minutes", type=float, default=30.0, help="[readiness] deadline_minutes")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between store polls")
    p.add_argument("--timeout", type=float, default=240.0, help="wait at most this long for the round (and births)")
    p.add_argument("--profile", action="store_true", help="cProfile the collector's ingest thread and print the top")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (collector log, vault) and print its path")
    p.add_argument("--collector-child", nargs=2, metavar=("TOML", "STATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.venues, args.agents = 20, 3
    if args.ack_timeout <= 0:
        args.ack_timeout = math.inf
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.collector_child:
        return collector_child(*args.collector_child, profile=args.profile)

    def alarm(*_: Any) -> None:
        raise TimeoutError("the benchmark overran its overall time limit")

    signal.signal(signal.SIGALRM, alarm)  # every wait is bounded; this is the backstop
    signal.alarm(int(3 * args.timeout + 600))
    t = time.monotonic()
    specs = make_specs(args.venues, args.agents)
    keys_s = time.monotonic() - t
    day = rd.next_day(rd.local_day(time.time(), TZ))
    tmp = Path(tempfile.mkdtemp(prefix="vg-bench-readiness-"))
    raw, col = None, {}
    try:
        if not args.no_raw:
            raw = raw_phase(tmp, specs, args, day)
        with database(args.db) as url:
            col = collector_phase(tmp, url, specs, args, day)
    except Exception as exc:  # noqa: BLE001 - print what there is, then fail
        print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        col.setdefault("error", str(exc))
    finally:
        signal.alarm(0)
    print(f"setup: {len(specs)} agent keys in {keys_s:.1f} s; exam day {day}; enrolled in {col.get('enroll_s', math.nan):.1f} s\n")
    ok = report(args, len(specs), raw, col) and "error" not in col
    if args.keep:
        print(f"kept: {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
