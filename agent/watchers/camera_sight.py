"""Can the agent see the LAN at all? The gateway and the recorders as witnesses.

When the exam server's own cable or switch port fails, every camera looks dead. Blaming the cameras
would open false cases against the venue, so before a camera fault is believed the agent checks
its witnesses: the configured gateway (ICMP echo, or a TCP connect where ``gateway_port`` is set;
a refusal counts as seen) and every registered recorder (TCP connect to its HTTP port; a refusal
counts as seen). When every witness is unreachable the agent is *blind*: ``agent.blind`` once
per episode, camera judgements frozen, then ``agent.sight_restored``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from agent.watchers.isolation import Target, probe

Probe = Callable[[Target, float], dict[str, Any]]


def witnesses(gateway: str, gateway_port: int, recorders: list[tuple[str, int]]) -> list[Target]:
    """The targets to check: the gateway, then each recorder's HTTP port."""
    out = []
    if gateway:
        out.append(Target(f"tcp:{gateway}:{gateway_port}", "tcp", gateway, gateway_port) if gateway_port
                   else Target(f"icmp:{gateway}", "icmp", gateway))
    out += [Target(f"tcp:{ip}:{port}", "tcp", ip, port) for ip, port in recorders]
    return out


class Sight:
    """The latest witness check, shared by the probe threads; a check runs once for all waiters."""

    def __init__(self, timeout: float, check: Probe = probe) -> None:
        self.timeout, self._check = timeout, check
        self._lock = threading.Lock()
        self.checked_at = 0.0
        self.blind: dict[str, Any] | None = None

    def ensure(self, targets: list[Target], after: float) -> dict[str, Any] | None:
        """The blindness (None: sees) as of a check started no earlier than ``after``."""
        with self._lock:
            if self.checked_at < after:
                self._run(targets)
            return self.blind

    def _run(self, targets: list[Target]) -> None:
        started = time.time()
        if not targets:
            self.checked_at, self.blind = started, None
            return
        with ThreadPoolExecutor(max_workers=min(len(targets), 8)) as pool:
            results = list(pool.map(lambda t: self._check(t, self.timeout), targets))
        self.checked_at = started
        if any(r["reachable"] for r in results):
            self.blind = None
        elif self.blind is None:
            self.blind = {"since": round(started, 3), "witnesses": [{k: r[k] for k in ("target", "how")} for r in results]}
