"""The cluster broker for tests: Mosquitto started with deploy/mosquitto/cluster/mosquitto.conf itself
(the dynamic-security plugin, mutual TLS), its rules written by deploy/mosquitto/cluster/dynsec.py,
only paths, the port and the run-as user replaced. Plus small helpers around tests.tlsbroker.RawClient."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.broker import Mosquitto, free_port
from collector.pki import Pki
from protocol.tls import context_from_files
from tests.support import wait_for
from tests.tlsbroker import RawClient, client_files, templated_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "mosquitto" / "cluster"
CLUSTER_CONF = CLUSTER / "mosquitto.conf"
DYNSEC_SCRIPT = CLUSTER / "dynsec.py"
DYNSEC_FILE = "/var/lib/mosquitto/dynamic-security.json"
ADMIN = "venueguard-dynsec-admin"


def cluster_config(port: int, pki_dir: Path, workdir: Path) -> str:
    """The shipped cluster config pointed at ``pki_dir``/``workdir`` and 127.0.0.1:``port``; fails
    loudly if a line it replaces is gone, or if the plugin it names is not installed."""
    text = templated_config(port, pki_dir, workdir, CLUSTER_CONF, (
        f"plugin_opt_config_file {DYNSEC_FILE}", f"plugin_opt_config_file {workdir / 'dynamic-security.json'}"))
    plugin = next(line.split(None, 1)[1] for line in text.splitlines() if line.startswith("plugin "))
    assert Path(plugin).exists(), f"{plugin} (named in {CLUSTER_CONF}) is not installed: `dpkg -L mosquitto | grep dyn`"
    return text


def dynsec(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the shipped deploy/mosquitto/cluster/dynsec.py as an operator would."""
    return subprocess.run([sys.executable, str(DYNSEC_SCRIPT), *args], capture_output=True, text=True, timeout=120)


class ShareBroker(Mosquitto):
    """Mosquitto with the cluster config, trusting the CA in ``pki``; ``rules`` is the plugin's
    file as ``dynsec.py init`` wrote it (copied in, because the plugin rewrites it on changes)."""

    def __init__(self, workdir: Path, pki: Pki, rules: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.pki = pki
        self.rules = rules

    def write_config(self) -> None:
        (self.workdir / "dynamic-security.json").write_text(self.rules.read_text())
        self.config_path.write_text(cluster_config(self.port, self.pki.folder, self.workdir))

    @property
    def log_text(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class ShareSite:
    """A PKI with collector identities, enrolled agents, and the cluster broker."""

    tmp: Path
    pki: Pki
    broker: ShareBroker

    def client(self, name: str, session_expiry: int = 0) -> RawClient:
        """A connected v5 client with ``name``'s certificate (collector identities and the admin
        come from ``pki collector-cert``, agents from ``issue_agent``); ``session_expiry`` > 0
        keeps its session (and subscriptions) across reconnects, as a collector's does."""
        if (self.pki.path(f"collector-{name}.crt")).exists():
            ctx = client_files(self.pki, f"collector-{name}", self.tmp)
        else:
            crt, key = (self.tmp / f"agent-{name}.{ext}" for ext in ("crt", "key"))
            ctx = context_from_files(self.pki.path("ca.crt"), crt, key)
        raw = RawClient(name, self.broker.port, ctx)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        raw.client.connect("127.0.0.1", self.broker.port, keepalive=30, clean_start=False, properties=props)
        raw.client.loop_start()
        assert raw.connected.wait(10), f"{name} got no CONNACK"
        return raw

    def ctrl(self, command: str, ident: str) -> subprocess.CompletedProcess[str]:
        """``dynsec.py <command> <ident>`` against this broker, as the admin identity."""
        return dynsec(command, ident, "--host", "127.0.0.1", "--port", str(self.broker.port),
                      "--cafile", str(self.pki.path("ca.crt")),
                      "--cert", str(self.pki.path(f"collector-{ADMIN}.crt")),
                      "--key", str(self.pki.path(f"collector-{ADMIN}.key")))


def issue_agent_files(pki: Pki, agent_id: str, tmp: Path) -> None:
    """An agent certificate written as ``tmp/agent-<id>.crt/.key`` (as its bundle would carry it)."""
    issued = pki.issue_agent(agent_id)
    (tmp / f"agent-{agent_id}.crt").write_text(issued.cert_pem)
    (tmp / f"agent-{agent_id}.key").write_text(issued.key_pem)


def subscribe(client: RawClient, *filters: str) -> list[int]:
    """One SUBSCRIBE (QoS 1) for ``filters``; the SUBACK's reason codes (>= 0x80 is a refusal)."""
    mid = client.client.subscribe([(f, 1) for f in filters])[1]
    codes = wait_for(lambda: client.subacks.get(mid), 10, what=f"SUBACK for {filters}")
    return [int(c.value) for c in codes]


def publish(client: RawClient, topic: str, payload: bytes, retain: bool = False) -> int:
    """PUBLISH (QoS 1) and return the PUBACK reason code (0x87 = not authorized)."""
    mid = client.client.publish(topic, payload, qos=1, retain=retain).mid
    reason: Any = wait_for(lambda: client.pubacks.get(mid), 10, what=f"PUBACK for {topic}")
    return int(reason.value)


def node_toml(data: Path, node: str, broker_port: int, db_url: str, pki_dir: Path, cert_stem: str) -> str:
    """A cluster node's collector config speaking mutual TLS with certificate ``cert_stem`` of ``pki_dir``."""
    return "\n".join([
        "[collector]", f'data_dir = "{data}"', f'database_url = "{db_url}"', "",
        "[broker]", f"port = {broker_port}", "session_expiry = 5",
        f'tls_ca = "{pki_dir / "ca.crt"}"', f'tls_cert = "{pki_dir / (cert_stem + ".crt")}"',
        f'tls_key = "{pki_dir / (cert_stem + ".key")}"', "",
        "[web]", f"port = {free_port()}", "",
        "[cluster]", "enabled = true", f'node_id = "{node}"', "leader_poll_seconds = 0.5", ""])
