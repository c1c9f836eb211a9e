"""Judging what the LAN watcher saw against the collector-signed inventory.

Pure functions over a table of sightings, so they are tested without packets. The view is a set of
*episodes*, each keyed so that one condition is reported once, not once per packet:

| key | event | condition |
|---|---|---|
| ``unregistered:<mac>`` | ``device.unregistered`` | a MAC not in the inventory is present |
| ``ip_changed:<mac>:<ip>`` | ``device.ip_changed`` | a registered fixed-IP device uses another IP |
| ``mac_changed:<ip>:<mac>`` | ``device.mac_changed`` | a registered IP is used by another MAC |
| ``ip_conflict:<ip>`` | ``device.ip_conflict`` | two present MACs claim one IP |
| ``flip_flop:<ip>`` | ``device.flip_flop`` | an IP's MAC went back to one it had, within the window |
| ``missing:<mac>`` | ``device.missing`` | a registered device was not seen for N sweeps |

When a ``missing`` episode ends, ``device.returned`` says so. arpwatch keys by IP only and calls a
known MAC on a new IP a "new station"; keying by MAC *and* IP is what tells those apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.watchers.oui import vendor
from protocol.inventory import Inventory, locally_administered


@dataclass
class Sighting:
    """The latest evidence that a MAC used an IP."""

    mac: str
    ip: str  # "" when it spoke without an address (DHCP discover)
    how: str  # arp-reply | arp-request | gratuitous-arp | arp-probe | dhcp-request | dhcp-discover | sweep-reply
    first_seen: float
    last_seen: float
    hostname: str = ""
    vendor_class: str = ""

    def evidence(self) -> dict[str, Any]:
        return {"mac": self.mac, "ip": self.ip, "vendor": vendor(self.mac), "randomized": locally_administered(self.mac),
                "first_seen": round(self.first_seen, 3), "last_seen": round(self.last_seen, 3), "how": self.how,
                "hostname": self.hostname, "vendor_class": self.vendor_class}


@dataclass
class LanView:
    """Open episodes and the devices present, at one moment."""

    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Persisted and snapshotted form; without last-seen times and packet types, so it changes
        (and is written to disk) only on news, not on every ARP."""
        return {"episodes": {k: {f: v for f, v in d.items() if f != "last_seen"} for k, d in self.episodes.items()},
                "devices": {m: {f: v for f, v in d.items() if f not in ("last_seen", "how")}
                            for m, d in self.devices.items()}}

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """An event for each episode that opened, and one for each that closed where the collector
        must know it ended: a missing device returned, an unregistered device left, a registered
        device back at its address (so a case about it can close instead of lasting for ever)."""
        old = before.get("episodes", {})
        events = [(f"device.{key.split(':')[0]}", data) for key, data in self.episodes.items() if key not in old]
        for key, data in old.items():
            if key in self.episodes:
                continue
            episode = key.split(":")[0]
            if episode == "missing":
                events.append(("device.returned", {**data, "now": self.devices.get(key.split(":", 1)[1], {})}))
            elif episode == "unregistered":
                events.append(("device.left", data))
            elif episode in ("ip_changed", "mac_changed"):
                events.append(("device.ip_restored", {**data, "episode": episode}))
        return events


def judge(present: list[Sighting], history: dict[str, list[tuple[float, str]]], inventory: Inventory | None,
          missing: list[tuple[str, float | None]], flip_window: float, now: float) -> LanView:
    """Build the view from present sightings, per-IP MAC history, the inventory and the missing list."""
    view = LanView(devices={s.mac: s.evidence() for s in present})
    if inventory is None:
        return view  # no signed inventory yet: nothing can be judged, and guessing would be noise
    inv = inventory
    for s in present:
        entry = inv.by_mac.get(s.mac)
        if entry is None:
            view.episodes[f"unregistered:{s.mac}"] = s.evidence()
        elif entry.ip and s.ip and s.ip != entry.ip:
            view.episodes[f"ip_changed:{s.mac}:{s.ip}"] = {**s.evidence(), "registered_ip": entry.ip, "entry": entry.to_json()}
        owner = inv.by_ip.get(s.ip)
        if owner is not None and owner.mac != s.mac:
            view.episodes[f"mac_changed:{s.ip}:{s.mac}"] = {**s.evidence(), "registered_mac": owner.mac, "entry": owner.to_json()}
    _conflicts(view, present)
    _flip_flops(view, history, flip_window, now)
    for mac, last_seen in missing:
        entry = inv.by_mac[mac]
        view.episodes[f"missing:{mac}"] = {"mac": mac, "registered_ip": entry.ip, "entry": entry.to_json(),
                                           "last_seen": None if last_seen is None else round(last_seen, 3)}
    return view


def _conflicts(view: LanView, present: list[Sighting]) -> None:
    """Two or more MACs using the same IP at the same time: their sighting intervals overlap.

    A device replaced by another on the same IP (the old one last seen before the new one first
    spoke) is a MAC change, not a conflict.
    """
    by_ip: dict[str, list[Sighting]] = {}
    for s in present:
        if s.ip:
            by_ip.setdefault(s.ip, []).append(s)
    for ip, claims in by_ip.items():
        overlapping = [a for a in claims if any(b is not a and a.first_seen <= b.last_seen and b.first_seen <= a.last_seen
                                                for b in claims)]
        if len(overlapping) > 1:
            claims = overlapping
            view.episodes[f"ip_conflict:{ip}"] = {"ip": ip, "macs": sorted(c.mac for c in claims),
                                                  "claims": [c.evidence() for c in sorted(claims, key=lambda c: c.mac)]}


def _flip_flops(view: LanView, history: dict[str, list[tuple[float, str]]], window: float, now: float) -> None:
    """An IP whose MAC changed back to a previous one (A → B → A) within ``window`` seconds.

    While the IP is in conflict the flip-flops are its symptom, already reported as the conflict.
    """
    for ip, changes in history.items():
        if f"ip_conflict:{ip}" in view.episodes:
            continue
        recent = [mac for t, mac in changes if now - t <= window]
        for i in range(2, len(recent)):
            if recent[i] == recent[i - 2] and recent[i] != recent[i - 1]:
                view.episodes[f"flip_flop:{ip}"] = {"ip": ip, "macs": sorted(set(recent)), "sequence": recent}
                break
