"""LAN watcher: every device that speaks on the exam LAN, judged against the signed inventory.

Passive: ARP and DHCP are sniffed through a kernel filter on the exam-LAN interfaces, so a device
is seen the moment it speaks, and news (a new MAC/IP pair) wakes the judgement at once. Active: the
exam subnets are ARP-swept at ``sweep_interval``, at most ``sweep_rate`` requests a second, so
silent devices are found and absent ones noticed. Frames are read and built by hand
(:mod:`agent.watchers.lanio`): no packet library, a small agent.

Judgement against the inventory lives in :mod:`agent.watchers.lan_view`; events are listed there.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from agent.watchers.lan_view import LanView, Sighting, judge
from agent.watchers.lanio import Sniffer, sweep
from protocol.inventory import Inventory

log = logging.getLogger("venueguard.agent.lan")

_DHCP_COOKIE = b"\x63\x82\x53\x63"


class Table:
    """What was seen: the latest sighting per MAC and each IP's history of MACs (thread-safe)."""

    def __init__(self, history_len: int = 16) -> None:
        self._lock = threading.Lock()
        self.by_mac: dict[str, Sighting] = {}
        self.history: dict[str, list[tuple[float, str]]] = {}
        self._history_len = history_len

    def saw(self, mac: str, ip: str, how: str, at: float, hostname: str = "", vendor_class: str = "") -> bool:
        """Record that ``mac`` used ``ip`` (``""``: no address yet) at ``at``; True when that is news
        (a new MAC, or a MAC on a new address) worth judging at once."""
        with self._lock:
            s = self.by_mac.get(mac)
            if s is not None and ip and ip != s.ip and at < s.last_seen:
                return False  # late evidence of an address it has since left
            news = s is None or bool(ip and s.ip != ip)
            if news:
                # A new address opens a new sighting; the DHCP identity stays with the MAC.
                s = Sighting(mac, ip or (s.ip if s else ""), how, at, at, hostname or (s.hostname if s else ""),
                             vendor_class or (s.vendor_class if s else ""))
                self.by_mac[mac] = s
            s.last_seen, s.how = at, how
            s.hostname = hostname or s.hostname
            s.vendor_class = vendor_class or s.vendor_class
            if ip:
                hist = self.history.setdefault(ip, [])
                if not hist or hist[-1][1] != mac:
                    hist.append((at, mac))
                    del hist[:-self._history_len]
                    news = True
            return news

    def present(self, since: float) -> list[Sighting]:
        """Copies of the sightings not older than ``since``."""
        with self._lock:
            return [Sighting(**s.__dict__) for s in self.by_mac.values() if s.last_seen >= since]

    def last_seen(self, mac: str) -> float | None:
        with self._lock:
            s = self.by_mac.get(mac)
            return None if s is None else s.last_seen

    def history_copy(self) -> dict[str, list[tuple[float, str]]]:
        with self._lock:
            return {ip: list(h) for ip, h in self.history.items()}


