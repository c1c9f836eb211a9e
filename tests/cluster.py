"""A collector cluster on real parts, for tests/test_scaleout.py.

Collector nodes share one broker and one PostgreSQL schema (each with its own data_dir and vault,
all with the same collector key); agents at several venues play host scenarios in which an
address flips every step and a wireless NIC comes and goes, so the shipped rule 220 opens one
case per time the NIC appears. The queries at the end say what went wrong, not only that it did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from collector import keys
from collector.broker import free_port
from collector.store import Store, schema
from collector.vault import Vault
from tests.support import Proc, agent_toml, enroll_agent, outbox_state

#: The shipped rule that a wireless NIC on the exam host opens a case under.
WIRELESS_RULE = 220


def node_toml(data: Path, broker_port: int, db_url: str, node_id: str | None, *, leader_poll: float = 0.5,
              session_expiry: int = 5) -> str:
    """A collector config; ``node_id`` None = a lone collector (no [cluster] section)."""
    lines = ["[collector]", f'data_dir = "{data}"', f'database_url = "{db_url}"', "",
             "[broker]", f"port = {broker_port}", *([f"session_expiry = {session_expiry}"] if node_id else []), "",
             "[web]", f"port = {free_port()}", "",
             "[ingest]", "deadline_factor = 5", "",  # a heartbeat lost with a killed member is no outage
             "[vault]", "checkpoint_interval = 1", ""]
    if node_id:
        lines += ["[cluster]", "enabled = true", f'node_id = "{node_id}"', f"leader_poll_seconds = {leader_poll}", ""]
    return "\n".join(lines)


class Node:
    """One collector process with its own data dir; ``name`` is its node id (and vault id in a cluster)."""

    def __init__(self, tmp: Path, name: str, broker_port: int, db_url: str, clustered: bool) -> None:
        self.name = name
        self.data = tmp / f"collector-{name}"
        self.data.mkdir(parents=True, exist_ok=True)
        self.toml = tmp / f"collector-{name}.toml"
        self.toml.write_text(node_toml(self.data, broker_port, db_url, name if clustered else None))
        self.log = tmp / f"collector-{name}.log"
        self.proc = Proc(["-m", "collector.cli", "--config", str(self.toml), "run"], self.log)
        self.vault_id = name if clustered else "main"

    def verify_vault(self) -> int:
        """Leaves in this node's vault, all verified (the node must be stopped: the vault is locked)."""
        vault = Vault(self.data / "vault", keys.load_or_create(self.data / "vault.key"))
        try:
            return vault.verify()
        finally:
            vault.close(seal=False)


def host_scenario(steps: int, nic: str, episodes: list[range]) -> dict[str, Any]:
    """eth0's address flips every step (one ``host.address_changed`` each); the wireless NIC
    ``nic`` is present during each episode's steps (one ``host.wireless_present`` each time it comes)."""
    eth = [{"mac": "02:00:00:00:00:01", "up": True, "addrs": [f"192.0.2.{10 + i % 2}/24"]} for i in range(2)]
    wifi = {"mac": "02:aa:00:00:00:01", "up": True, "addrs": []}

    def step(i: int) -> dict[str, Any]:
        present = any(i in ep for ep in episodes)
        return {"eth0": eth[i % 2], **({nic: wifi} if present else {})}

    return {"steps": [step(i) for i in range(steps)], "repeat": False}


class Agent:
    """One agent process playing its host scenario. Name its wireless NIC after it (:func:`wifi_nic`):
    rule cases are per venue and subject (``interface=…``), so agents at one venue must not share a name."""

    def __init__(self, tmp: Path, store: Store, key_dir: Path, agent_id: str, venue: str, broker_port: int,
                 scenario: dict[str, Any], **agent: Any) -> None:
        self.id, self.venue = agent_id, venue
        self.home = tmp / agent_id
        bundle = enroll_agent(store, key_dir, agent_id, venue, broker_port, self.home / "agent.bundle.json")
        toml = agent_toml(self.home, bundle, **agent)
        (self.home / "scenario.json").write_text(json.dumps(scenario))  # replaces agent_toml's plain flips
        self.proc = Proc(["-m", "agent.cli", "run", "--config", str(toml)], tmp / f"agent-{agent_id}.log")

    def produced(self) -> int:
        """The last seq the agent committed to its outbox."""
        return outbox_state(self.home)[0]


def wifi_nic(agent_id: str) -> str:
    """A name the host watcher takes for Wi-Fi by its name alone (``wl*``)."""
    return f"wl-{agent_id}"


