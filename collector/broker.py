"""A Mosquitto subprocess on a free loopback port: for the demo, the tests and the benchmarks.

Production runs Mosquitto as a service with TLS and ACLs (deploy/); this starts a plain local
one with a generated config so the embedded defaults work on a fresh machine.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or a clear error saying how to install it."""
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run `apt-get install mosquitto` (Debian) first")
    return found


class Mosquitto:
    """One broker process.

    Args:
        workdir: config, persistence and log go here.
        port: the listener port; a free one by default. Kept across restarts of this object.
        persistence: keep sessions and queued messages on disk across restarts.
        max_queued_messages: per-client queue limit (the broker drops beyond it).
    """

    def __init__(self, workdir: Path, port: int | None = None, *, persistence: bool = True,
                 max_queued_messages: int = 100_000, acl_file: Path | None = None, netns: str | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.acl_file = acl_file
        self.netns = netns  # run inside this network namespace (test LANs)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        """Write the broker config (MQTT v5 is on by default in Mosquitto 2)."""
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # Run as ourselves: dropping to the mosquitto user would leave it unable to write
            # persistence and log into a private work dir (silently: no persistence at all).
            f"user {getpass.getuser()}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued_messages}",
            "max_inflight_messages 1000",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        """Start and wait until the port accepts connections."""
        self.write_config()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen([*prefix, mosquitto_binary(), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start ({self.proc.returncode}): {err.strip()}")
            if self._listening():
                return self
            time.sleep(0.05)
        self.kill()  # never leave a half-started broker behind
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def _listening(self) -> bool:
        """Whether the listener is up: a connect from here, or ``ss`` inside the namespace."""
        if self.netns:
            out = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hltn", f"sport = :{self.port}"],
                                 capture_output=True, text=True).stdout
            return bool(out.strip())
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Graceful stop (persists sessions)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
