"""The production broker for tests: Mosquitto started with deploy/mosquitto/mosquitto.conf and
deploy/mosquitto/acl themselves, only paths, the port and the run-as user replaced, so the
config the tests pass is the config we ship. Plus small raw-paho helpers for TLS clients."""

from __future__ import annotations

import getpass
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.broker import Mosquitto
from collector.pki import Pki
from protocol.tls import context_from_files

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "deploy" / "mosquitto" / "acl"
ETC = "/etc/mosquitto/venueguard/"


def templated_config(port: int, pki_dir: Path, workdir: Path, conf: Path = SHIPPED_CONF,
                     rules: tuple[str, str] = (f"acl_file {ETC}acl", f"acl_file {SHIPPED_ACL}")) -> str:
    """A shipped config (``conf``) with its paths pointed at ``pki_dir``/``workdir``, its access
    rules line replaced by ``rules`` and the listener at 127.0.0.1:``port``; fails loudly if a line
    it replaces is no longer in the shipped file."""
    text = conf.read_text()
    swaps = [
        rules,
        (ETC, f"{pki_dir}/"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {workdir}/"),
        ("log_dest file /var/log/mosquitto/mosquitto.log", f"log_dest file {workdir / 'mosquitto.log'}"),
        ("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n"),
    ]
    for old, new in swaps:
        assert old in text, f"{conf} no longer contains {old!r}: update the test broker that templates it"
        text = text.replace(old, new)
    # Run as ourselves: as root Mosquitto would drop to user mosquitto, which cannot read the
    # test's 0600 keys (production installs them owned by mosquitto, see the README).
    return f"user {getpass.getuser()}\n" + text


class TlsBroker(Mosquitto):
    """Mosquitto with the production config, trusting the CA in ``pki``."""

    def __init__(self, workdir: Path, pki: Pki, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.pki = pki

    def write_config(self) -> None:
        """The shipped config, templated (see :func:`templated_config`)."""
        self.config_path.write_text(templated_config(self.port, self.pki.folder, self.workdir))

    @property
    def log_text(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def client_files(pki: Pki, stem: str, tmp: Path, cert_pem: str = "", key_pem: str = "") -> ssl.SSLContext:
    """A client context from ``pki``'s ``<stem>.crt/.key``, or from the PEM text given."""
    if cert_pem:
        (tmp / f"{stem}.crt").write_text(cert_pem)
        (tmp / f"{stem}.key").write_text(key_pem)
        return context_from_files(pki.path("ca.crt"), tmp / f"{stem}.crt", tmp / f"{stem}.key")
    return context_from_files(pki.path("ca.crt"), pki.path(f"{stem}.crt"), pki.path(f"{stem}.key"))


class RawClient:
    """A paho client on its own loop thread that records CONNACK, SUBACK, PUBACK and messages."""

    def __init__(self, client_id: str, port: int, ctx: ssl.SSLContext | None,
                 protocol: int = mqtt.MQTTv5) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if ctx is not None:
            self.client.tls_set_context(ctx)
        self.port = port
        self.connack: Any = None
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.subacks: dict[int, list[Any]] = {}
        self.pubacks: dict[int, Any] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.gone.set()
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subacks.__setitem__(mid, list(codes))
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self.pubacks.__setitem__(mid, reason)
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = reason
        if not reason.is_failure:
            self.connected.set()

    def connect(self) -> "RawClient":
        """Connect (raises on a TLS handshake the broker refuses) and start the loop."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