class Cluster:
    """Collector nodes (the first creates the collector key, the others get a copy) and agents."""

    def __init__(self, tmp: Path, broker_port: int, db_url: str, nodes: list[str], clustered: bool) -> None:
        self.tmp, self.broker_port = tmp, broker_port
        self.nodes = {n: Node(tmp, n, broker_port, db_url, clustered) for n in nodes}
        first = self.nodes[nodes[0]].data
        keys.load_or_create(first / "collector.key")
        for name in nodes[1:]:  # agents verify acks with the one key in their bundle
            shutil.copy2(first / "collector.key", self.nodes[name].data / "collector.key")
        self.store = Store(db_url)
        self.store.migrate()
        self.agents: list[Agent] = []

    def add_agent(self, agent_id: str, venue: str, scenario: dict[str, Any], **agent: Any) -> Agent:
        key_dir = next(iter(self.nodes.values())).data
        made = Agent(self.tmp, self.store, key_dir, agent_id, venue, self.broker_port, scenario, **agent)
        self.agents.append(made)
        return made

    # -- what the store holds ----------------------------------------------------------------------

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]

    def vault_ids(self) -> set[str]:
        """Vaults that hold at least one agent record."""
        return {r[0] for r in self.rows("SELECT DISTINCT vault_id FROM records WHERE seq IS NOT NULL")}

    def leader(self) -> str | None:
        """The node holding the leader lock, as the fencing row says."""
        if not sa.inspect(self.store.engine).has_table("cluster_leader"):
            return None
        return self.scalar("SELECT holder FROM cluster_leader WHERE id = 1")

    def leader_epoch(self) -> int:
        return int(self.scalar("SELECT coalesce(max(epoch), 0) FROM cluster_leader") or 0)

    def min_produced(self) -> int:
        return min(a.produced() for a in self.agents)

    def drained(self) -> dict[str, int]:
        """Each agent's last seq when every outbox is empty and the store holds exactly 1..last of
        each, once; empty otherwise."""
        lasts = {}
        for agent in self.agents:
            last, depth = outbox_state(agent.home)
            if depth or not last or self.store.record_seqs(agent.id) != list(range(1, last + 1)):
                return {}
            lasts[agent.id] = last
        return lasts

    def duplicate_seqs(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT agent_id, seq, count(*) FROM records WHERE seq IS NOT NULL "
                         "GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2")

    def seq_problems(self, lasts: dict[str, int]) -> dict[str, str]:
        """Per agent, what differs from exactly 1..last once: holes, repeats, extras."""
        problems = {}
        for agent_id, last in lasts.items():
            seqs = self.store.record_seqs(agent_id)
            missing = sorted(set(range(1, last + 1)) - set(seqs))
            twice = sorted({s for s in seqs if seqs.count(s) > 1})
            extra = sorted(set(seqs) - set(range(1, last + 1)))
            if missing or twice or extra:
                problems[agent_id] = f"missing {missing[:20]}, twice {twice[:20]}, beyond {last}: {extra[:20]}"
        return problems

    def dead_letters(self) -> list[tuple[Any, ...]]:
        """Messages a node refused: (agent, reason, detail); honest agents should cause none."""
        return self.rows("SELECT agent_id, reason, detail FROM dead_letters ORDER BY id")

    def resends(self) -> int:
        """Times the agents gave up waiting for an ack and sent again (the failover path)."""
        return sum(log.read_text().count("resending") for log in self.tmp.glob("agent-*.log"))

    def cases(self) -> list[dict[str, Any]]:
        c = schema.cases
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(c).order_by(c.c.id)).mappings()]

    def cases_opened_twice(self) -> list[tuple[Any, ...]]:
        """Cases sharing venue, rule, subject and the first event of the episode (its opener)."""
        return self.rows("SELECT venue_id, rule_id, subject, first_seen, count(*), min(id), max(id) FROM cases "
                         "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 ORDER BY 1, 2, 3, 4")

    def opened_actions_not_one(self) -> list[tuple[Any, ...]]:
        """Cases whose 'opened' action is missing or repeated: (case id, how many)."""
        return self.rows("SELECT c.id, count(a.id) FROM cases c LEFT JOIN case_actions a "
                         "ON a.case_id = c.id AND a.action = 'opened' GROUP BY c.id HAVING count(a.id) <> 1 ORDER BY 1")

    def opened_in_vault(self) -> dict[int, str | None]:
        """Case id -> the vault its 'opened' action was sealed into (the leader that opened it)."""
        return dict(self.rows("SELECT case_id, min(vault_id) FROM case_actions WHERE action = 'opened' "
                              "AND vault_index IS NOT NULL GROUP BY case_id"))

    def stop(self) -> None:
        """SIGTERM every process (agents first, so collectors take their last records); idempotent."""
        for agent in self.agents:
            agent.proc.stop()
        for node in self.nodes.values():
            node.proc.stop()

    def close(self) -> None:
        self.stop()
        self.store.close()
