#!/usr/bin/env python3
"""Ingest benchmark: N simulated agents -> Mosquitto -> one collector, beside a raw baseline.

Phases, on loopback, bounded in count and time: (1) raw: pre-signed envelopes into a broker only
``mosquitto_sub`` reads; (2) throughput: the same envelopes as fast as possible through the real
collector (in this process), first publish -> ack covering the last record; (3) latency: a fixed
rate, each envelope timed publish -> the signed ack covering it (acks leave only after vault fsync
+ SQL commit: what an agent sees). The agents run in a child process, off the collector's GIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ContextManager

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from collector.broker import Mosquitto, mosquitto_binary
from collector.config import BrokerSection, CollectorConfig, CollectorSection
from collector.runtime import Collector
from collector.store import Store, schema
from protocol import topics
from protocol.envelope import Envelope, record
from protocol.keys import new_private_key, public_b64

from pgschema import pg_schema  # bench/ is on sys.path

VENUE = "BENCH"
WARMUP_AGENT = "bench-warmup"
#: (topic, payload, agent_id, last seq): one pre-signed envelope.
Item = tuple[str, bytes, str, int]


@dataclass
class BenchAgent:
    """A simulated agent: its identity and the next seq it will use."""

    agent_id: str
    key: Ed25519PrivateKey
    boot: str = "bench-boot"
    next_seq: int = 1


def build_stream(agents: list[BenchAgent], count: int, per_env: int) -> list[Item]:
    """Sign ``count`` envelopes round-robin over ``agents``, each agent's seqs consecutive.

    Signed ahead of time so the publisher costs only MQTT; as the signature covers the records,
    send times are kept by the publisher (per agent and seq) rather than written into the data.
    """
    items: list[Item] = []
    for i in range(count):
        a = agents[i % len(agents)]
        now, first = time.time(), a.next_seq
        recs = tuple(record("host.address_changed", now, {"iface": "eth0", "mac": "02:00:00:00:00:01",
                                                          "addrs": [f"192.0.2.{(first + k) % 250}/24"]}, seq=first + k)
                     for k in range(per_env))
        env = Envelope(a.agent_id, a.boot, first, now, "ev", recs).signed(a.key)
        a.next_seq += per_env
        items.append((topics.topic(a.agent_id, "ev"), env.encode(), a.agent_id, env.last_seq))
    return items


class AgentsSide:
    """One MQTT connection for all agents (the collector checks topic and signature, not client id)."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, deque[tuple[int, float]]] = defaultdict(deque)  # agent -> (last seq, sent at)
        self.latencies: list[float] = []
        self.last_ack, self.pubacks = 0.0, 0
        subscribed = threading.Event()
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}",
                                      protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)  # the broker's max_inflight_messages: keep the pipe full
        c.on_connect = lambda cl, *_: cl.subscribe(f"{topics.PREFIX}/+/ack", qos=1)
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = self._on_ack
        c.on_publish = lambda *_: setattr(self, "pubacks", self.pubacks + 1)  # only the network thread writes it
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the agents' client could not subscribe to the acks")

    def _on_ack(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """An ack covers every pending envelope of its agent up to its contiguous watermark."""
        now = time.monotonic()
        doc = json.loads(msg.payload)  # the signature is not checked: the agents' cost is not measured
        acked = doc["records"][0]["data"]["acked"]
        with self.lock:
            q = self.pending.get(doc["agent_id"])
            while q and q[0][0] <= acked:
                self.latencies.append(now - q.popleft()[1])
                self.last_ack = now

    def send(self, item: Item) -> None:
        """Note the send time before publishing, so that even the fastest ack finds it."""
        topic, payload, agent_id, last = item
        with self.lock:
            self.pending[agent_id].append((last, time.monotonic()))
        self.client.publish(topic, payload, qos=1)

    def warm(self, item: Item, timeout: float = 30.0) -> None:
        """Resend one envelope until it is acked: the collector is then subscribed and warm."""
        if not any(self.play([item], 0, True, 0.25)["done"] for _ in range(int(timeout / 0.25))):
            raise RuntimeError("the collector never acknowledged the warm-up envelope")
        time.sleep(0.3)  # acks of the resends drain
        with self.lock:
            self.latencies.clear()
            self.pending.clear()

    def play(self, items: list[Item], rate: float, acks: bool, timeout: float) -> dict[str, Any]:
        """Publish ``items`` (paced at ``rate``/s if given), then wait for all acks (or PUBACKs)."""
        self.pubacks = 0
        t0 = time.monotonic()
        for i, item in enumerate(items):
            ahead = t0 + i / rate - time.monotonic() if rate else 0.0
            if ahead > 0:
                time.sleep(ahead)
            self.send(item)
        published = time.monotonic()
        while time.monotonic() < published + timeout and (len(self.latencies) if acks else self.pubacks) < len(items):
            time.sleep(0.005)
        end = self.last_ack if acks else time.monotonic()
        return {"t0": t0, "published": published - t0, "end": end - t0, "done": len(self.latencies),
                "latencies": list(self.latencies)}


def agents_main(conn: Connection, port: int, items: list[Item], rate: float, acks: bool, warmup: Item | None,
                timeout: float) -> None:
    """Child-process entry: play the agents and send back a plain dict of timings."""
    side = AgentsSide(port)
    try:
        if warmup is not None:
            side.warm(warmup)
        conn.send(side.play(items, rate, acks, timeout))
    finally:
        side.client.disconnect()
        side.client.loop_stop()


def run_agents(port: int, items: list[Item], *, rate: float = 0.0, acks: bool = True, warmup: Item | None = None,
               timeout: float = 120.0) -> dict[str, Any]:
    """Run :func:`agents_main` in a spawned process (forking would copy the collector's threads' locks)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=agents_main, args=(send, port, items, rate, acks, warmup, timeout), daemon=True)
    proc.start()
    try:
        if not recv.poll(timeout + len(items) / (rate or 1000) + 60):
            raise RuntimeError("the agents process did not report")
        return recv.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def raw_phase(tmp: Path, items: list[Item], timeout: float) -> dict[str, Any]:
    """Baseline: the same publisher code and payloads into a broker that only mosquitto_sub reads."""
    broker = Mosquitto(tmp / "raw-broker", persistence=False).start()
    port, ready, sub = str(broker.port), "bench/ready", None
    try:
        # A retained marker shows when mosquitto_sub's subscriptions are live; -C counts it too.
        subprocess.run(["mosquitto_pub", "-p", port, "-t", ready, "-m", "go", "-r", "-q", "1"], check=True)
        sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", "1", "-t", f"{topics.PREFIX}/+/ev", "-t", ready,
                                "-C", str(len(items) + 1)], stdout=subprocess.PIPE)
        sub.stdout.readline()  # type: ignore[union-attr]
        got = {"lines": 0, "end": 0.0}

        def drain() -> None:
            """Count what mosquitto_sub prints (one line per payload); EOF is when it has them all."""
            while chunk := sub.stdout.read1(1 << 20):  # type: ignore[union-attr]
                got["lines"] += chunk.count(b"\n")
            got["end"] = time.monotonic()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        run = run_agents(broker.port, items, acks=False, timeout=timeout)
        reader.join(timeout)
        if sub.poll() is None:
            sub.kill()
        sub.wait()
        reader.join(5)
        run["done"], run["end"] = got["lines"], (got["end"] or time.monotonic()) - run["t0"]
        return run
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()  # only on failure: it would otherwise keep reconnecting
        broker.stop()


def collector_phases(tmp: Path, db_url: str, agents: list[BenchAgent], warm: Item, burst: list[Item],
                     paced: list[Item], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Throughput, then fixed-rate latency, through the real collector (``agents`` all get enrolled)."""
    def stored(store: Store) -> int:
        """Sequenced rows in the index, the warm-up agent's excepted: the cross-check of the acks."""
        r = schema.records.c
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(r.seq.is_not(None), r.agent_id != WARMUP_AGENT)).scalar_one()

    broker = Mosquitto(tmp / "broker", persistence=False).start()
    try:
        cfg = CollectorConfig(collector=CollectorSection(data_dir=tmp / "collector", database_url=db_url),
                              broker=BrokerSection(port=broker.port))
        collector = Collector(cfg, web=False)
        try:
            collector.store.add_venue(VENUE)
            for a in agents:
                collector.store.enroll_agent(a.agent_id, VENUE, public_b64(a.key))
            collector.start()
            before = stored(collector.store)
            thr = run_agents(broker.port, burst, warmup=warm, timeout=args.timeout)
            thr["stored"] = stored(collector.store) - before
            lat = run_agents(broker.port, paced, rate=args.rate, warmup=warm, timeout=args.timeout)
            return thr, lat, dict(collector.ingestor.counters)
        finally:
            collector.stop()
    finally:
        broker.stop()


