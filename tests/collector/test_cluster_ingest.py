"""Two collectors ingesting one agent population on one PostgreSQL index (a cluster): any message
may reach either, in any order, or both; each (agent, seq) is stored once and every ack claims
only what is committed."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import sqlalchemy as sa

from collector.ingest import Ingestor, Message
from collector.rebuild import rebuild
from collector.store import Store
from collector.store import schema
from collector.vault import Vault
from protocol import keys
from protocol.envelope import decode
from tests.collector.test_ingest import NOW, Agent

AGENTS = ("a1", "a2", "a3")


def _cluster(store: Store, tmp_path: Path, clock: list[float]) -> tuple[Store, dict[str, Ingestor], dict[str, Agent], object]:
    store.add_venue("V1")
    agents = {name: Agent(name) for name in AGENTS}
    for name, agent in agents.items():
        store.enroll_agent(name, "V1", keys.public_b64(agent.key))
    ckey = keys.new_private_key()
    nodes = {}
    for node in ("a", "b"):
        ing = Ingestor(store, Vault(tmp_path / f"vault-{node}"), ckey, gap_grace=5, vault_id=node, clock=lambda: clock[0])
        ing.load(host=f"test:{node}")
        nodes[node] = ing
    return store, nodes, agents, ckey


def _acked(acks: list[tuple[str, bytes, bool]]) -> dict[str, int]:
    out = {}
    for topic, payload, _ in acks:
        out[topic.split("/")[2]] = decode(payload).records[0]["data"]["acked"]
    return out


def test_any_distribution_stores_each_seq_once_and_acks_only_what_is_committed(pg_store: Store, tmp_path: Path) -> None:
    """300 envelopes of three agents dealt at random to two collectors working in parallel, a fifth
    of them to both, in shuffled order: seqs 1..N once each, no dead letter, both vaults used,
    and whenever an ack says ``acked = n`` the index already holds 1..n."""
    clock = [NOW]
    store, nodes, agents, _ = _cluster(pg_store, tmp_path, clock)
    rnd = random.Random(7)
    envelopes: list[Message] = []
    top = {}
    for name, agent in agents.items():
        seq = 1
        while seq <= 400:
            n = rnd.randint(1, 5)
            envelopes.append(agent.ev(seq, n, kind="camera.sample"))
            seq += n
        top[name] = seq - 1
    rnd.shuffle(envelopes)
    queues: dict[str, list[Message]] = {"a": [], "b": []}
    for msg in envelopes:
        for node in (["a", "b"] if rnd.random() < 0.2 else [rnd.choice("ab")]):
            queues[node].append(msg)
    # Each collector's last round is a resend of everything, as agents do after an ack timeout.
    for node in queues:
        queues[node] += envelopes
    lies: list[str] = []

    def run(node: str) -> None:
        q = queues[node]
        try:
            for i in range(0, len(q), 7):
                for agent_id, acked in _acked(nodes[node].handle(q[i:i + 7])).items():
                    held = set(store.record_seqs(agent_id))
                    if not set(range(1, acked + 1)) <= held:
                        lies.append(f"{node} acked {agent_id} up to {acked} holding {len(held)} seqs")
        except Exception as exc:  # noqa: BLE001 - a failed collector thread fails the test
            lies.append(f"{node} failed: {exc!r}")

    threads = [threading.Thread(target=run, args=(node,)) for node in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert lies == []
    for name in AGENTS:
        assert store.record_seqs(name) == list(range(1, top[name] + 1)), name
    assert store.dead_letters() == []
    with store.engine.connect() as conn:
        by_vault = dict(conn.execute(sa.select(schema.records.c.vault_id, sa.func.count()).group_by(schema.records.c.vault_id)).all())
        ledgers = {r.id: r.acked_seq for r in conn.execute(sa.select(schema.agents.c.id, schema.agents.c.acked_seq))}
    assert set(by_vault) == {"a", "b"} and min(by_vault.values()) > 100, by_vault
    assert ledgers == top
    live = _stored(store)
    for ing in nodes.values():
        ing.vault.close()
    vaults = {node: Vault(tmp_path / f"vault-{node}") for node in nodes}
    assert rebuild(store, vaults) == len(live), "rebuilt from both vaults: each seq once"
    assert _stored(store) == live
    for vault in vaults.values():
        vault.close()


def _stored(store: Store) -> set[tuple[str, int, str]]:
    r = schema.records.c
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(r.agent_id, r.seq, r.digest).where(r.seq.is_not(None))).all())


def test_a_hole_filled_on_the_other_collector_closes_in_the_next_ack(pg_store: Store, tmp_path: Path) -> None:
    """a holds 1-3, b gets 5 (hole at 4), a gets 4: each ack reflects the other's writes, and a
    different record under a seq the other collector holds is a replayed_seq dead letter."""
    clock = [NOW]
    store, nodes, agents, _ = _cluster(pg_store, tmp_path, clock)
    a1 = agents["a1"]
    assert _acked(nodes["a"].handle([a1.ev(1, 3)])) == {"a1": 3}
    assert _acked(nodes["b"].handle([a1.ev(5)])) == {"a1": 3}
    assert nodes["b"].tracks["a1"].missing() == [(4, 4)]
    assert _acked(nodes["a"].handle([a1.ev(4)])) == {"a1": 5}
    assert _acked(nodes["b"].handle([a1.ev(2)])) == {"a1": 5}, "b reloads the ledger a wrote"
    nodes["b"].handle([a1.ev(2, kind="forged")])
    assert store.record_seqs("a1") == [1, 2, 3, 4, 5]
    assert [d["reason"] for d in store.dead_letters()] == ["replayed_seq"]
    for ing in nodes.values():
        ing.vault.close()


def test_the_leaders_sweep_sees_heartbeats_the_other_collector_ingested(pg_store: Store, tmp_path: Path) -> None:
    """b ingests the birth and heartbeats; a (the leader) runs the sweep: no offline while b's
    heartbeats are fresh, offline once they stop, and seq.gap for a hole only b ever saw."""
    clock = [NOW]
    store, nodes, agents, _ = _cluster(pg_store, tmp_path, clock)
    a1 = agents["a1"]
    b, a = nodes["b"], nodes["a"]
    b.handle([a1.ctl("state", "birth", heartbeat_interval=1.0), a1.ev(1), a1.ev(3)])
    for _ in range(5):
        clock[0] += 1.0
        hb = a1.ctl("hb", "heartbeat", interval=1.0, clock=clock[0])
        b.handle([Message(hb.topic, hb.payload, clock[0])])
        a.tick()
    kinds = [r["kind"] for r in store.records_of("a1")]
    assert "agent.offline" not in kinds and "seq.gap" not in kinds
    clock[0] += 10.0
    a.tick()
    swept = [(r["kind"], r["data"].get("reason")) for r in store.records_of("a1") if r["stream"] == "collector"]
    assert ("agent.offline", "heartbeat_timeout") in swept and ("seq.gap", None) in swept
    b.handle([a1.ev(2)])
    a.tick()
    assert [r["kind"] for r in store.records_of("a1")].count("seq.gap_closed") == 1
    for ing in nodes.values():
        ing.vault.close()
