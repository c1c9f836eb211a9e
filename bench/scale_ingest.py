#!/usr/bin/env python3
"""Sustained ingest through one vs two real collectors, beside mosquitto_sub's raw rate in the same
share group: the ingest phase of ``bench/scale.py`` (``--phase ingest``), which runs it; method and
figures in bench/README.md."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import psutil
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from collector import keys
from collector.broker import Mosquitto, free_port
from collector.store import Store
from protocol.keys import new_private_key, public_b64

from ingest import VENUE, WARMUP_AGENT, BenchAgent, build_stream, run_agents  # bench/ is on sys.path
from pgschema import pg_schema

ROOT = Path(__file__).resolve().parents[1]


# -- sustained ingest: one vs two real collectors, beside mosquitto_sub in the same share group --------

SHARE_GROUP = "vg-collectors"  # [cluster] share_group's default
SAMPLE_PERIOD = 0.1  # seconds between samples of the stored count and the CPU times (raw: a quarter of it)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live children; 0 once it is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


NCPU = psutil.cpu_count() or 1


def busy_cpu() -> float:
    """CPU seconds the whole machine spent not idle (every process, other sessions' too)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def cpu_snapshot(pids: dict[str, int], postgres: "PgBackends | None" = None) -> dict[str, float]:
    """CPU seconds so far: per labelled process tree (the consumers, "broker"); "postgres" (the
    collectors' server backends, with lock-wait counters, see :class:`PgBackends`); "bench" (this
    process and its other children, ended ones included: the publisher, the sampler); "all" (the
    whole machine, other sessions' work too)."""
    out = {label: tree_cpu(pid) for label, pid in pids.items()}
    me = psutil.Process()
    t = me.cpu_times()
    live = sum(tree_cpu(c.pid) for c in me.children())
    out["bench"] = t.user + t.system + t.children_user + t.children_system + live - sum(out.values())
    if postgres is not None:
        out.update(postgres.poll())
    out["all"] = busy_cpu()
    return out


class PgBackends:
    """The PostgreSQL server processes serving one application_name prefix (the collectors' URLs
    carry ``application_name=<prefix>-<node>``): their CPU seconds, cumulative (a backend that ends
    keeps its last reading, one that starts later counts from its first), and per node how many
    polls found one of its backends waiting for a lock (``wait_event_type = 'Lock'``: the row
    locks on ``agents`` that serialize two collectors' batches for the same agents)."""

    def __init__(self, engine: Any, prefix: str) -> None:
        self.engine, self.prefix = engine, prefix
        self.seen: dict[int, float] = {}
        self.polls = 0
        self.lock_polls: dict[str, int] = {}

    def poll(self) -> dict[str, float]:
        """Cumulative counters: "postgres" (CPU seconds), "polls", and "lock <node>" per node."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT pid, application_name, wait_event_type FROM pg_stat_activity "
                                        "WHERE application_name LIKE :p"), {"p": f"{self.prefix}-%"}).all()
        self.polls += 1
        waiting = {app.rsplit("-", 1)[-1] for _pid, app, wait in rows if wait == "Lock"}
        for node in {app.rsplit("-", 1)[-1] for _pid, app, _w in rows}:
            self.lock_polls[node] = self.lock_polls.get(node, 0) + (node in waiting)
        for pid, _app, _wait in rows:
            cpu = tree_cpu(pid)
            if cpu:
                self.seen[pid] = cpu
        return {"postgres": sum(self.seen.values()), "polls": float(self.polls),
                **{f"lock {n}": float(c) for n, c in self.lock_polls.items()}}


class Sampler:
    """A thread that notes (monotonic time, records so far, CPU seconds per label) every ``period`` s."""

    def __init__(self, count: Callable[[], int], cpus: Callable[[], dict[str, float]],
                 period: float = SAMPLE_PERIOD) -> None:
        self.count, self.cpus, self.period = count, cpus, period
        self.samples: list[tuple[float, int, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Sampler":
        self.samples.append((time.monotonic(), self.count(), self.cpus()))
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.monotonic(), self.count(), self.cpus()))

    def wait_for(self, total: int, deadline: float, alive: Callable[[], bool] = lambda: True,
                 stall: float = 60.0) -> None:
        """Until ``total`` records are in, the deadline passes, a consumer died (``alive``) or the
        count has not moved for ``stall`` seconds; then one last sample."""
        moved, last = time.monotonic(), -1
        while time.monotonic() < deadline and self.samples[-1][1] < total and alive():
            if self.samples[-1][1] != last:
                moved, last = time.monotonic(), self.samples[-1][1]
            elif time.monotonic() - moved > stall:
                break
            time.sleep(self.period / 2)
        self.close()
        self.samples.append((time.monotonic(), self.count(), self.cpus()))

    def close(self) -> None:
        """Stop sampling (again is harmless): before its processes or schema go away."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


@dataclass
class IngestRun:
    """One consumer setup's figures for the same burst: rates, and CPU seconds per process."""

    setup: str  # raw1-live, raw2-live, raw1-backlog, raw2-backlog, alone, a, ab
    name: str
    expected: int
    done: int  # records stored (collectors) or received (mosquitto_sub)
    overall: float  # records/s from the consumers' resume to the last record
    steady: float  # records/s between 10 % and 90 % of the total (the backlog is draining)
    window: float  # seconds of that window
    cpu: dict[str, float]  # in the window: CPU seconds per label (see cpu_snapshot), lock-wait poll counts
    consumers: list[str]
    split: str = "-"  # records each collector stored (its vault_id), "*" on the leader


def summarize(setup: str, name: str, sampler: Sampler, t0: float, expected: int, consumers: list[str]) -> IngestRun:
    """Rates and CPU from the samples: steady = between the first samples at >= 10 % and >= 90 %;
    when those are fewer than 4 periods apart, the whole drain (the sample taken just before the
    resume at ``t0`` to the first sample holding every record) instead."""
    s = sampler.samples
    done = s[-1][1]
    end = next(x for x in s if x[1] >= done)
    lo = next((x for x in s if x[1] >= 0.1 * expected), s[0])
    hi = next((x for x in s if x[1] >= 0.9 * expected), end)
    if hi[0] - lo[0] < 4 * sampler.period:  # too short to tell a steady state
        lo, hi = max((x for x in s if x[0] <= t0), key=lambda x: x[0], default=s[0]), end
    window = max(hi[0] - lo[0], 1e-9)
    cpu = {k: hi[2][k] - lo[2].get(k, 0.0) for k in hi[2]}
    return IngestRun(setup, name, expected, done, done / max(end[0] - t0, 1e-9), (hi[1] - lo[1]) / window, window, cpu,
                     consumers)


def raw_share_ingest(work: Path, items: list[Any], members: int, rpe: int, timeout: float, paused: bool) -> IngestRun:
    """The burst into a fresh broker that only ``members`` ``mosquitto_sub -q 1`` in the share group
    read: what Mosquitto delivers without a collector. ``paused``: as the collectors get it, queued
    while the subscribers are paused, timed from their resume; else live, timed from the first
    publish (the publisher is then the limit: the ceiling of broker + publisher). Each subscriber
    also reads a retained marker on its own topic (shared subscriptions get no retained messages):
    it arrives after the SUBACK of both filters, so the subscriptions are live before publishing."""
    mode = "backlog" if paused else "live"
    broker = Mosquitto(work / f"raw-ingest-{members}-{mode}", persistence=False).start()
    assert broker.proc is not None
    port, subs = str(broker.port), []
    counts = [0] * members
    try:
        for k in range(members):
            subprocess.run(["mosquitto_pub", "-p", port, "-h", "127.0.0.1", "-t", f"bench/ready/{k}", "-m", "go", "-r",
                            "-q", "1"], check=True)
            subs.append(subprocess.Popen(["mosquitto_sub", "-p", port, "-h", "127.0.0.1", "-V", "mqttv5", "-q", "1",
                                          "-i", f"raw-sub-{k}", "-t", f"$share/{SHARE_GROUP}/vg/v1/+/ev",
                                          "-t", f"bench/ready/{k}"], stdout=subprocess.PIPE))
        for p in subs:
            p.stdout.readline()  # type: ignore[union-attr]  # the marker

        def drain(k: int) -> None:
            while chunk := subs[k].stdout.read1(1 << 20):  # type: ignore[union-attr]
                counts[k] += chunk.count(b"\n")

        for k in range(members):
            threading.Thread(target=drain, args=(k,), daemon=True).start()
        labels = [f"mosquitto_sub {k + 1}" for k in range(members)]
        pids = {**{lab: p.pid for lab, p in zip(labels, subs)}, "broker": broker.proc.pid}
        sampler = Sampler(lambda: sum(counts) * rpe, lambda: cpu_snapshot(pids), SAMPLE_PERIOD / 4)
        if paused:
            t0 = queue_then_drain(broker.port, items, [p.pid for p in subs], sampler, timeout)
        else:
            sampler.start()
            t0 = run_agents(broker.port, items, acks=False, timeout=timeout)["t0"]
        try:
            sampler.wait_for(len(items) * rpe, t0 + timeout)
        finally:
            sampler.close()
        return summarize(f"raw{members}-{mode}", f"raw, {mode}: {members} mosquitto_sub", sampler, t0,
                         len(items) * rpe, labels)
    finally:
        for p in subs:
            if p.poll() is None:
                p.terminate()
            p.wait(10)
        broker.stop()


def queue_then_drain(port: int, items: list[Any], consumers: list[int], sampler: Sampler, timeout: float) -> float:
    """Pause the consumers (SIGSTOP), publish the burst until the broker has PUBACKed all of it (so
    it waits in their sessions), start ``sampler``, resume them (SIGCONT); return the resume time.
    The drain is then timed without the publisher's CPU on this shared 2-CPU machine: agents are
    remote in production."""
    for pid in consumers:
        os.kill(pid, signal.SIGSTOP)
    try:
        run_agents(port, items, acks=False, timeout=timeout)
        sampler.start()
    finally:
        t0 = time.monotonic()
        for pid in consumers:
            os.kill(pid, signal.SIGCONT)
    return t0


class CollectorNode:
    """One real collector, ``python -m collector.cli --config node.toml run``, in its own process."""

    def __init__(self, work: Path, node: str, broker_port: int, db_url: str, cluster: bool) -> None:
        self.node, self.data_dir = node, work / f"collector-{node}"
        self.data_dir.mkdir(parents=True)
        self.toml, self.log = work / f"collector-{node}.toml", work / f"collector-{node}.log"
        lines = ["[collector]", f'data_dir = "{self.data_dir}"', f'database_url = "{db_url}-{node}"',
                 'log_level = "warning"', "", "[broker]", f"port = {broker_port}", "",
                 "[web]", f"port = {free_port()}", ""]
        if cluster:
            lines += ["[cluster]", "enabled = true", f'node_id = "{node}"', f'share_group = "{SHARE_GROUP}"', ""]
        self.toml.write_text("\n".join(lines))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "collector.cli", "--config", str(self.toml), "run"],
                                         stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            code = self.proc and self.proc.returncode
            raise SystemExit(f"collector {self.node} exited ({code}); its log ends:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (the collector closes its vault and store), SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def warm_up(port: int, engine: Any, warm: list[Any], nodes: list[str] | None, timeout: float = 90.0) -> None:
    """Publish one warm-up envelope at a time (its own agent, left out of the counts) until every
    collector has stored one: any row when alone; in a cluster a row with each node's ``vault_id``
    (records say which node's vault holds the leaf), so both are subscribed to the share group."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-warm", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    has_vault_id = "vault_id" in {c["name"] for c in sa.inspect(engine).get_columns("records")}
    if nodes and not has_vault_id:
        raise SystemExit("records has no vault_id column: this tree's collector is not cluster-aware yet")
    col = "vault_id" if nodes else "agent_id"
    try:
        deadline = time.monotonic() + timeout
        for topic, payload, _agent, _seq in warm:
            client.publish(topic, payload, qos=1)
            time.sleep(0.3)
            with engine.connect() as conn:
                got = set(conn.execute(sa.text(f"SELECT DISTINCT {col} FROM records WHERE agent_id = :a"),
                                       {"a": WARMUP_AGENT}).scalars())
            if (set(nodes) <= got) if nodes else got:
                return
            if time.monotonic() > deadline:
                break
        raise SystemExit(f"warm-up: after {timeout:.0f} s the collectors stored warm-up rows from {sorted(got)}, "
                         f"expected {nodes or 'any'}; see the collector logs")
    finally:
        client.disconnect()
        client.loop_stop()


def split_by_node(engine: Any) -> str:
    """Records each node stored (``records.vault_id``: whose vault holds the leaf), the leader
    (``cluster_leader.holder``) marked with "*": the share group's distribution, as stored."""
    with engine.connect() as conn:
        counts = conn.execute(sa.text("SELECT vault_id, count(*) FROM records WHERE seq IS NOT NULL AND agent_id <> :w "
                                      "GROUP BY vault_id ORDER BY vault_id"), {"w": WARMUP_AGENT}).all()
        leader = conn.execute(sa.text("SELECT holder FROM cluster_leader")).scalar()
    return " / ".join(f"{node}{'*' if node == leader else ''} {n:,}" for node, n in counts)


def enroll(url: str, agents: list[Any]) -> None:
    """Migrate a fresh schema and enroll every simulated agent (the collectors then find them)."""
    store = Store(url)
    try:
        store.migrate()
        store.add_venue(VENUE)
        for a in agents:
            store.enroll_agent(a.agent_id, VENUE, public_b64(a.key))
    finally:
        store.close()


def collector_ingest(work: Path, db: str, setup: str, agents: list[Any], warm_agent: Any, items: list[Any],
                     warm: list[Any], rpe: int, timeout: float) -> IngestRun:
    """The burst through real collectors on a fresh broker and a fresh schema: ``alone`` (no
    [cluster]), ``a`` (a cluster of one) or ``ab`` (two nodes, same share group and database, b
    with a's collector.key)."""
    nodes, cluster = list("a" if setup == "alone" else setup), setup != "alone"
    folder = work / f"ingest-{setup}"
    broker = Mosquitto(folder / "broker", persistence=False).start()
    assert broker.proc is not None
    try:
        return _collector_ingest(folder, broker, db, setup, nodes, cluster, [warm_agent, *agents], items, warm, rpe,
                                 timeout)
    finally:
        broker.stop()


def _collector_ingest(folder: Path, broker: Mosquitto, db: str, setup: str, nodes: list[str], cluster: bool,
                      enrolled: list[Any], items: list[Any], warm: list[Any], rpe: int, timeout: float) -> IngestRun:
    """:func:`collector_ingest` once the broker runs: a fresh schema, the nodes, warm-up, the drain.
    The nodes stop before the schema is dropped (their connections would block the DROP)."""
    assert broker.proc is not None
    with pg_schema(db, prefix="bench_scale") as url:
        tag = f"vgb{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(f"{url}&application_name={tag}")
        procs = [CollectorNode(folder, n, broker.port, f"{url}&application_name={tag}", cluster) for n in nodes]
        sampler: Sampler | None = None
        try:
            enroll(url, enrolled)
            keys.load_or_create(procs[0].data_dir / "collector.key")
            for p in procs[1:]:  # one signing key for the cluster: agents verify acks with the key in their bundle
                shutil.copy2(procs[0].data_dir / "collector.key", p.data_dir / "collector.key")
            for p in procs:
                p.start()
            try:
                warm_up(broker.port, engine, warm, nodes if cluster else None)
            finally:
                for p in procs:
                    p.check_alive()
            time.sleep(1.0)  # let the warm-up's batch and the first rulebook step settle
            pg = PgBackends(engine, tag)
            where = "seq IS NOT NULL AND agent_id <> :w"

            def stored() -> int:
                with engine.connect() as conn:
                    return conn.execute(sa.text(f"SELECT count(*) FROM records WHERE {where}"),
                                        {"w": WARMUP_AGENT}).scalar_one()

            pids = {**{f"collector {p.node}": p.proc.pid for p in procs if p.proc}, "broker": broker.proc.pid}
            sampler = Sampler(stored, lambda: cpu_snapshot(pids, pg))
            t0 = queue_then_drain(broker.port, items, [p.proc.pid for p in procs if p.proc], sampler, timeout)
            sampler.wait_for(len(items) * rpe, t0 + timeout,
                             lambda: all(p.proc is not None and p.proc.poll() is None for p in procs))
            for p in procs:
                p.check_alive()
            name = {"alone": "1 collector, no [cluster]", "a": "1 collector, [cluster] node a"}.get(
                setup, f"{len(nodes)} collectors, [cluster] nodes {' + '.join(nodes)}")
            run = summarize(setup, name, sampler, t0, len(items) * rpe, [f"collector {n}" for n in nodes])
            if cluster:
                run.split = split_by_node(engine)
            return run
        finally:
            if sampler is not None:
                sampler.close()
            for p in procs:
                p.stop()
            engine.dispose()


def shuffled_rounds(items: list[Any], n: int) -> list[Any]:
    """``build_stream`` goes round the agents in a fixed order, so with strict round robin and an
    even number of agents collector a would get only even agents and b only odd ones: no agent
    shared, no ledger contention, unlike real agents publishing independently. Shuffle within
    each round of ``n`` (one envelope per agent): every agent keeps its seq order, and its
    envelopes land on either collector."""
    rng = random.Random(9)
    out: list[Any] = []
    for i in range(0, len(items), n):
        chunk = items[i:i + n]
        rng.shuffle(chunk)
        out += chunk
    return out


def ingest_phase(work: Path, args: argparse.Namespace) -> tuple[list[IngestRun], str]:
    """Sign the burst once, then the raw runs and each collector setup on that same burst."""
    n, envelopes, rpe = args.ingest_agents, args.ingest_envelopes, args.records_per_envelope
    agents = [BenchAgent(f"bench-{i:05d}", new_private_key()) for i in range(n)]
    warm_agent = BenchAgent(WARMUP_AGENT, new_private_key())
    t = time.perf_counter()
    items = shuffled_rounds(build_stream(agents, envelopes, rpe), n)
    warm = build_stream([warm_agent], 300, 1)
    print(f"ingest: signed {envelopes} envelopes of {rpe} records for {n} agents in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    setups = [s for s in args.ingest_setups.split(",") if s]
    unknown = [s for s in setups if s not in ("alone", "a", "ab")]
    if unknown:
        raise SystemExit(f"--ingest-setups: unknown {', '.join(unknown)} (alone, a, ab)")
    runs = []
    for rnd in range(1, args.ingest_rounds + 1):  # rounds interleave the setups: load from others hits each alike
        here = work / f"ingest-round-{rnd}"
        for paused in (False, True):
            for members in (1, 2):
                print(f"ingest round {rnd}: raw, {members} mosquitto_sub, {'backlog' if paused else 'live'}",
                      file=sys.stderr)
                runs.append(raw_share_ingest(here, items, members, rpe, args.timeout, paused))
        for setup in setups:
            print(f"ingest round {rnd}: collectors {setup}", file=sys.stderr)
            runs.append(collector_ingest(here, args.db, setup, agents, warm_agent, items, warm, rpe, args.timeout))
    size = (f"{n} agents, {envelopes} envelopes x {rpe} records = {envelopes * rpe} records, one burst at QoS 1 "
            f"(one paho client, 1,000 in flight); collectors and 'backlog' rows: the burst is queued in the broker "
            f"while the consumers are paused (SIGSTOP) and timed from their SIGCONT; 'live' rows: timed from the "
            f"first publish")
    return runs, size


def lock_waits(r: IngestRun) -> str:
    """Per collector, the share of polls in the window that found it waiting for a lock."""
    polls = r.cpu.get("polls", 0.0)
    if not polls:
        return "-"
    return " + ".join(f"{c.split()[-1]} {100 * r.cpu.get('lock ' + c.split()[-1], 0.0) / polls:.0f} %"
                      for c in r.consumers)


def median_run(runs: list[IngestRun]) -> IngestRun:
    """The run with the median steady rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r.steady)[(len(runs) - 1) // 2]


def ingest_report(runs: list[IngestRun], size: str, db: str) -> None:
    """One row per setup. CPU is seconds within the steady window (% of one core): the consumers
    (collectors or mosquitto_sub), the broker, the collectors' PostgreSQL backends, this bench
    (publisher + sampler), and the rest of the machine's busy time (other sessions, kernel)."""
    print(f"\nsustained ingest: {size}; plain-TCP Mosquitto on 127.0.0.1; PostgreSQL {db.split('@')[-1]} "
          f"(a fresh schema per setup); steady = from 10 % to 90 % of the records in")
    head = ("setup", "records in", "overall rec/s", "steady rec/s", "window s", "consumer CPU s (% of a core)",
            "rec per consumer CPU-s", "broker", "postgres", "bench", "other work", f"all {NCPU} CPUs busy",
            "waiting for a row lock", "records by node (* leader)")
    print(" | ".join(head))
    for r in runs:
        share = (lambda s: f"{100 * s / r.window:.0f} %") if r.window >= 0.5 else (lambda s: "-")  # ticks are 10 ms
        own = " + ".join(f"{c.split()[-1]} {r.cpu[c]:.1f} ({share(r.cpu[c])})" for c in r.consumers)
        spent = sum(r.cpu[c] for c in r.consumers)
        known = spent + sum(r.cpu.get(k, 0.0) for k in ("broker", "postgres", "bench"))
        vals = (r.name, f"{r.done}/{r.expected}", f"{r.overall:,.0f}", f"{r.steady:,.0f}", f"{r.window:.1f}", own,
                f"{r.steady * r.window / spent:,.0f}" if spent >= 0.05 and r.window >= 0.5 else "-", f"{r.cpu['broker']:.2f}",
                f"{r.cpu['postgres']:.1f}" if "postgres" in r.cpu else "-", f"{r.cpu['bench']:.1f}",
                f"{max(r.cpu['all'] - known, 0.0):.1f}", share(r.cpu["all"] / NCPU), lock_waits(r),
                r.split)
        print(" | ".join(vals))
    by = {s: median_run([r for r in runs if r.setup == s]) for s in dict.fromkeys(r.setup for r in runs)}
    rounds = max(sum(r.setup == s for r in runs) for s in by)
    if rounds > 1:
        print(f"\nmedian of {rounds} rounds, steady records/s: "
              + "; ".join(f"{by[s].name} {by[s].steady:,.0f}" for s in by))
    for a, b, what in (("ab", "a", "two collectors / one (both [cluster])"),
                       ("a", "alone", "[cluster] node a / no [cluster]"),
                       ("raw2-backlog", "raw1-backlog", "two mosquitto_sub / one (backlog)"),
                       ("raw2-live", "raw1-live", "two mosquitto_sub / one (live)"),
                       ("alone", "raw1-live", "one collector draining / one mosquitto_sub live")):
        if a in by and b in by:
            print(f"{what}: x{by[a].steady / max(by[b].steady, 1e-9):.2f} records/s (steady)")
    missing = [r.name for r in runs if r.done < r.expected]
    if missing:
        print(f"INCOMPLETE within --timeout: {'; '.join(missing)}: their figures are not valid")


# -- main ---------------------------------------------------------------------------------------------
