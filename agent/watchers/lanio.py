"""Link-layer I/O for the LAN watcher (Linux): raw AF_PACKET sockets with a kernel filter, and ARP
requests built by hand.

Measured in bench/lan.py, scapy's sniffer and ``srp`` cost the agent ~23 MB of RSS (its vendor
database is unpickled at import) and held whole sweeps of packet objects in memory; ARP and DHCP
need neither. The kernel filter is the classic-BPF program tcpdump compiles for
``arp or (udp and (port 67 or port 68))`` on IPv4, unfragmented.
"""

from __future__ import annotations

import ctypes
import ipaddress
import selectors
import socket
import struct
import threading
import time
from typing import Callable

import psutil

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
_ACCEPT, _REJECT = 14, 15  # instruction indexes below, for reading the jumps

#: (code, jt, jf, k); jumps are relative: target = index + 1 + offset.
BPF_PROGRAM: list[tuple[int, int, int, int]] = [
    (0x28, 0, 0, 12),        # 0  ldh [12]               ethertype
    (0x15, 12, 0, 0x0806),   # 1  jeq ARP         → 14 accept
    (0x15, 0, 12, 0x0800),   # 2  jeq IPv4, else  → 15 reject
    (0x30, 0, 0, 23),        # 3  ldb [23]               IP protocol
    (0x15, 0, 10, 17),       # 4  jeq UDP, else   → 15
    (0x28, 0, 0, 20),        # 5  ldh [20]               flags + fragment offset
    (0x45, 8, 0, 0x1FFF),    # 6  jset fragment   → 15
    (0xB1, 0, 0, 14),        # 7  ldxb 4*([14]&0xf)      IP header length
    (0x48, 0, 0, 14),        # 8  ldh [x+14]             source port
    (0x15, 4, 0, 67),        # 9  jeq 67          → 14
    (0x15, 3, 0, 68),        # 10 jeq 68          → 14
    (0x48, 0, 0, 16),        # 11 ldh [x+16]             destination port
    (0x15, 1, 0, 67),        # 12 jeq 67          → 14
    (0x15, 0, 1, 68),        # 13 jeq 68 → 14, else → 15
    (0x06, 0, 0, 0x40000),   # 14 accept (whole frame)
    (0x06, 0, 0, 0),         # 15 reject
]


def open_socket(iface: str) -> socket.socket:
    """A raw socket on ``iface`` that the kernel feeds only ARP and DHCP frames."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    code = b"".join(struct.pack("HBBI", *ins) for ins in BPF_PROGRAM)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(BPF_PROGRAM), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    sock.bind((iface, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Sniffer:
    """Reads frames from every interface on one thread and hands them to ``on_frame``."""

    def __init__(self, interfaces: list[str], on_frame: Callable[[bytes, float], None]) -> None:
        self.sockets = {iface: open_socket(iface) for iface in interfaces}
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lan-sniff", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for sock in self.sockets.values():
            sock.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for sock in self.sockets.values():
            sel.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                try:
                    while True:
                        self._on_frame(key.fileobj.recv(65535), time.time())  # type: ignore[union-attr]
                except BlockingIOError:
                    pass
                except OSError:
                    if self._stop.is_set():
                        return
        sel.close()


def interface_identity(iface: str) -> tuple[bytes, list[ipaddress.IPv4Interface]]:
    """The interface's MAC and IPv4 addresses (with prefixes), as the sweep's sender."""
    mac, nets = b"\0" * 6, []
    for a in psutil.net_if_addrs().get(iface, []):
        if a.family == psutil.AF_LINK:
            mac = bytes.fromhex(a.address.replace(":", ""))
        elif a.family == socket.AF_INET and a.netmask:
            nets.append(ipaddress.IPv4Interface(f"{a.address}/{a.netmask}"))
    return mac, nets


def arp_request(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """A broadcast ARP who-has frame."""
    eth = b"\xff" * 6 + src_mac + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src_mac + socket.inet_aton(src_ip) + b"\0" * 6 + socket.inet_aton(target_ip)
    return eth + arp


def sweep(sock: socket.socket, iface: str, net: ipaddress.IPv4Network, rate: float, stop: threading.Event) -> None:
    """Ask every address of ``net`` who has it, at most ``rate`` a second; replies reach the sniffer.

    The sender address is the interface's own address in ``net`` (0.0.0.0 — an ARP probe — when it
    has none there), so devices answer without learning anything false about this host.
    """
    mac, ifaddrs = interface_identity(iface)
    own = next((str(i.ip) for i in ifaddrs if i.ip in net), "0.0.0.0")
    gap = 1.0 / rate
    next_send = time.monotonic()
    for host in net.hosts():
        if stop.is_set():
            return
        if str(host) == own:
            continue
        delay = next_send - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_send = max(next_send + gap, time.monotonic())
        try:
            sock.send(arp_request(mac, own, str(host)))
        except BlockingIOError:
            time.sleep(gap)  # the device queue is full: slow down rather than drop the request
