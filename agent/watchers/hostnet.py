"""Ways off the exam LAN seen on the host itself: wireless NICs, outside routes, a moved address.

The exam network must be a separate LAN, physically isolated from the office network
(粤应急规〔2023〕3号 二(四)); a Wi-Fi card, or a route to a network that is not an exam subnet, is a
path around that isolation. A registered exam server that no longer carries its registered IP
matches 三(二)5 「擅自变更考场有关设备 IP 地址」.

Readers read (``/proc/net/route``, ``/sys/class/net``); the rest are pure functions over readings.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

from protocol.inventory import Inventory

Fact = dict[str, Any]

SYS_NET = Path("/sys/class/net")
PROC_ROUTE = Path("/proc/net/route")
RTF_UP = 0x0001
#: Names that suggest Wi-Fi when sysfs cannot say (other OSes, drivers without cfg80211): Linux
#: wl*/wlan*/wlp*, and Windows' "Wi-Fi", "WLAN", "无线网络连接".
WIRELESS_NAMES = ("wl*", "wi-fi*", "wifi*", "*wireless*", "无线*")


def wireless_evidence(name: str, sys_net: Path = SYS_NET) -> str | None:
    """``"sysfs"`` when the kernel says the interface is 802.11, ``"name"`` when only its name does."""
    if (sys_net / name / "wireless").exists() or (sys_net / name / "phy80211").exists():
        return "sysfs"
    if any(fnmatch.fnmatchcase(name.lower(), pat) for pat in WIRELESS_NAMES):
        return "name"
    return None


def wireless(interfaces: dict[str, Fact], sys_net: Path = SYS_NET) -> dict[str, Fact]:
    """Wireless interfaces keyed by name, with the evidence for calling them wireless."""
    found = {}
    for name, info in sorted(interfaces.items()):
        evidence = wireless_evidence(name, sys_net)
        if evidence:
            found[name] = {"interface": name, "mac": info.get("mac", ""), "up": info.get("up", False),
                           "evidence": evidence}
    return found


def read_routes(path: Path = PROC_ROUTE) -> list[Fact]:
    """IPv4 routes that are up, from the kernel's main table (``/proc/net/route``), default included."""
    routes = []
    for line in path.read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or not int(cols[3], 16) & RTF_UP:
            continue
        dest, gateway, mask = (_hex_ip(cols[i]) for i in (1, 2, 7))
        prefix = ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
        routes.append({"destination": f"{dest}/{prefix}", "gateway": gateway if gateway != "0.0.0.0" else None,
                       "interface": cols[0]})
    return routes


def _hex_ip(text: str) -> str:
    """``/proc/net/route`` writes addresses as host-order (little-endian) hex."""
    return socket.inet_ntoa(struct.pack("<L", int(text, 16)))


def parse_subnets(subnets: list[str]) -> list[ipaddress.IPv4Network]:
    """Exam subnets as networks; ValueError names the bad entry."""
    nets = []
    for s in subnets:
        try:
            nets.append(ipaddress.IPv4Network(s, strict=False))
        except ValueError as exc:
            raise ValueError(f"option watchers.host.exam_subnets: {s!r} is not an IPv4 CIDR ({exc})") from exc
    return nets


def routes_outside(routes: list[Fact], exam: list[ipaddress.IPv4Network]) -> dict[str, Fact]:
    """Routes whose destination is not inside an exam subnet (the default route never is)."""
    found = {}
    for r in routes:
        dest = ipaddress.IPv4Network(r["destination"])
        if not any(dest.subnet_of(net) for net in exam):
            found[f"{r['destination']}|{r['gateway']}|{r['interface']}"] = dict(r)
    return found


def registered_mismatches(interfaces: dict[str, Fact], inventory: Inventory | None) -> dict[str, Fact]:
    """Own interfaces whose MAC is registered with a fixed IP they do not carry, keyed by MAC."""
    if inventory is None:
        return {}
    found = {}
    for name, info in sorted(interfaces.items()):
        device = inventory.by_mac.get(info.get("mac", ""))
        if device is None or device.ip is None:
            continue
        ips = [a.split("/")[0] for a in info.get("addrs", [])]
        if device.ip not in ips:
            found[device.mac] = {"interface": name, "mac": device.mac, "registered_ip": device.ip,
                                 "addrs": info.get("addrs", []), "entry": device.to_json(),
                                 "inventory_version": inventory.version}
    return found
