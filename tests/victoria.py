"""A real VictoriaMetrics (Debian ``victoria-metrics``) on a free loopback port, for the telemetry tests.

It accepts the InfluxDB v2 write API that ``influxdb-client`` speaks (``/api/v2/write``) and gives
series back from ``/api/v1/export``; a field ``f`` of measurement ``m`` becomes the metric ``m_f``.
It keeps its port and data folder across stop/start, so a test can take it away and bring it back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from collector.broker import free_port
from tests.support import wait_for

BINARIES = ("/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics")


def binary() -> str:
    """The victoria-metrics executable, or a clear error saying how to install it."""
    found = shutil.which("victoria-metrics") or next((p for p in BINARIES if Path(p).exists()), None)
    if not found:
        raise RuntimeError("victoria-metrics is not installed: run `apt-get install victoria-metrics` (Debian) first")
    return found


class VictoriaMetrics:
    """One server process with its own storage folder under ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "VictoriaMetrics":
        """Start and wait until /health answers."""
        log = (self.workdir / "victoria.log").open("ab")
        self.proc = subprocess.Popen(
            [binary(), f"-storageDataPath={self.workdir / 'data'}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=3y", "-loggerLevel=ERROR"], stdout=log, stderr=log)
        wait_for(self.healthy, timeout=60, what=f"VictoriaMetrics on port {self.port}")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM): what it acknowledged is on disk, as after an orderly restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def export(self, match: str = '{__name__=~"vg_.*"}') -> list[dict[str, Any]]:
        """Every series matching ``match`` with its values and timestamps (ms), after making what it
        received searchable (/internal/force_flush; otherwise new series show up only within ~10 s)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as resp:
            return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]

    def points(self, metric: str) -> dict[tuple[tuple[str, str], ...], dict[int, float]]:
        """``{labels (without __name__): {timestamp_ms: value}}`` of one metric."""
        out: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
        for series in self.export(f'{{__name__="{metric}"}}'):
            labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            out.setdefault(labels, {}).update(zip(series["timestamps"], series["values"]))
        return out
