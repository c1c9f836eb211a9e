"""Isolation probe: can the exam server reach networks it must be cut off from?

粤应急规〔2023〕3号 二(四) requires the exam LAN to be 「与办公网等其他网络保持物理隔离」. The venue
configures a few forbidden targets (the office gateway, an Internet address); the probe tries
exactly those, never scans. Any answer proves a path: a completed TCP connect, a TCP reset
("connection refused": something on the far side answered) or an ICMP echo reply. A timeout or an
unreachable error means isolated.

Events: ``isolation.breached`` when a target becomes reachable (also on the very first probe),
``isolation.restored`` when it becomes unreachable again; the view goes out as
``isolation.snapshot``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

Result = dict[str, Any]
"""``{"target", "method", "reachable", "how", "rtt_ms"}``"""

_TCP_RE = re.compile(r"^tcp:(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})$")
_ICMP_RE = re.compile(r"^icmp:(?P<host>[A-Za-z0-9.-]+)$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


@dataclass(frozen=True)
class Target:
    """One configured forbidden target."""

    spec: str
    method: str  # "tcp" or "icmp"
    host: str
    port: int | None = None


def parse_target(spec: str) -> Target:
    """``tcp:HOST:PORT`` (``tcp:[v6]:PORT``) or ``icmp:HOST`` (IPv4); ValueError names the entry."""
    bad = ValueError(f"option watchers.isolation.targets: {spec!r} is not tcp:HOST:PORT or icmp:HOST")
    if m := _TCP_RE.match(spec):
        host, port = m["v6"] or m["host"], int(m["port"])
        if not 0 < port < 65536 or not _valid_host(host, v6=bool(m["v6"])):
            raise bad
        return Target(spec, "tcp", host, port)
    if m := _ICMP_RE.match(spec):
        if not _valid_host(m["host"], v6=False):
            raise bad
        return Target(spec, "icmp", m["host"])
    raise bad


def _valid_host(host: str, v6: bool) -> bool:
    """An IP literal (IPv6 only inside brackets) or a syntactically valid hostname with a letter."""
    try:
        return ipaddress.ip_address(host).version == (6 if v6 else 4)
    except ValueError:
        return not v6 and bool(_HOSTNAME_RE.match(host)) and any(c.isalpha() for c in host)


def probe_tcp(target: Target, timeout: float) -> Result:
    """Connect once; connected or refused = reachable, timeout or unreachable = isolated."""
    start = time.monotonic()
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            how, reachable = "connected", True
    except ConnectionRefusedError:
        how, reachable = "refused", True
    except socket.timeout:
        how, reachable = "timeout", False
    except socket.gaierror:
        how, reachable = "unresolved", False
    except OSError as exc:  # EHOSTUNREACH, ENETUNREACH, …: no path
        how, reachable = _errno_name(exc), False
    return _result(target, reachable, how, start)


def probe_icmp(target: Target, timeout: float) -> Result:
    """One ICMP echo on a raw socket (needs root or CAP_NET_RAW); a matching reply = reachable."""
    start = time.monotonic()
    try:
        addr = socket.gethostbyname(target.host)
    except socket.gaierror:
        return _result(target, False, "unresolved", start)
    ident, seq = os.getpid() & 0xFFFF, int(start * 1000) & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        try:
            sock.sendto(_echo_request(ident, seq), (addr, 0))
        except OSError as exc:  # ENETUNREACH: no route at all
            return _result(target, False, _errno_name(exc), start)
        reachable = _await_reply(sock, addr, ident, seq, start + timeout)
    return _result(target, reachable, "echo-reply" if reachable else "timeout", start)


def _echo_request(ident: int, seq: int) -> bytes:
    """An ICMP echo request with a short fixed payload and a correct checksum."""
    payload = b"venueguard-isolation"
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, seq) + payload


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _await_reply(sock: socket.socket, addr: str, ident: int, seq: int, deadline: float) -> bool:
    """Read ICMP until our echo reply from ``addr`` arrives or the deadline passes.

    A raw socket sees every ICMP packet of the namespace, so replies to other pings are skipped.
    """
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, (src, _) = sock.recvfrom(2048)
        except socket.timeout:
            return False
        except OSError:  # an ICMP error for our probe (host unreachable): no path
            return False
        ihl = (packet[0] & 0x0F) * 4
        kind, _, _, r_ident, r_seq = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
        if src == addr and kind == ICMP_ECHO_REPLY and (r_ident, r_seq) == (ident, seq):
            return True
    return False


def _errno_name(exc: OSError) -> str:
    """``"EHOSTUNREACH"`` etc.: short, stable, readable in an event."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _result(target: Target, reachable: bool, how: str, start: float) -> Result:
    rtt = round((time.monotonic() - start) * 1000, 1) if reachable else None
    return {"target": target.spec, "method": target.method, "reachable": reachable, "how": how, "rtt_ms": rtt}


def probe(target: Target, timeout: float) -> Result:
    """Probe one target with its method."""
    return probe_tcp(target, timeout) if target.method == "tcp" else probe_icmp(target, timeout)


@dataclass(frozen=True)
class IsolationView:
    """Each target's last probe result, keyed by the target as configured."""

    targets: dict[str, Result]

    def to_json(self) -> dict[str, Any]:
        """JSON form (also the snapshot payload)."""
        return {"targets": self.targets}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "IsolationView":
        """The inverse of :meth:`to_json` (a view read in another process or namespace)."""
        return cls(doc["targets"])

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Breached when a target turns reachable (or is so at first), restored when it stops."""
        old: dict[str, Result] = before.get("targets", {})
        events = []
        for spec, now in sorted(self.targets.items()):
            was = old.get(spec, {}).get("reachable", False)
            if now["reachable"] and not was:
                events.append(("isolation.breached", _event_data(now)))
            elif was and not now["reachable"]:
                events.append(("isolation.restored", _event_data(now)))
        return events


def _event_data(result: Result) -> dict[str, Any]:
    return {k: result[k] for k in ("target", "method", "how", "rtt_ms")}


@dataclass
class IsolationWatcher:
    """Probes the configured forbidden targets; ``probe`` is injectable like Telegraf's ping."""

    targets: list[str] = field(default_factory=list)
    interval: float = 60.0
    timeout: float = 3.0
    probe: Callable[[Target, float], Result] = probe
    name: str = "isolation"

    def init(self) -> None:
        """Validate options; every target must parse, so a typo never silently disables a probe."""
        if self.interval <= 0:
            raise ValueError("option watchers.isolation.interval must be > 0")
        if not 0 < self.timeout <= self.interval:
            raise ValueError("option watchers.isolation.timeout must be > 0 and <= interval")
        if not self.targets:
            raise ValueError("option watchers.isolation.targets: no targets (disable the watcher instead)")
        for spec in self.targets:
            parse_target(spec)

    def collect(self) -> IsolationView:
        """Probe every target in parallel, so N targets take one timeout, not N."""
        parsed = [parse_target(s) for s in self.targets]
        with ThreadPoolExecutor(max_workers=min(len(parsed), 16) or 1) as pool:
            results = list(pool.map(lambda t: self.probe(t, self.timeout), parsed))
        return IsolationView({r["target"]: r for r in results})
