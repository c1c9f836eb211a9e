#!/usr/bin/env python3
"""Camera benchmark: time from killing a camera to ``camera.down`` committed, and the agent's cost.

A namespace LAN on 198.51.100.0/24 (tests/netns.py): the agent, a gateway, and N cameras, each its
own namespace running GStreamer's RTSP server (``tests/rtsp_camera.py``, system Python, Digest
auth). Every camera's room has an exam in progress, so the watcher is in exam-window mode (probe
every ``interval_exam`` s, L3 sample every ``sample_every`` s, staggered). The watcher runs in the
agent namespace through the test runner (``python -m tests.agent.test_camera_watcher``: watcher →
state → outbox, as the runtime does); this process polls the outbox read-only every 0.1 s.

Per phase (one per ``--intervals`` value): wait until every camera is up, then SIGKILL ``--kills``
cameras at random moments over one interval and time each until its ``camera.down`` is in the
outbox. The agent's CPU% and RSS are sampled every second while it probes. Every namespace is
deleted at the end. Needs root and the apt packages of tests/rtsp_camera.py.

    .venv/bin/python bench/cameras.py                    # 64 cameras, intervals 15 and 5
    .venv/bin/python bench/cameras.py --cameras 8 --kills 3 --intervals 5   # quick check
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from protocol.inventory import Device, Inventory  # noqa: E402
from tests.netns import Lab  # noqa: E402

USER, PASSWORD, ROOM = "admin", "Bench#2024", "第1考场"


def camera(i: int) -> Device:
    return Device(f"00:11:22:33:{i // 256:02x}:{i % 256:02x}", f"198.51.100.{100 + i}", "camera", ROOM, f"cam{i}", "hikvision")


def outbox_downs(path: Path) -> dict[str, float]:
    """MAC → commit time of its camera.down."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT body FROM records ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    out = {}
    for (body,) in rows:
        rec = json.loads(body)
        if rec["kind"] == "camera.down":
            out.setdefault(rec["data"]["mac"], rec["at"])
    return out


def statuses(path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='state:cameras'").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    cams = json.loads(row[0])["cameras"] if row else {}
    return {m: c["status"] for m, c in cams.items()}


def phase(lab: Lab, tmp: Path, cams: dict[int, Any], victims: list[int], interval: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run the agent with ``interval``; kill ``victims``; return latencies and resource use."""
    out = tmp / f"outbox-{interval:g}.sqlite3"
    ready = tmp / f"ready-{interval:g}"
    now = time.time()
    settings = {"outbox": str(out), "ready": str(ready),
                "inventory": Inventory("BENCH", 1, tuple(camera(i) for i in cams)).to_json(),
                "sessions": [{"room": ROOM, "start": now - 60, "end": now + 7200}],
                "watcher": {"username": USER, "password": PASSWORD, "credentials_file": str(tmp / "creds.json"),
                            "gateway": "198.51.100.1", "interval_exam": interval}}
    (tmp / "settings.json").write_text(json.dumps(settings))
    log = (tmp / f"agent-{interval:g}.log").open("wb")
    agent = lab.hosts["agent"].popen(sys.executable, "-m", "tests.agent.test_camera_watcher", str(tmp / "settings.json"),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        _wait(lambda: ready.exists(), 30)
        proc = psutil.Process(agent.pid)
        _wait(lambda: sum(s == "up" for s in statuses(out).values()) == len(cams), 180)

        def sample() -> None:
            proc.cpu_percent()
            while not stop.wait(1.0):
                samples.append((proc.cpu_percent(), proc.memory_info().rss))

        threading.Thread(target=sample, daemon=True).start()
        killed: dict[str, float] = {}
        for i in victims:
            time.sleep(random.uniform(0, interval / len(victims) * 2))
            cams[i].send_signal(signal.SIGKILL)
            killed[camera(i).mac] = time.time()
        _wait(lambda: set(killed) <= set(outbox_downs(out)), 180)
        downs = outbox_downs(out)
        lat = sorted(downs[m] - t for m, t in killed.items())
        time.sleep(max(0.0, 60 - (time.time() - min(killed.values()))))  # at least a minute of probing sampled
    finally:
        stop.set()
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        log.close()
    cpu = [c for c, _ in samples]
    return {"interval": interval, "p50": statistics.median(lat), "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "max": lat[-1], "cpu_mean": statistics.mean(cpu), "cpu_max": max(cpu),
            "rss_max_mb": max(r for _, r in samples) / 2**20, "kills": len(lat)}


def _wait(pred: Any, timeout: float) -> None:
    end = time.time() + timeout
    while not pred():
        if time.time() > end:
            raise TimeoutError("INCOMPLETE: condition not met in time")
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=64)
    p.add_argument("--kills", type=int, default=8, help="cameras killed per phase")
    p.add_argument("--intervals", type=float, nargs="+", default=[15.0, 5.0])
    args = p.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory() as d, Lab() as lab:
        tmp = Path(d)
        (tmp / "creds.json").write_text("{}")
        (tmp / "creds.json").chmod(0o600)
        lab.add("agent", "02:aa:00:00:00:01", "198.51.100.10/24")
        lab.add("gw", "02:aa:00:00:00:02", "198.51.100.1/24")
        cams: dict[int, Any] = {}
        for i in range(args.cameras):
            host = lab.add(f"c{i}", camera(i).mac, f"{camera(i).ip}/24")
            cams[i] = host.popen("/usr/bin/python3", str(ROOT / "tests" / "rtsp_camera.py"), "--port", "554",
                                 "--user", USER, "--password", PASSWORD, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        order = random.sample(range(args.cameras), args.kills * len(args.intervals))
        results = []
        try:
            for n, interval in enumerate(args.intervals):
                live = {i: c for i, c in cams.items() if c.poll() is None}
                results.append(phase(lab, tmp, live, order[n * args.kills:(n + 1) * args.kills], interval, args))
        finally:
            for c in cams.values():
                if c.poll() is None:
                    c.kill()
    print(f"{args.cameras} cameras, exam mode, down_after=3, sample_every=60 s, sample 3 s, timeout 3 s")
    print("interval  kills  down p50  p95   max   agent CPU% mean/max  RSS max")
    for r in results:
        print(f"{r['interval']:>6g} s {r['kills']:>5}  {r['p50']:6.1f} s {r['p95']:5.1f} {r['max']:5.1f}   "
              f"{r['cpu_mean']:6.1f} / {r['cpu_max']:5.1f}      {r['rss_max_mb']:.0f} MB")


if __name__ == "__main__":
    main()
