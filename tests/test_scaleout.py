"""Scale-out (deploy/scale-out.md, issue 9 item 7): two collectors on one MQTT v5 shared
subscription, one killed -9 mid-stream and later the leader too; every record is stored exactly
once and no case is opened twice.

Real Mosquitto, PostgreSQL, two collector processes and five agent processes at three venues.
Each agent flips an address every 0.1 s and twice grows a wireless NIC, which the shipped rule
220 makes a case: once before any collector dies, once after the leader was killed. The kills
are timed by the agents' progress (their outbox seqs), not by the clock, so a slow machine
stretches the test rather than moving a kill past an episode.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from collector.broker import Mosquitto
from tests.cluster import WIRELESS_RULE, Cluster, host_scenario, wifi_nic
from tests.support import wait_for

STEPS = 400  # host reads per agent (0.1 s apart): about 40 s of traffic
INTERVAL = 0.1
EPISODES = [range(40, 90), range(310, 360)]  # steps during which each agent's wireless NIC is present
AGENTS = {"a1": "V1", "a2": "V1", "a3": "V2", "a4": "V2", "a5": "V3"}
# Agents' progress (outbox seq, about the scenario step) at which the collectors are hit: b dies
# after the first episode, the leader before the second.
KILL_B, RESTART_B, KILL_LEADER, RESTART_LEADER = 120, 170, 220, 250


@pytest.fixture
def cluster(tmp_path: Path, broker: Mosquitto, pg_url: str) -> Iterator[Cluster]:
    """Nodes a and b in one share group, five agents with short heartbeats and ack timeouts."""
    cl = Cluster(tmp_path, broker.port, pg_url, ["a", "b"], clustered=True)
    for agent_id, venue in AGENTS.items():
        cl.add_agent(agent_id, venue, host_scenario(STEPS, wifi_nic(agent_id), EPISODES), interval=INTERVAL,
                     heartbeat=1.0, uplink={"ack_timeout": 1.5})
    yield cl
    cl.close()


def _progress(cl: Cluster, seq: int) -> None:
    wait_for(lambda: cl.min_produced() >= seq, 60, 0.2, f"every agent to commit seq {seq}")


def _wireless_cases(cl: Cluster) -> list[dict]:
    return [c for c in cl.cases() if c["rule_id"] == WIRELESS_RULE]


def _new_leader(cl: Cluster, old: str, epoch: int) -> str | None:
    """The node leading under a newer epoch than ``epoch``, if it is not ``old``."""
    holder = cl.leader()
    return holder if holder not in (None, old) and cl.leader_epoch() > epoch else None


def _run(cl: Cluster) -> tuple[dict[str, int], float, str]:
    """Start a (the leader), b and the agents; kill -9 b and later the leader, restarting each;
    return each agent's last seq once all is delivered, when the leader was killed, and its successor."""
    a, b = cl.nodes["a"], cl.nodes["b"]
    a.proc.start()
    wait_for(lambda: cl.leader() == "a", 30, 0.2, "node a to take the lead (started alone)")
    b.proc.start()
    for agent in cl.agents:
        agent.proc.start()
    wait_for(lambda: cl.vault_ids() >= {"a", "b"}, 30, 0.2,
             "records stored by both nodes, vault_id 'a' and 'b' (the share group splitting traffic)")
    wait_for(lambda: _wireless_cases(cl), 30, 0.2, "a rule-220 case from the first wireless episode")
    _progress(cl, KILL_B)
    b.proc.kill()
    _progress(cl, RESTART_B)
    b.proc.start()
    _progress(cl, KILL_LEADER)
    leader, epoch = cl.nodes[str(cl.leader())], cl.leader_epoch()
    killed_at = time.time()
    leader.proc.kill()
    successor = wait_for(lambda: _new_leader(cl, leader.name, epoch), 15, 0.1,
                         f"the other node to take the lead from {leader.name} (epoch was {epoch})")
    _progress(cl, RESTART_LEADER)
    leader.proc.start()
    lasts = wait_for(lambda: cl.min_produced() >= STEPS and cl.drained(), 90, 0.5,
                     "every outbox to drain with the store holding 1..last of each agent")
    wait_for(lambda: len(_wireless_cases(cl)) >= 2 * len(AGENTS), 20, 0.2, "a case for each wireless episode")
    return lasts, killed_at, successor


def test_two_collectors_one_killed_store_every_record_once_and_open_every_case_once(cluster: Cluster) -> None:
    cl = cluster
    lasts, killed_at, successor = _run(cl)
    cl.stop()
    assert cl.duplicate_seqs() == [], "(agent, seq, count) stored more than once"
    assert cl.seq_problems(lasts) == {}, "stored seqs differ from 1..last"
    assert cl.dead_letters() == [], "messages refused by a node (agent, reason, detail)"
    assert cl.cases_opened_twice() == [], "(venue, rule, subject, first_seen, count, ids) opened as more than one case"
    assert cl.opened_actions_not_one() == [], "(case id, 'opened' actions) not exactly one each"
    wifi = _wireless_cases(cl)
    per_nic = Counter((c["venue_id"], c["subject"]) for c in wifi)
    expected = {(venue, f"interface={wifi_nic(agent_id)}"): len(EPISODES) for agent_id, venue in AGENTS.items()}
    assert dict(per_nic) == expected, "rule-220 cases per (venue, NIC) differ from one per wireless episode"
    late = [c["id"] for c in wifi if c["first_seen"] > killed_at]
    assert late, f"no case opened after the leader was killed at {killed_at}"
    sealed_in = cl.opened_in_vault()
    assert {i: sealed_in.get(i) for i in late} == {i: successor for i in late}, \
        f"cases opened after the kill, by the vault sealing their 'opened' action: not all {successor} (the new leader)"
    assert cl.resends() > 0, "no agent resent anything: the kills did not hit traffic in flight"
    for node in cl.nodes.values():
        assert node.verify_vault() > 0, f"vault of node {node.name} is empty"
