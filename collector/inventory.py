"""Inventory import: a venue's registered devices from CSV, checked line by line.

The file has a header ``venue_id,mac,ip,role,room,name`` and, for cameras and recorders, the
optional columns ``vendor,stream,http_port,channel``; ``ip`` is an address or ``DHCP`` (动态) for
devices allowed any address in the exam subnets; ``role`` is one of the English names in
:data:`protocol.inventory.ROLES` or its Chinese name; ``vendor`` is hikvision/dahua/onvif (海康,
大华) or empty. The import is all or nothing: one
bad line and nothing changes, with every bad line reported.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from collector.store import Store
from protocol.inventory import ROLES, VENDORS, Device, normalise_mac

COLUMNS = ("venue_id", "mac", "ip", "role", "room", "name")
OPTIONAL_COLUMNS = ("vendor", "stream", "http_port", "channel")
VENDOR_NAMES = {"海康": "hikvision", "海康威视": "hikvision", "大华": "dahua"}
ROLE_NAMES = {"摄像头": "camera", "摄像机": "camera", "录像机": "recorder", "考试服务器": "exam_server",
              "考试终端": "exam_terminal", "考试机": "exam_terminal", "交换机": "switch", "其他": "other"}
DHCP_WORDS = {"dhcp", "动态"}


@dataclass(frozen=True)
class LineError:
    """What is wrong on one line of the file."""

    line: int
    message: str  # Chinese: venue staff and the authority read it

    def __str__(self) -> str:
        return f"第 {self.line} 行：{self.message}"


class InventoryError(Exception):
    """The file was refused; ``errors`` lists every bad line."""

    def __init__(self, errors: list[LineError]) -> None:
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


def parse_csv(text: str, known_venues: set[str]) -> dict[str, list[Device]]:
    """Devices per venue; raise InventoryError listing every bad line."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
    if missing:
        raise InventoryError([LineError(1, f"表头缺少列 {', '.join(missing)}（应为 {','.join(COLUMNS)}）")])
    lines: dict[str, list[tuple[int, Device]]] = {}
    errors: list[LineError] = []
    for row in reader:
        try:
            venue, device = _device(row, known_venues)
        except ValueError as exc:
            errors.append(LineError(reader.line_num, str(exc)))
            continue
        lines.setdefault(venue, []).append((reader.line_num, device))
    errors += _duplicates(lines)
    if errors:
        raise InventoryError(sorted(errors, key=lambda e: e.line))
    return {venue: [d for _, d in rows] for venue, rows in lines.items()}


def _device(row: dict[str, str | None], known_venues: set[str]) -> tuple[str, Device]:
    """One row → (venue, device); ValueError in Chinese naming the column."""
    venue = (row.get("venue_id") or "").strip()
    if venue not in known_venues:
        raise ValueError(f"考点 {venue!r} 未注册（先用 venueguard-collector enroll 注册该考点的代理）")
    try:
        mac = normalise_mac(row.get("mac") or "")
    except ValueError:
        raise ValueError(f"MAC 地址 {row.get('mac')!r} 不合法（例：00:11:22:33:44:55）") from None
    ip_text = (row.get("ip") or "").strip()
    if ip_text.lower() in DHCP_WORDS:
        ip = None
    else:
        try:
            ip = str(ipaddress.ip_address(ip_text))
        except ValueError:
            raise ValueError(f"IP 地址 {ip_text!r} 不合法（填写地址，或 DHCP 表示允许动态地址）") from None
    role_text = (row.get("role") or "").strip()
    role = ROLE_NAMES.get(role_text, role_text.lower())
    if role not in ROLES:
        raise ValueError(f"设备类型 {role_text!r} 不合法（可选：{'、'.join(ROLE_NAMES)} 或 {', '.join(ROLES)}）")
    vendor_text = (row.get("vendor") or "").strip()
    vendor = VENDOR_NAMES.get(vendor_text, vendor_text.lower())
    if vendor not in VENDORS:
        raise ValueError(f"厂商 {vendor_text!r} 不合法（可选：海康、大华、onvif，或留空）")
    port_text, channel_text = (row.get("http_port") or "0").strip(), (row.get("channel") or "0").strip()
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"HTTP 端口 {port_text!r} 不合法（0–65535，留空为 80）")
    if not channel_text.isdigit():
        raise ValueError(f"通道号 {channel_text!r} 不合法（填写录像机通道号数字，留空为未知）")
    return venue, Device(mac, ip, role, (row.get("room") or "").strip(), (row.get("name") or "").strip(), vendor,
                         (row.get("stream") or "").strip(), int(port_text), int(channel_text))


def _duplicates(venues: dict[str, list[tuple[int, Device]]]) -> list[LineError]:
    """A MAC listed twice, or one fixed IP given to two devices, in the same venue."""
    errors = []
    for venue, rows in venues.items():
        first_mac: dict[str, int] = {}
        first_ip: dict[str, int] = {}
        for line, d in rows:
            if d.mac in first_mac:
                errors.append(LineError(line, f"考点 {venue} 中 MAC {d.mac} 与第 {first_mac[d.mac]} 行重复"))
            if d.ip and d.ip in first_ip:
                errors.append(LineError(line, f"考点 {venue} 中 IP {d.ip} 已在第 {first_ip[d.ip]} 行分配给另一台设备"))
            first_mac.setdefault(d.mac, line)
            if d.ip:
                first_ip.setdefault(d.ip, line)
    return errors


def import_file(store: Store, path: Path) -> dict[str, int]:
    """Import ``path``; return the new inventory version per venue it names."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError([LineError(0, f"无法读取 {path}：{exc}")]) from exc
    venues = parse_csv(text, {v["id"] for v in store.venues()})
    return {venue: store.replace_inventory(venue, devices) for venue, devices in venues.items()}
