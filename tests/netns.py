"""Test LANs built from network namespaces and veth pairs on a bridge (DESIGN.md §6).

Only documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are used, only inside
namespaces made here, and every namespace is deleted afterwards, even when a test fails.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "vgt"  # every namespace a test makes starts with this, then the pid that made it


def new_tag() -> str:
    """``vgt`` + the test process's pid (7 hex digits) + 2 random hex digits; veth names built on
    it stay within Linux's 15 characters, and the pid tells whose namespaces are whose."""
    return f"{PREFIX}{os.getpid():07x}{secrets.token_hex(1)}"


def require_root() -> None:
    """Skip (with the reason) when not root; CI runs as root, so there these tests always run."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (CI runs as root)")


def sh(*args: str, check: bool = True, ns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, in namespace ``ns`` when given; raise with its stderr on failure."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    """One namespace on the LAN, with ``eth0`` on the bridge."""

    lab: "Lab"
    ns: str
    mac: str
    ips: list[str]

    def sh(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh(*args, check=check, ns=self.ns, timeout=timeout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        """Start a process in this namespace (the project's code is importable)."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *args], env=env, **kw)

    def python(self, code: str, timeout: float = 30) -> str:
        """Run Python code in this namespace with the project's interpreter; return stdout."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"python in {self.ns} failed: {proc.stderr.strip()}")
        return proc.stdout

    def set_ip(self, *cidrs: str) -> None:
        """Replace eth0's addresses."""
        self.sh("ip", "addr", "flush", "dev", "eth0")
        for c in cidrs:
            self.sh("ip", "addr", "add", c, "dev", "eth0")
        self.ips = [c.split("/")[0] for c in cidrs]

    def set_mac(self, mac: str) -> None:
        self.sh("ip", "link", "set", "eth0", "address", mac)
        self.mac = mac


@dataclass
class Lab:
    """A bridge in its own namespace and hosts attached to it."""

    tag: str = field(default_factory=new_tag)
    hosts: dict[str, Host] = field(default_factory=dict)
    made: int = 0  # veth index: never reused, since a deleted namespace's veth may linger a moment

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def __enter__(self) -> "Lab":
        sh("ip", "netns", "add", self.switch)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.switch)
        sh("ip", "link", "set", "br0", "up", ns=self.switch)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, mac: str, *cidrs: str) -> Host:
        """A namespace ``<tag>-<name>`` with ``eth0`` (``mac``, ``cidrs``) on the bridge."""
        ns = f"{self.tag}-{name}"
        idx = self.made
        self.made += 1
        a, b = f"{self.tag}a{idx}", f"{self.tag}b{idx}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", ns)
        sh("ip", "link", "set", b, "netns", self.switch)
        sh("ip", "link", "set", a, "name", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "address", mac, ns=ns)
        sh("ip", "link", "set", b, "master", "br0", ns=self.switch)
        sh("ip", "link", "set", b, "up", ns=self.switch)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        for c in cidrs:
            sh("ip", "addr", "add", c, "dev", "eth0", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        host = Host(self, ns, mac, [c.split("/")[0] for c in cidrs])
        self.hosts[name] = host
        return host

    def remove(self, name: str) -> None:
        """Unplug and delete a host."""
        host = self.hosts.pop(name)
        sh("ip", "netns", "del", host.ns, check=False)

    def close(self) -> None:
        """Delete every namespace of this lab."""
        for host in list(self.hosts.values()):
            sh("ip", "netns", "del", host.ns, check=False)
        self.hosts.clear()
        sh("ip", "netns", "del", self.switch, check=False)


def leftover_namespaces(include_own: bool = False) -> list[str]:
    """Test namespaces whose making process is gone (or, with ``include_own``, this process's too).

    Another test run going on at the same time keeps its namespaces.
    """
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]
    return [n for n in names if _maker_gone(n) or (include_own and _maker(n) == os.getpid())]


def _maker(name: str) -> int:
    try:
        return int(name[len(PREFIX):len(PREFIX) + 7], 16)
    except ValueError:
        return -1


def _maker_gone(name: str) -> bool:
    pid = _maker(name)
    return pid <= 0 or not Path(f"/proc/{pid}").exists()
