"""Judging sightings against the inventory, without packets: episodes, keys, and what is not noise."""

from __future__ import annotations

from agent.watchers.lan_view import Sighting, judge
from protocol.inventory import Device, Inventory

CAM = Device("00:11:22:33:44:01", "192.0.2.21", "camera")
TERM = Device("00:11:22:33:44:03", None, "exam_terminal")
INV = Inventory("V", 1, (CAM, TERM))


def _s(mac: str, ip: str, first: float, last: float) -> Sighting:
    return Sighting(mac, ip, "arp-request", first, last)


def test_replacement_is_a_mac_change_not_a_conflict() -> None:
    """The old MAC last seen before the new one first spoke: mac_changed, no ip_conflict."""
    view = judge([_s(CAM.mac, "192.0.2.21", 0, 10), _s("00:1b:21:00:00:01", "192.0.2.21", 11, 20)], {}, INV, [], 600, 20)
    assert sorted(k.split(":")[0] for k in view.episodes) == ["mac_changed", "unregistered"]


def test_overlapping_claims_are_a_conflict_and_hide_the_flip_flops() -> None:
    """Two MACs answering for one IP in overlapping intervals: ip_conflict; the alternation in the
    IP's history is its symptom and is not reported separately."""
    other = "00:1b:21:00:00:01"
    history = {"192.0.2.21": [(1, CAM.mac), (2, other), (3, CAM.mac)]}
    view = judge([_s(CAM.mac, "192.0.2.21", 0, 3), _s(other, "192.0.2.21", 2, 2)], history, INV, [], 600, 3)
    assert sorted(k.split(":")[0] for k in view.episodes) == ["ip_conflict", "mac_changed", "unregistered"]


def test_dhcp_allowed_device_may_use_any_address() -> None:
    """A DHCP-allowed device on a new address is no episode at all."""
    assert judge([_s(TERM.mac, "192.0.2.199", 0, 1)], {}, INV, [], 600, 1).episodes == {}


def test_episode_reported_once_and_returned_when_missing_ends() -> None:
    """diff() gives an event only for newly opened episodes, and device.returned for a closed missing one."""
    missing = judge([], {}, INV, [(CAM.mac, 5.0)], 600, 10)
    again = judge([], {}, INV, [(CAM.mac, 5.0)], 600, 11)
    assert [k for k, _ in missing.diff({})] == ["device.missing"]
    assert again.diff(missing.to_json()) == []
    back = judge([_s(CAM.mac, "192.0.2.21", 12, 12)], {}, INV, [], 600, 12)
    assert [k for k, _ in back.diff(again.to_json())] == ["device.returned"]


def test_nothing_is_judged_before_the_signed_inventory_arrives() -> None:
    """Without an inventory every device would look unregistered: no episode until it arrives."""
    view = judge([_s("00:1b:21:00:00:01", "192.0.2.50", 0, 1)], {}, None, [], 600, 1)
    assert view.episodes == {} and list(view.devices) == ["00:1b:21:00:00:01"]


def test_a_restart_keeps_open_episodes_until_it_has_swept() -> None:
    """The last run's episodes stand until this run has swept missing_after times: no repeat of
    device.unregistered when the device next speaks, no device.returned for a still-missing one."""
    from agent.watchers.lan import LanWatcher

    before = judge([_s("00:1b:21:00:00:01", "192.0.2.50", 0, 1)], {}, INV, [(CAM.mac, 0.5)], 600, 1)
    w = LanWatcher(interfaces=["eth0"], subnets=["192.0.2.0/24"], inventory=lambda: INV, missing_after=2)
    w.restore(before.to_json())
    w._started, w._own_macs = 10.0, set()
    w.table.saw("00:1b:21:00:00:01", "192.0.2.50", "arp-request", 11.0)
    assert w.collect().diff(before.to_json()) == []


def test_closing_episodes_are_reported_so_cases_can_close() -> None:
    """An unregistered device that leaves → device.left; a registered device back at its address → device.ip_restored."""
    stranger = "00:1b:21:00:00:01"
    present = judge([_s(stranger, "192.0.2.50", 0, 1), _s(CAM.mac, "192.0.2.99", 0, 1)], {}, INV, [], 600, 1)
    assert sorted(k for k, _ in present.diff({})) == ["device.ip_changed", "device.unregistered"]
    gone = judge([_s(CAM.mac, "192.0.2.21", 2, 2)], {}, INV, [], 600, 2)
    closed = dict(gone.diff(present.to_json()))
    assert sorted(closed) == ["device.ip_restored", "device.left"]
    assert closed["device.left"]["mac"] == stranger
    assert (closed["device.ip_restored"]["mac"], closed["device.ip_restored"]["episode"]) == (CAM.mac, "ip_changed")
