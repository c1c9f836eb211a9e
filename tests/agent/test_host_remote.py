"""Host watcher isolation checks with the real readers: wireless NICs, outside routes, remote tools
and listeners, the registered address. Network readings run inside a namespace of the test LAN,
so this machine's own interfaces, routes and sockets are never touched (needs root)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.outbox import Outbox
from agent.state import State
from agent.watchers.host import HostView, HostWatcher
from agent.watchers.remote import load_tools, match_tool
from tests.netns import Host, Lab
from tests.support import wait_for

MAC = "02:00:00:00:0b:01"
Events = list[tuple[str, dict[str, Any]]]

_SNIPPET = """
import json, sys
from agent.watchers.host import HostWatcher
from protocol.inventory import Inventory
opts = json.loads(sys.argv[1])
inv = opts.pop("inventory", None)
w = HostWatcher(**opts, inventory=lambda: Inventory.from_json(inv) if inv else None)
w.init()
print(json.dumps(w.collect().to_json()))
"""


def _collect_in(host: Host, **opts: Any) -> HostView:
    """One collect with the real readers inside ``host``'s namespace."""
    cmd = ["ip", "netns", "exec", host.ns, sys.executable, "-c", _SNIPPET, json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return HostView.from_json(json.loads(proc.stdout))


class _Edges:
    """The agent's real State: feeds views in and returns the edge events (snapshots left out)."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = State(Outbox(tmp_path / "o.sqlite3"), snapshot_interval=3600)
        self.now = 0.0

    def __call__(self, view: HostView) -> Events:
        self.now += 1
        return [(p.kind, p.data) for p in self.state.observe("host", view, now=self.now) if p.kind != "host.snapshot"]


def _server(lab: Lab) -> Host:
    """The exam server's namespace, IPv6 off so late link-local addresses cannot add events."""
    srv = lab.add("srv", MAC, "192.0.2.1/24")
    srv.sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    return srv


def _add_link(srv: Host, name: str) -> None:
    """A dummy NIC; kernels built without the dummy driver get an ifb device (equally inert)."""
    if srv.sh("ip", "link", "add", name, "type", "dummy", check=False).returncode != 0:
        srv.sh("ip", "link", "add", name, "type", "ifb")


def test_dummy_interface_and_wireless_by_name(lab: Lab, tmp_path: Path) -> None:
    """A dummy NIC is only ``interface_added``; one named wlan0 is also ``wireless_present`` (evidence
    "name"), and deleting it ends the episode with ``wireless_gone``."""
    srv, edges = _server(lab), _Edges(tmp_path)
    assert edges(_collect_in(srv)) == []
    _add_link(srv, "dum0")
    assert [(k, d["interface"]) for k, d in edges(_collect_in(srv))] == [("host.interface_added", "dum0")]
    _add_link(srv, "wlan0")
    added, present = edges(_collect_in(srv))
    assert added == ("host.interface_added", {"interface": "wlan0", "after": added[1]["after"]})
    assert present == ("host.wireless_present",
                       {"interface": "wlan0", "mac": added[1]["after"]["mac"], "up": False, "evidence": "name"})
    assert edges(_collect_in(srv)) == []
    srv.sh("ip", "link", "del", "wlan0")
    assert [k for k, _ in edges(_collect_in(srv))] == ["host.interface_removed", "host.wireless_gone"]


def test_wireless_by_sysfs_on_every_interface(tmp_path: Path) -> None:
    """sysfs ``wireless``/``phy80211`` is strong evidence whatever the name, and an ``include``
    filter cannot hide a Wi-Fi card."""
    for name, marker in (("radio0", "wireless"), ("wlp3s0", "phy80211")):
        (tmp_path / name / marker).mkdir(parents=True)
    nic = {"mac": "02:00:00:00:0b:09", "up": True, "addrs": []}
    w = HostWatcher(include=["eth0"], sys_net=tmp_path, read=lambda: {"eth0": nic, "radio0": nic, "wlp3s0": nic},
                    read_processes=list, read_listeners=list)
    view = w.collect()
    assert list(view.interfaces) == ["eth0"]
    assert {n: f["evidence"] for n, f in view.wireless.items()} == {"radio0": "sysfs", "wlp3s0": "sysfs"}


def test_routes_outside_the_exam_subnets(lab: Lab, tmp_path: Path) -> None:
    """With exam_subnets 192.0.2.0/24, a route to 203.0.113.0/24 and a default route are each one
    ``route_outside`` (read from /proc/net/route); deleting them gives ``route_outside_gone``."""
    srv, edges = _server(lab), _Edges(tmp_path)
    opts = {"exam_subnets": ["192.0.2.0/24"]}
    assert edges(_collect_in(srv, **opts)) == []
    srv.sh("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.254", "dev", "eth0")
    assert edges(_collect_in(srv, **opts)) == [
        ("host.route_outside", {"destination": "203.0.113.0/24", "gateway": "192.0.2.254", "interface": "eth0"})]
    srv.sh("ip", "route", "add", "default", "via", "192.0.2.254", "dev", "eth0")
    assert edges(_collect_in(srv, **opts)) == [
        ("host.route_outside", {"destination": "0.0.0.0/0", "gateway": "192.0.2.254", "interface": "eth0"})]
    srv.sh("ip", "route", "del", "default")
    srv.sh("ip", "route", "del", "203.0.113.0/24")
    assert [(k, d["destination"]) for k, d in edges(_collect_in(srv, **opts))] == [
        ("host.route_outside_gone", "0.0.0.0/0"), ("host.route_outside_gone", "203.0.113.0/24")]
    assert _collect_in(srv).routes_outside == {}  # no exam subnets configured: the check is off


def _listen(srv: Host, port: int) -> subprocess.Popen[bytes]:
    """A real TCP listener on 192.0.2.1:``port`` inside the namespace."""
    proc = srv.popen(sys.executable, "-m", "http.server", str(port), "--bind", "192.0.2.1",
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: f"192.0.2.1:{port} " in srv.sh("ss", "-Hltn").stdout, timeout=10, what=f"listener on {port}")
    return proc


def test_listener_on_vnc_port(lab: Lab, tmp_path: Path) -> None:
    """A socket listening on 5900 is one ``remote_listener`` naming port, address, pid and process;
    stopping it gives ``remote_listener_gone``."""
    srv, edges = _server(lab), _Edges(tmp_path)
    assert edges(_collect_in(srv)) == []
    proc = _listen(srv, 5900)
    try:
        name = psutil.Process(proc.pid).name()
        assert edges(_collect_in(srv)) == [("host.remote_listener", {
            "protocol": "tcp", "address": "192.0.2.1", "port": 5900, "pid": proc.pid, "process": name})]
        assert edges(_collect_in(srv)) == []
    finally:
        proc.kill()
        proc.wait()
    assert [(k, d["port"]) for k, d in edges(_collect_in(srv))] == [("host.remote_listener_gone", 5900)]


def test_ssh_and_configured_ports_only_when_configured(lab: Lab) -> None:
    """Port 22 counts only with forbid_ssh, other ports only when listed in forbidden_ports."""
    srv = _server(lab)
    procs = [_listen(srv, 22), _listen(srv, 8022)]
    try:
        assert _collect_in(srv).remote_listeners == {}
        view = _collect_in(srv, forbid_ssh=True, forbidden_ports=[8022])
        assert sorted(f["port"] for f in view.remote_listeners.values()) == [22, 8022]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _start(exe: Path) -> subprocess.Popen[bytes]:
    """Run a copy of sleep under a tool's name and wait until psutil sees it under that name."""
    proc = subprocess.Popen([str(exe), "60"])
    wait_for(lambda: psutil.Process(proc.pid).exe() == str(exe), timeout=10, what="exec of the tool copy")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: a zombie would still be listed under its name


def test_remote_tool_process_episode(tmp_path: Path) -> None:
    """/bin/sleep copied as ``frpc`` is one ``remote_tool`` (tool, exe, pid); a restart of the same
    exe is the same episode (no event, new pid in the view); killing it gives ``remote_tool_gone``.
    Processes are host-wide, so this runs without a namespace; other readers are switched off."""
    exe = tmp_path / "bin" / "frpc"
    exe.parent.mkdir()
    shutil.copy("/bin/sleep", exe)
    w = HostWatcher(read=dict, read_listeners=list)
    edges = _Edges(tmp_path)
    edges(w.collect())  # baseline: whatever else this machine runs
    proc = _start(exe)
    try:
        assert edges(w.collect()) == [("host.remote_tool", {
            "tool": "frp", "tool_name": "frp (frpc/frps)", "category": "tunnel", "pid": proc.pid,
            "pids": [proc.pid], "name": "frpc", "exe": str(exe), "cmdline": f"{exe} 60"})]
        _stop(proc)
        proc = _start(exe)
        view = w.collect()
        assert edges(view) == []
        assert view.remote_tools[f"frp|{exe}"]["pid"] == proc.pid
    finally:
        _stop(proc)
    assert [(k, d["exe"]) for k, d in edges(w.collect())] == [("host.remote_tool_gone", str(exe))]


def test_condition_present_at_first_run_is_reported(tmp_path: Path) -> None:
    """At the very first observation, conditions already present are events (the violation is their
    presence), while interfaces are only in the snapshot (nothing to compare them with)."""
    eth = {"mac": MAC, "up": True, "addrs": ["192.0.2.1/24"]}
    proc = {"pid": 42, "name": "ToDesk.exe", "exe": r"C:\Program Files\ToDesk\ToDesk.exe", "cmdline": []}
    w = HostWatcher(read=lambda: {"eth0": eth}, read_processes=lambda: [proc], read_listeners=list)
    events = _Edges(tmp_path)(w.collect())
    assert [(k, d["tool"]) for k, d in events] == [("host.remote_tool", "todesk")]


def test_registered_address_changed_and_restored(lab: Lab, tmp_path: Path) -> None:
    """eth0's MAC is registered at 192.0.2.1: moving to 192.0.2.9 gives ``registered_address_changed``
    with the inventory entry (beside ``address_changed``); moving back gives ``_restored``."""
    srv, edges = _server(lab), _Edges(tmp_path)
    entry = {"mac": MAC, "ip": "192.0.2.1", "role": "exam_server", "room": "101", "name": "srv",
             "vendor": "", "stream": "", "http_port": 0, "channel": 0}
    opts = {"inventory": {"venue_id": "GZ-T01", "version": 3, "devices": [entry]}}
    assert edges(_collect_in(srv, **opts)) == []
    srv.set_ip("192.0.2.9/24")
    (k1, _), changed = edges(_collect_in(srv, **opts))
    assert k1 == "host.address_changed"
    assert changed == ("host.registered_address_changed", {
        "interface": "eth0", "mac": MAC, "registered_ip": "192.0.2.1", "addrs": ["192.0.2.9/24"], "entry": entry,
        "inventory_version": 3})
    assert edges(_collect_in(srv, **opts)) == []
    srv.set_ip("192.0.2.1/24")
    (k1, _), (k2, restored) = edges(_collect_in(srv, **opts))
    assert (k1, k2) == ("host.address_changed", "host.registered_address_restored")
    assert restored["now_addrs"] == ["192.0.2.1/24"] and restored["entry"] == entry
    srv.set_ip("192.0.2.9/24")
    assert _collect_in(srv).registered_mismatch == {}  # no inventory yet: no check


def test_tool_list_matches_windows_and_linux_names_only() -> None:
    """The packaged list has unique ids, covers the named tools, matches .exe names and exe paths
    case-insensitively, and does not match ordinary system programs."""
    tools = load_tools()
    ids = [t.id for t in tools]
    assert len(ids) == len(set(ids))
    assert {"teamviewer", "anydesk", "todesk", "sunlogin", "rustdesk", "vnc", "radmin", "frp", "ngrok", "nps",
            "cloudflared", "zerotier", "tailscale", "parsec", "splashtop", "chrome_remote_desktop", "nomachine"} <= set(ids)

    def tool(name: str, exe: str = "") -> str | None:
        found = match_tool({"name": name, "exe": exe, "pid": 1, "cmdline": []}, tools)
        return found.id if found else None

    assert tool("SunloginClient.exe") == "sunlogin"
    assert tool("svc", r"C:\Program Files\TeamViewer\TeamViewer_Service.exe") == "teamviewer"
    assert tool("Xtigervnc") == tool("tvnserver.exe") == tool("winvnc.exe") == "vnc"
    assert tool("cloudflared", "/usr/local/bin/cloudflared") == "cloudflared"
    for ordinary in ("sshd", "python3", "systemd", "msedge.exe", "explorer.exe", "chrome", "nginx", "npm", "snapd"):
        assert tool(ordinary) is None, ordinary


@pytest.mark.parametrize(("opts", "message"), [
    ({"exam_subnets": ["192.0.2.0/33"]}, "option watchers.host.exam_subnets: '192.0.2.0/33' is not an IPv4 CIDR"),
    ({"forbidden_ports": [0]}, "option watchers.host.forbidden_ports: 0 is not a port in 1..65535"),
    ({"interval": 0}, "option watchers.host.interval must be > 0"),
])
def test_host_options_are_validated(opts: dict[str, Any], message: str) -> None:
    """init() names the bad option and value."""
    with pytest.raises(ValueError) as exc:
        HostWatcher(**opts).init()
    assert str(exc.value).startswith(message)