def database(url: str) -> ContextManager[str]:
    """The store URL: '' (SQLite in the data dir) as is; for PostgreSQL a fresh schema, dropped afterwards."""
    return pg_schema(url)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN when empty)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))] if s else math.nan


def spread(v: list[float]) -> str:
    """p50, p99 and max of latencies given in seconds, in ms."""
    return f"p50 {pct(v, 50) * 1e3:.1f} ms   p99 {pct(v, 99) * 1e3:.1f} ms   max {max(v, default=math.nan) * 1e3:.1f} ms"


def machine() -> str:
    """CPUs usable here (what nproc prints), CPU model, Python and Mosquitto versions."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    mq = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.partition("\n")[0]
    return f"nproc {len(os.sched_getaffinity(0))} ({model}), Python {sys.version.split()[0]}, {mq}"


def report(args: argparse.Namespace, raw: dict[str, Any], thr: dict[str, Any], lat: dict[str, Any],
           counters: dict[str, int]) -> bool:
    """Print the results; return True when every phase completed in full."""
    rpe, n_burst, n_paced = args.records_per_envelope, args.envelopes, int(args.rate * args.seconds)
    raw_eps, col_eps = raw["done"] / max(raw["end"], 1e-9), thr["done"] / max(thr["end"], 1e-9)
    lats = lat["latencies"]
    print(f"command:  {shlex.join([sys.executable, *sys.argv])}\nmachine:  {machine()}\n"
          f"database: {args.db or 'sqlite (in the temp data dir)'}\n"
          f"workload: {args.agents} agents, {rpe} records/envelope; throughput {n_burst} envelopes "
          f"({n_burst * rpe} records); latency {args.rate:g} envelopes/s for {args.seconds:g} s\n")
    print(f"{'throughput (first publish -> last record)':42} {'envelopes':>9} {'seconds':>8} {'env/s':>8} {'records/s':>10}")
    print(f"{'raw: mosquitto_sub received':42} {raw['done']:9d} {raw['end']:8.2f} {raw_eps:8.0f} {raw_eps * rpe:10.0f}")
    print(f"{'collector: stored and acked':42} {thr['done']:9d} {thr['end']:8.2f} {col_eps:8.0f} {col_eps * rpe:10.0f}")
    print(f"{'ratio collector / raw':42} {col_eps / max(raw_eps, 1e-9):37.2f}")
    print(f"  rows stored: {thr['stored']} of {n_burst * rpe}; publishing took {thr['published']:.2f} s\n"
          f"  ack latency while saturated (queueing included): {spread(thr['latencies'])}\n")
    print(f"latency at {args.rate:g} envelopes/s (publish -> signed ack, sent after vault fsync + SQL commit)")
    print(f"  sent {n_paced} in {lat['published']:.2f} s ({n_paced / max(lat['published'], 1e-9):.0f}/s), acked {len(lats)}")
    print(f"  {spread(lats)}\n\ncollector counters: {counters}")
    print(f"target >= 5000 records/s stored: {'met' if col_eps * rpe >= 5000 else 'MISSED'}; "
          f"target p99 < 1 s at {args.rate:g} envelopes/s: {'met' if pct(lats, 99) < 1.0 else 'MISSED'}")
    complete = raw["done"] == n_burst == thr["done"] and thr["stored"] == n_burst * rpe and len(lats) == n_paced
    if not complete:
        print("INCOMPLETE: a phase did not finish within --timeout; the figures above are not valid")
    return complete


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; defaults are the issue's configuration."""
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--agents", type=int, default=1000, help="simulated agents (enrolled, one key each)")
    p.add_argument("--records-per-envelope", type=int, default=5)
    p.add_argument("--envelopes", type=int, default=20000, help="envelopes in the raw and throughput phases")
    p.add_argument("--rate", type=float, default=1000.0, help="envelopes/s in the latency phase")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    p.add_argument("--db", default="", help="store URL; empty = SQLite in the temp dir; postgresql+psycopg://... "
                                            "gets a fresh schema, dropped afterwards")
    p.add_argument("--timeout", type=float, default=120.0, help="per-phase wait for the last ack after publishing")
    p.add_argument("--quick", action="store_true", help="100 agents, 2,000 envelopes, 200/s for 3 s: a short check "
                                                        "of the whole path, not figures")
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.envelopes, args.rate, args.seconds = 100, 2000, 200.0, 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    """Build and sign every envelope first, then run the three phases; exit 1 if one is incomplete."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    warm_agent = BenchAgent(WARMUP_AGENT, new_private_key())
    agents = [BenchAgent(f"bench-{i:05d}", new_private_key()) for i in range(args.agents)]
    warm = build_stream([warm_agent], 1, 1)[0]
    burst = build_stream(agents, args.envelopes, args.records_per_envelope)
    paced = build_stream(agents, int(args.rate * args.seconds), args.records_per_envelope)
    with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
        raw = raw_phase(Path(tmp), burst, args.timeout)
        with database(args.db) as url:
            thr, lat, counters = collector_phases(Path(tmp), url, [warm_agent, *agents], warm, burst, paced, args)
    return 0 if report(args, raw, thr, lat, counters) else 1


if __name__ == "__main__":
    sys.exit(main())
