"""The test-LAN builder itself: hosts on the bridge reach each other, and nothing is left behind."""

from __future__ import annotations

from tests.netns import Lab, leftover_namespaces


def test_hosts_on_the_bridge_reach_each_other_and_are_deleted(lab: Lab) -> None:
    """Two namespaces on 192.0.2.0/24 ping each other; closing the lab deletes every namespace."""
    a = lab.add("a", "02:00:00:00:0a:01", "192.0.2.1/24")
    lab.add("b", "02:00:00:00:0a:02", "192.0.2.2/24")
    assert a.sh("ping", "-c", "1", "-W", "2", "192.0.2.2").returncode == 0
    lab.close()
    assert not [ns for ns in leftover_namespaces(include_own=True) if ns.startswith(lab.tag)]