@dataclass
class LanWatcher:
    """Sniffs and sweeps the exam LAN; ``collect()`` judges the table against the inventory."""

    interfaces: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    inventory: Callable[[], Inventory | None] = lambda: None
    interval: float = 1.0
    sweep_interval: float = 60.0
    sweep_rate: float = 200.0
    missing_after: int = 3
    flip_window: float = 600.0
    name: str = "lan"
    table: Table = field(default_factory=Table)
    sweeps: list[float] = field(default_factory=list)  # start times of the last completed sweeps
    sweep_count: int = 0
    news: threading.Event = field(default_factory=threading.Event)  # set on news; the runtime judges at once
    _restored: dict[str, Any] = field(default_factory=dict)

    def init(self) -> None:
        """Validate options; start sniffing and sweeping."""
        if not self.interfaces:
            raise ValueError("option watchers.lan.interfaces: name at least one exam-LAN interface")
        try:
            self._nets = [ipaddress.ip_network(s, strict=False) for s in self.subnets]
        except ValueError as exc:
            raise ValueError(f"option watchers.lan.subnets: {exc}") from exc
        if not self._nets:
            raise ValueError("option watchers.lan.subnets: name at least one exam subnet (CIDR)")
        if any(n.num_addresses > 4096 for n in self._nets):
            raise ValueError("option watchers.lan.subnets: a subnet larger than /20 would make sweeps too long")
        if self.sweep_rate <= 0 or self.sweep_interval <= 0 or self.missing_after < 1:
            raise ValueError("option watchers.lan: sweep_rate, sweep_interval must be > 0 and missing_after >= 1")
        self._stop = threading.Event()
        self._sweep_error = ""
        self._own_macs = _own_macs(self.interfaces)
        self._started = time.time()
        self._start_sniffer()
        threading.Thread(target=self._sweep_loop, name="lan-sweep", daemon=True).start()

    def stop(self) -> None:
        """Stop the sniffer and the sweeps."""
        self._stop.set()
        if getattr(self, "_sniffer", None) is not None:
            self._sniffer.stop()

    def collect(self) -> LanView:
        """Judge what is present now."""
        now = time.time()
        window_start = self.sweeps[-self.missing_after] if len(self.sweeps) >= self.missing_after else self._started
        present = self.table.present(since=min(window_start, now - self.missing_after * self.sweep_interval))
        view = judge(present, self.table.history_copy(), self.inventory(), self._missing(), self.flip_window, now)
        if self.sweep_count < self.missing_after and self._restored:
            # Until this run has swept enough to know, the last run's episodes stand: a restart
            # neither closes them nor reports them again when their devices next speak.
            view.episodes = {**self._restored, **view.episodes}
        return view

    def check_now(self, wait: float) -> LanView:
        """After the first sweep of this watcher, and ``wait`` more seconds for late answers, the
        judged view (for the readiness check on a watcher it has just started).

        ``init`` starts that sweep at once, at the normal ``sweep_rate``, so a readiness check
        floods the LAN no more than the running service does. ``missing`` needs several sweeps and
        is not in this view; the check judges presence from ``devices`` itself.
        """
        addresses = sum(n.num_addresses for n in self._nets) * len(self.interfaces)
        deadline = time.monotonic() + addresses / self.sweep_rate + 10.0
        while self.sweep_count < 1 and not self._sweep_error and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.sweep_count < 1:
            raise RuntimeError(f"ARP sweep did not complete: {self._sweep_error or 'timed out'}")
        self._stop.wait(wait)
        return self.collect()

    def restore(self, view: dict[str, Any] | None) -> None:
        """The persisted view of the last run (called before :meth:`init`)."""
        self._restored = dict((view or {}).get("episodes") or {})

    def _missing(self) -> list[tuple[str, float | None]]:
        """Registered devices silent since the start of the last ``missing_after`` sweeps."""
        inv = self.inventory()
        if inv is None or len(self.sweeps) < self.missing_after:
            return []
        since = self.sweeps[-self.missing_after]
        out = []
        for mac in inv.by_mac:
            seen = self.table.last_seen(mac)
            if mac not in self._own_macs and (seen is None or seen < since):
                out.append((mac, seen))
        return out

    # -- passive -------------------------------------------------------------------------------

    def _start_sniffer(self) -> None:
        self._sniffer = Sniffer(self.interfaces, self._frame)
        self._sniffer.start()

    def _frame(self, frame: bytes, at: float) -> None:
        """One sniffed frame → a sighting (never raises: a malformed frame is just skipped)."""
        try:
            fact = parse_frame(frame)
        except (IndexError, struct.error, ValueError):
            return
        if fact and fact["mac"] not in self._own_macs and self.table.saw(at=at, **fact):
            self.news.set()

    # -- active --------------------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                self._sweep()
                self.sweeps.append(started)
                del self.sweeps[:-max(self.missing_after, 2)]
                self.sweep_count += 1
            except Exception as exc:  # noqa: BLE001 - a failed sweep is logged; the next one retries
                log.exception("ARP sweep failed")
                self._sweep_error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(max(0.0, self.sweep_interval - (time.time() - started)))

    def _sweep(self) -> None:
        """ARP-request every address of every subnet, rate-limited, then give replies a second."""
        for iface, sock in self._sniffer.sockets.items():
            for net in self._nets:
                sweep(sock, iface, net, self.sweep_rate, self._stop)
        self._stop.wait(1.0)


def parse_frame(frame: bytes) -> dict[str, str] | None:
    """ARP or DHCP (client → server) in an Ethernet frame → ``{mac, ip, how[, hostname, vendor_class]}``."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == 0x0806:
        return _arp(frame[14:42])
    if ethertype == 0x0800:
        return _dhcp(frame[14:])
    return None


def _arp(arp: bytes) -> dict[str, str] | None:
    op = struct.unpack("!H", arp[6:8])[0]
    mac = ":".join(f"{b:02x}" for b in arp[8:14])
    spa, tpa = str(ipaddress.IPv4Address(arp[14:18])), str(ipaddress.IPv4Address(arp[24:28]))
    if spa == "0.0.0.0":
        return {"mac": mac, "ip": "", "how": "arp-probe"}
    how = "gratuitous-arp" if spa == tpa else ("arp-reply" if op == 2 else "arp-request")
    return {"mac": mac, "ip": spa, "how": how}


def _dhcp(ip: bytes) -> dict[str, str] | None:
    """DHCP DISCOVER/REQUEST: client MAC, requested (or current) address, hostname, vendor class."""
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if (sport, dport) != (68, 67):
        return None
    bootp = ip[ihl + 8:]
    if bootp[0] != 1 or bootp[236:240] != _DHCP_COOKIE:
        return None
    mac = ":".join(f"{b:02x}" for b in bootp[28:34])
    ciaddr = str(ipaddress.IPv4Address(bootp[12:16]))
    opts = _options(bootp[240:])
    kind = {1: "dhcp-discover", 3: "dhcp-request", 8: "dhcp-inform"}.get(opts.get(53, b"\0")[0], "dhcp")
    requested = str(ipaddress.IPv4Address(opts[50])) if len(opts.get(50, b"")) == 4 else ""
    address = requested or ("" if ciaddr == "0.0.0.0" else ciaddr)
    return {"mac": mac, "ip": address, "how": kind, "hostname": opts.get(12, b"").decode(errors="replace"),
            "vendor_class": opts.get(60, b"").decode(errors="replace")}


def _options(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        out[code] = data[i + 2:i + 2 + length]
        i += 2 + length
    return out


def _own_macs(interfaces: list[str]) -> set[str]:
    """This host's MACs on the watched interfaces: its own packets are not LAN devices."""
    import psutil

    addrs = psutil.net_if_addrs()
    return {a.address.lower() for i in interfaces for a in addrs.get(i, []) if a.family == psutil.AF_LINK}
