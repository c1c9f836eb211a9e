"""The registered-device inventory of one venue, as the collector signs it and the agent reads it.

Kept in ``protocol`` because both sides must agree on its shape: the collector imports and
publishes it (retained, signed, on ``cfg``); the agent judges the LAN against it and cannot change
it locally.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

ROLES = ("camera", "recorder", "exam_server", "exam_terminal", "switch", "other")
VENDORS = ("", "hikvision", "dahua", "onvif")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")


def normalise_mac(text: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` / ``aabbccddeeff`` → ``aa:bb:cc:dd:ee:ff``; ValueError if not a MAC."""
    raw = text.strip().lower().replace(".", "")
    if not _MAC_RE.match(raw):
        raise ValueError(f"{text!r} is not a MAC address")
    digits = re.sub(r"[^0-9a-f]", "", raw)
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def locally_administered(mac: str) -> bool:
    """True for a locally administered (typically randomised) MAC: bit 1 of the first octet."""
    return bool(int(mac[:2], 16) & 0x02)


@dataclass(frozen=True)
class Device:
    """One registered device."""

    mac: str
    ip: str | None  # None: "DHCP allowed", any address in the exam subnets is fine
    role: str
    room: str = ""
    name: str = ""
    vendor: str = ""  # cameras and recorders: hikvision | dahua | onvif | "" (generic RTSP)
    stream: str = ""  # cameras: RTSP path of the stream to sample (default: the vendor's sub-stream)
    http_port: int = 0  # cameras and recorders: HTTP API port (0 = 80)
    channel: int = 0  # cameras: the recorder channel that records it (0 = unknown)

    @property
    def dhcp(self) -> bool:
        return self.ip is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inventory:
    """A venue's registered devices at one version."""

    venue_id: str
    version: int
    devices: tuple[Device, ...] = field(default_factory=tuple)

    @cached_property
    def by_mac(self) -> dict[str, Device]:
        return {d.mac: d for d in self.devices}

    @cached_property
    def by_ip(self) -> dict[str, Device]:
        return {d.ip: d for d in self.devices if d.ip}

    def to_json(self) -> dict[str, Any]:
        return {"venue_id": self.venue_id, "version": self.version, "devices": [d.to_json() for d in self.devices]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Inventory":
        """Parse and validate; ValueError names the bad device."""
        devices = []
        for i, d in enumerate(doc["devices"]):
            try:
                ip = str(ipaddress.ip_address(d["ip"])) if d.get("ip") else None
                role = d["role"]
                if role not in ROLES:
                    raise ValueError(f"role {role!r} is not one of {ROLES}")
                vendor = str(d.get("vendor", ""))
                if vendor not in VENDORS:
                    raise ValueError(f"vendor {vendor!r} is not one of {VENDORS}")
                devices.append(Device(normalise_mac(d["mac"]), ip, role, str(d.get("room", "")), str(d.get("name", "")),
                                      vendor, str(d.get("stream", "")), int(d.get("http_port", 0)),
                                      int(d.get("channel", 0))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"devices[{i}]: {exc}") from exc
        return cls(str(doc["venue_id"]), int(doc["version"]), tuple(devices))
