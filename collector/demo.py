"""The demo: a broker, the collector and simulated venues, on the embedded defaults.

Agents are the real agent program (real outbox and uplink) in subprocesses; only their host
watcher reads a scripted scenario instead of real interfaces, since no exam LAN exists here.
Data lives in one folder and is reused by the next start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from collector import cli, keys
from collector.broker import Mosquitto
from collector.config import BrokerSection, CollectorConfig, CollectorSection, WebSection
from collector.enroll import enroll
from collector.runtime import Collector
from collector.strings import t

DEMO_USER = "demo"
LOGIN_FILE = "demo-login.txt"  # the demo administrator's password
#: (venue id, venue name, agent ids); addresses come from the documentation range 192.0.2.0/24.
VENUES = [
    ("GZ-TH01", "广州市天河区安全生产考试点", ["gz-th01-srv1", "gz-th01-srv2"]),
    ("GZ-HZ02", "广州市海珠区安全生产考试点", ["gz-hz02-srv1"]),
    ("GZ-BY03", "广州市白云区安全生产考试点", ["gz-by03-srv1"]),
]


def scenario(host_no: int) -> dict[str, list[dict[str, dict[str, object]]]]:
    """Interface states the demo host cycles through: steady, re-addressed, a Wi-Fi card appears."""
    mac = f"02:00:00:00:00:{host_no:02x}"
    steady = {"eth0": {"mac": mac, "up": True, "addrs": [f"192.0.2.{10 + host_no}/24"]}}
    moved = {"eth0": {"mac": mac, "up": True, "addrs": [f"192.0.2.{200 + host_no}/24"]}}
    wifi = dict(steady, wlan0={"mac": f"02:00:00:00:01:{host_no:02x}", "up": True, "addrs": ["198.51.100.23/24"]})
    down = {"eth0": {"mac": mac, "up": False, "addrs": [f"192.0.2.{10 + host_no}/24"]}}
    return {"steps": [steady, steady, steady, moved, steady, steady, wifi, steady, down, steady] }


class Demo:
    """Everything the demo runs, under ``root``."""

    def __init__(self, root: Path, web_port: int = 8080) -> None:
        self.root = root
        self.web_port = web_port
        self.broker = Mosquitto(root / "broker")
        self.cfg = CollectorConfig(
            collector=CollectorSection(data_dir=root / "collector"),
            broker=BrokerSection(port=self.broker.port),
            web=WebSection(port=web_port),
        )
        self.agents: list[subprocess.Popen[bytes]] = []

    def run(self, duration: float = 0) -> int:
        """Start everything, wait for Ctrl-C (or ``duration``), stop everything."""
        if _port_busy(self.web_port):
            print(t("demo_port_busy", port=self.web_port), file=sys.stderr)
            return 2
        self.broker.start()
        collector = Collector(self.cfg)
        configs = self._enroll_all(collector)
        password = self._demo_login(collector)
        print(t("demo_start", dir=self.root, broker_port=self.broker.port, agents=len(configs)), file=sys.stderr)
        print(t("demo_login", user=DEMO_USER, password=password, file=self.root / LOGIN_FILE), file=sys.stderr)
        collector.start()
        try:
            for path in configs:
                log = (path.parent / "agent.log").open("ab")
                self.agents.append(subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
                                                    stdout=log, stderr=log, env=dict(os.environ, VENUEGUARD_LANG="en")))
            print(t("demo_ready", web=f"127.0.0.1:{self.web_port}"), file=sys.stderr)
            cli._wait_for_signal(duration)
        finally:
            for proc in self.agents:
                proc.send_signal(signal.SIGTERM)
            for proc in self.agents:
                proc.wait(timeout=15)
            collector.stop()
            self.broker.stop()
        print(t("demo_stopped", dir=self.root), file=sys.stderr)
        return 0

    def _enroll_all(self, collector: Collector) -> list[Path]:
        """Enroll each demo agent once; (re)write its config for this run's broker port."""
        key = keys.load_or_create(self.cfg.collector.data_dir / "collector.key")
        out: list[Path] = []
        host_no = 0
        for venue_id, name, agent_ids in VENUES:
            for agent_id in agent_ids:
                host_no += 1
                home = self.root / "agents" / agent_id
                bundle = home / "agent.bundle.json"
                if not bundle.exists():
                    enroll(collector.store, key, agent_id, venue_id, venue_name=name,
                           broker_host="127.0.0.1", broker_port=self.broker.port, out=bundle)
                (home / "scenario.json").write_text(json.dumps(scenario(host_no), indent=1))
                cfg = home / "agent.toml"
                cfg.write_text(
                    "[agent]\nbundle = \"agent.bundle.json\"\ndata_dir = \"data\"\nheartbeat_interval = 5\n"
                    "snapshot_interval = 60\n\n"
                    f"[uplink]\nbroker_port = {self.broker.port}\nreconnect_max = 5\n\n"
                    "[watchers.host]\ninterval = 4\nscenario = \"scenario.json\"\n"
                )
                out.append(cfg)
        return out


    def _demo_login(self, collector: Collector) -> str:
        """The demo's administrator: made on the first start with a random password, which is kept
        (0600) beside the data and printed, so the pages can be opened at once and again later."""
        from collector.web import accounts

        path = self.root / LOGIN_FILE
        if path.exists() and accounts.find_user(collector.store, DEMO_USER) is not None:
            return path.read_text(encoding="utf-8").strip()
        password = secrets.token_urlsafe(12)
        if accounts.find_user(collector.store, DEMO_USER) is None:
            accounts.add_user(collector.store, DEMO_USER, password, "admin", None, time.time())
        else:
            accounts.set_password(collector.store, DEMO_USER, password)
        path.write_text(password + "\n", encoding="utf-8")
        path.chmod(0o600)
        return password


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
