"""Isolation probe against a real "office gateway" namespace on the test LAN (needs root).

Probes run inside the exam server's namespace and target 192.0.2.254 only, so no packet leaves
the namespaces made here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import Outbox
from agent.state import State
from agent.watchers.isolation import IsolationView, IsolationWatcher, Target, parse_target
from tests.netns import Host, Lab
from tests.support import wait_for

OFFICE = "192.0.2.254"
Events = list[tuple[str, dict[str, Any]]]

_SNIPPET = """
import json, sys
from agent.watchers.isolation import IsolationWatcher
w = IsolationWatcher(targets=json.loads(sys.argv[1]), interval=5, timeout=1)
w.init()
print(json.dumps(w.collect().to_json()))
"""


def _probe_in(host: Host, *targets: str) -> IsolationView:
    """One collect of the real probes inside ``host``'s namespace."""
    cmd = ["ip", "netns", "exec", host.ns, sys.executable, "-c", _SNIPPET, json.dumps(list(targets))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr
    return IsolationView.from_json(json.loads(proc.stdout))


class _Edges:
    """The agent's real State: feeds views in and returns the edge events (snapshots left out)."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = State(Outbox(tmp_path / "o.sqlite3"), snapshot_interval=3600)
        self.now = 0.0

    def __call__(self, view: IsolationView) -> Events:
        self.now += 1
        return [(p.kind, p.data) for p in self.state.observe("isolation", view, now=self.now)
                if p.kind != "isolation.snapshot"]


def _lan(lab: Lab) -> tuple[Host, Host]:
    """The exam server at 192.0.2.1 and an office gateway at 192.0.2.254 on one bridge."""
    return lab.add("srv", "02:00:00:00:0c:01", "192.0.2.1/24"), lab.add("office", "02:00:00:00:0c:fe", f"{OFFICE}/24")


def test_tcp_target_breached_then_restored(lab: Lab, tmp_path: Path) -> None:
    """A listening office port is ``breached`` (connected) at the first probe; once the listener stops
    the port answers with RST ("refused"): still reachable, so no event; when the office host is gone
    the probe times out and ``restored`` follows."""
    srv, office = _lan(lab)
    edges, target = _Edges(tmp_path), f"tcp:{OFFICE}:8443"
    server = office.popen(sys.executable, "-m", "http.server", "8443", "--bind", OFFICE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: f"{OFFICE}:8443 " in office.sh("ss", "-Hltn").stdout, timeout=10, what="office listener")
        (kind, data), = edges(_probe_in(srv, target))
        assert (kind, data["target"], data["method"], data["how"]) == ("isolation.breached", target, "tcp", "connected")
        assert data["rtt_ms"] >= 0
    finally:
        server.kill()
        server.wait()
    view = _probe_in(srv, target)
    assert view.targets[target]["how"] == "refused"
    assert edges(view) == []
    lab.remove("office")
    (kind, data), = edges(_probe_in(srv, target))
    assert (kind, data["target"], data["rtt_ms"]) == ("isolation.restored", target, None)
    assert data["how"] in ("timeout", "EHOSTUNREACH")


def test_icmp_target_breached_then_restored(lab: Lab, tmp_path: Path) -> None:
    """An office host answering ping is ``breached`` (echo-reply); an absent address on the same LAN
    never is; deleting the office host gives ``restored``."""
    srv, _ = _lan(lab)
    edges, target, absent = _Edges(tmp_path), f"icmp:{OFFICE}", "icmp:192.0.2.77"
    assert edges(_probe_in(srv, target, absent)) == [
        ("isolation.breached", {"target": target, "method": "icmp", "how": "echo-reply",
                                "rtt_ms": pytest.approx(0, abs=1000)})]
    assert edges(_probe_in(srv, target, absent)) == []
    lab.remove("office")
    assert edges(_probe_in(srv, target, absent)) == [
        ("isolation.restored", {"target": target, "method": "icmp", "how": "timeout", "rtt_ms": None})]


def test_isolated_from_the_start_gives_no_event(tmp_path: Path) -> None:
    """A target that never answers produces only snapshots, never a breach (no noise)."""
    w = IsolationWatcher(targets=["tcp:192.0.2.99:443"], probe=lambda t, _: {
        "target": t.spec, "method": t.method, "reachable": False, "how": "timeout", "rtt_ms": None})
    edges = _Edges(tmp_path)
    assert edges(w.collect()) == [] and edges(w.collect()) == []


@pytest.mark.parametrize("spec", [
    "tcp:foo", "tcp:192.0.2.5", "tcp:192.0.2.5:0", "tcp:192.0.2.5:65536", "tcp:192.0.2.5:80-90",
    "tcp:2001:db8::1:443", "udp:192.0.2.5:53", "icmp:", "icmp:2001:db8::1", "icmp:192.0.2.0/24",
    "icmp:192.0.2.300", "tcp:-bad-:80", "192.0.2.5",
])
def test_bad_targets_are_rejected_naming_option_and_entry(spec: str) -> None:
    """init() rejects a malformed target with the option name and the entry, so nothing is scanned."""
    with pytest.raises(ValueError) as exc:
        IsolationWatcher(targets=["icmp:192.0.2.1", spec]).init()
    assert str(exc.value) == f"option watchers.isolation.targets: {spec!r} is not tcp:HOST:PORT or icmp:HOST"


def test_good_targets_parse() -> None:
    """IPv4, bracketed IPv6 and host names are accepted in the documented forms."""
    assert parse_target("tcp:203.0.113.5:443") == Target("tcp:203.0.113.5:443", "tcp", "203.0.113.5", 443)
    assert parse_target("tcp:[2001:db8::1]:22").host == "2001:db8::1"
    assert parse_target("icmp:gw.office.example") == Target("icmp:gw.office.example", "icmp", "gw.office.example")


@pytest.mark.parametrize(("opts", "message"), [
    ({"targets": []}, "option watchers.isolation.targets: no targets (disable the watcher instead)"),
    ({"interval": 0}, "option watchers.isolation.interval must be > 0"),
    ({"timeout": 0}, "option watchers.isolation.timeout must be > 0 and <= interval"),
    ({"timeout": 90, "interval": 60}, "option watchers.isolation.timeout must be > 0 and <= interval"),
])
def test_interval_timeout_and_empty_targets_are_validated(opts: dict[str, Any], message: str) -> None:
    """init() names the bad option."""
    with pytest.raises(ValueError) as exc:
        IsolationWatcher(**{"targets": ["icmp:192.0.2.1"], **opts}).init()
    assert str(exc.value) == message
