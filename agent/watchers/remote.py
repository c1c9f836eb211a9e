"""Remote-control and tunnelling programs, and listeners on remote-access ports (psutil).

粤应急规〔2023〕3号 二(四) forbids 「远程控制、有线或无线接入等手段」 on the exam network. Such
access shows on the exam server as a running program (TeamViewer, 向日葵, frpc, …) or as a socket
listening on a remote-access port (RDP, VNC, …). The list of programs is data
(``agent/data/remote_tools.json``) so it can be reviewed and extended without touching code.

The readers here only read; the matching functions are pure, so the host watcher can inject the
readers (Telegraf's ping style) and tests can drive the matching with real or recorded readings.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

Fact = dict[str, Any]
"""One condition's data, as it goes into an event."""

#: Ports forbidden whatever the data file says: RDP, VNC displays :0–:6, TeamViewer, AnyDesk.
BASE_TCP_PORTS = frozenset({3389, *range(5900, 5907), 5938, 7070})
BASE_UDP_PORTS = frozenset({3389})
SSH_PORT = 22
CMDLINE_MAX = 256  # enough to show the tool's arguments; a full cmdline may carry secrets


@dataclass(frozen=True)
class Tool:
    """One forbidden program from the data file."""

    id: str
    name: str
    category: str
    processes: tuple[str, ...]
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]


def load_tools(path: Path | None = None) -> tuple[Tool, ...]:
    """The packaged tool list (or ``path``); ValueError names the bad entry so a bad edit is loud."""
    if path is None:
        return _packaged_tools()
    return _parse_tools(path.read_text(encoding="utf-8"), str(path))


@lru_cache(maxsize=1)
def _packaged_tools() -> tuple[Tool, ...]:
    """Read the packaged file once per process; it cannot change while the agent runs."""
    text = resources.files("agent").joinpath("data/remote_tools.json").read_text(encoding="utf-8")
    return _parse_tools(text, "agent/data/remote_tools.json")


def _parse_tools(text: str, where: str) -> tuple[Tool, ...]:
    """Parse the data file's ``tools`` list, checking every field."""
    tools = []
    for i, t in enumerate(json.loads(text)["tools"]):
        try:
            ports = t.get("ports", {})
            tool = Tool(str(t["id"]), str(t["name"]), str(t["category"]),
                        tuple(p.lower() for p in t["processes"]),
                        tuple(int(p) for p in ports.get("tcp", [])), tuple(int(p) for p in ports.get("udp", [])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{where}: tools[{i}] is malformed: {exc!r}") from exc
        if not tool.processes or not all(0 < p < 65536 for p in tool.tcp_ports + tool.udp_ports):
            raise ValueError(f"{where}: tools[{i}] ({tool.id}) needs process patterns and ports in 1..65535")
        tools.append(tool)
    return tuple(tools)


def read_processes() -> list[Fact]:
    """Every process's pid, name, exe and cmdline (None where the OS denies access)."""
    out = []
    for p in psutil.process_iter(["pid", "name", "exe", "cmdline"]):
        info = p.info
        out.append({"pid": info["pid"], "name": info.get("name") or "", "exe": info.get("exe") or "",
                    "cmdline": info.get("cmdline") or []})
    return out


def read_listeners() -> list[Fact]:
    """Sockets that accept traffic: TCP in LISTEN, UDP bound without a peer; with owning pid/name."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        tcp = c.type == socket.SOCK_STREAM
        if (tcp and c.status != psutil.CONN_LISTEN) or (not tcp and c.raddr) or not c.laddr:
            continue
        out.append({"protocol": "tcp" if tcp else "udp", "address": c.laddr.ip, "port": c.laddr.port,
                    "pid": c.pid, "process": _process_name(c.pid)})
    return out


def _process_name(pid: int | None) -> str | None:
    """The owner's name, or None when unknown (no pid without root, or the process just exited)."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None


def _candidates(proc: Fact) -> set[str]:
    """Lower-case names a pattern may match: process name and exe basename, with and without .exe."""
    names = {proc["name"].lower(), os.path.basename(proc["exe"].replace("\\", "/")).lower()} - {""}
    return names | {n[:-4] for n in names if n.endswith(".exe")}


def match_tool(proc: Fact, tools: tuple[Tool, ...]) -> Tool | None:
    """The first tool whose pattern matches this process, if any."""
    names = _candidates(proc)
    for tool in tools:
        if any(fnmatch.fnmatchcase(n, pat) for pat in tool.processes for n in names):
            return tool
    return None


def remote_tools(procs: list[Fact], tools: tuple[Tool, ...]) -> dict[str, Fact]:
    """Running forbidden programs keyed by (tool, exe or name), so a restart is the same episode."""
    found: dict[str, Fact] = {}
    for proc in sorted(procs, key=lambda p: p["pid"]):
        tool = match_tool(proc, tools)
        if tool is None:
            continue
        key = f"{tool.id}|{proc['exe'] or proc['name']}"
        if key in found:
            found[key]["pids"].append(proc["pid"])
            continue
        cmdline = " ".join(proc["cmdline"])
        found[key] = {"tool": tool.id, "tool_name": tool.name, "category": tool.category, "pid": proc["pid"],
                      "pids": [proc["pid"]], "name": proc["name"], "exe": proc["exe"],
                      "cmdline": cmdline[:CMDLINE_MAX] + ("…" if len(cmdline) > CMDLINE_MAX else "")}
    return found


def forbidden_ports(tools: tuple[Tool, ...], extra: list[int], forbid_ssh: bool) -> dict[str, frozenset[int]]:
    """``{"tcp": ports, "udp": ports}``: the base set, the data file's ports and the configured ones."""
    tcp = set(BASE_TCP_PORTS) | set(extra) | ({SSH_PORT} if forbid_ssh else set())
    udp = set(BASE_UDP_PORTS)
    for tool in tools:
        tcp.update(tool.tcp_ports)
        udp.update(tool.udp_ports)
    return {"tcp": frozenset(tcp), "udp": frozenset(udp)}


def remote_listeners(socks: list[Fact], ports: dict[str, frozenset[int]]) -> dict[str, Fact]:
    """Listeners on forbidden ports, keyed by protocol, address and port (not by pid)."""
    found: dict[str, Fact] = {}
    for s in socks:
        if s["port"] in ports.get(s["protocol"], frozenset()):
            found[f"{s['protocol']}|{s['address']}|{s['port']}"] = dict(s)
    return found
