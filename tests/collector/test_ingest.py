"""Ingest logic on a real store (SQLite and PostgreSQL): dedupe, gaps, replays, dead letters,
liveness, and rebuilding the index from the vault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.ingest import Ingestor, Message
from collector.store import Store
from collector.vault import Vault
from protocol import keys
from protocol.envelope import Envelope, decode, record

NOW = 1_800_000_000.0


class Agent:
    """Builds signed envelopes like a real agent."""

    def __init__(self, agent_id: str, key=None) -> None:  # noqa: ANN001
        self.agent_id = agent_id
        self.key = key or keys.new_private_key()
        self.boot = "boot1"

    def ev(self, first: int, n: int = 1, kind: str = "k", stream: str = "ev", **data: object) -> Message:
        recs = tuple(record(kind, NOW, dict(data), seq=s) for s in range(first, first + n))
        env = Envelope(self.agent_id, self.boot, first, NOW, stream, recs).signed(self.key)
        return Message(f"vg/v1/{self.agent_id}/{stream}", env.encode(), NOW)

    def ctl(self, stream: str, kind: str, **data: object) -> Message:
        env = Envelope(self.agent_id, self.boot, 0, NOW, stream, (record(kind, NOW, dict(data)),)).signed(self.key)
        return Message(f"vg/v1/{self.agent_id}/{stream}", env.encode(), NOW)


@pytest.fixture
def setup(store: Store, tmp_path: Path):  # noqa: ANN201
    ckey = keys.new_private_key()
    a = Agent("a1")
    store.add_venue("V1")
    store.enroll_agent("a1", "V1", keys.public_b64(a.key))
    clock = [NOW]
    ing = Ingestor(store, Vault(tmp_path / "vault"), ckey, gap_grace=5, clock=lambda: clock[0])
    ing.load()
    return ing, a, ckey, clock


def _ack(acks: list[tuple[str, bytes, bool]], ckey) -> dict:  # noqa: ANN001
    (topic, payload, retain), = acks
    assert retain is False
    env = decode(payload)
    assert topic == "vg/v1/a1/ack" and env.verify(ckey.public_key())
    return env.records[0]["data"]


def test_each_record_is_stored_once_and_acked(setup, store: Store) -> None:  # noqa: ANN001
    """Records land once; a resend is a counted duplicate, re-acked, not stored again."""
    ing, a, ckey, _ = setup
    assert _ack(ing.handle([a.ev(1, 3)]), ckey) == {"acked": 3, "missing": []}
    assert _ack(ing.handle([a.ev(1, 3), a.ev(2, 3)]), ckey) == {"acked": 4, "missing": []}
    assert store.record_seqs("a1") == [1, 2, 3, 4]
    assert ing.counters["duplicates"] == 5
    assert store.dead_letters() == []


def test_gap_is_requested_then_reported_then_closed(setup, store: Store) -> None:  # noqa: ANN001
    """A hole is listed in acks at once, reported as seq.gap after the grace, closed when filled."""
    ing, a, ckey, clock = setup
    ing.handle([a.ev(1)])
    assert _ack(ing.handle([a.ev(5, 2)]), ckey) == {"acked": 1, "missing": [[2, 4]]}
    ing.tick()
    assert store.records_of("a1", "seq.gap") == []
    clock[0] += 6
    ing.tick()
    gap = store.records_of("a1", "seq.gap")
    assert [g["data"]["first"] for g in gap] == [2] and gap[0]["data"]["last"] == 4
    assert _ack(ing.handle([a.ev(2, 3)]), ckey) == {"acked": 6, "missing": []}
    ing.tick()
    assert len(store.records_of("a1", "seq.gap_closed")) == 1
    assert store.record_seqs("a1") == [1, 2, 3, 4, 5, 6]


def test_bad_messages_become_dead_letters_and_valid_ones_still_land(setup, store: Store) -> None:  # noqa: ANN001
    """Every rejection reason is recorded with the payload; valid traffic in the same batch lands."""
    ing, a, _, _ = setup
    stranger = Agent("zz")
    good_for_other = json.loads(a.ev(9).payload)
    good_for_other["agent_id"] = "a2"
    forged = json.loads(a.ev(3).payload)
    forged["records"][0]["data"] = {"forged": True}
    unknown_version = json.loads(a.ev(4).payload)
    unknown_version["v"] = 2
    batch = [
        a.ev(1),
        Message("vg/v1/a1/ev", json.dumps(forged).encode(), NOW),
        Message("vg/v1/a1/ev", json.dumps(good_for_other).encode(), NOW),
        stranger.ev(1),
        Message("vg/v1/a1/ev", b"{oops", NOW),
        Message("vg/v1/a1/ev", b" " * 300_000, NOW),
        Message("vg/v1/a1/ev", json.dumps(unknown_version).encode(), NOW),
        Message("vg/v1/a1/ev", a.ev(1, kind="rewritten").payload, NOW),
        a.ev(2),
    ]
    ing.handle(batch)
    reasons = [d["reason"] for d in store.dead_letters()]
    assert reasons == ["bad_signature", "agent_mismatch", "unregistered_agent", "bad_json", "oversized",
                       "unknown_version", "replayed_seq"]
    assert store.dead_letter_counts()["bad_json"] == 1
    assert store.record_seqs("a1") == [1, 2]
    letter = store.dead_letters()[0]
    assert letter["payload"] == batch[1].payload and "signature" in letter["detail"]


def test_index_is_rebuilt_from_the_vault_after_a_crash(setup, store: Store, tmp_path: Path) -> None:  # noqa: ANN001
    """Entries vaulted but never indexed (crash between the two) are indexed at the next start."""
    ing, a, ckey, _ = setup
    ing.handle([a.ev(1, 2)])
    ing.vault.append([(NOW, "vg/v1/a1/ev", a.ev(3, 2).payload.decode())])  # vaulted, then "crash"
    ing.vault.close()
    again = Ingestor(store, Vault(tmp_path / "vault"), ckey)
    again.load()
    assert store.record_seqs("a1") == [1, 2, 3, 4]
    assert _ack(again.handle([a.ev(3, 2)]), ckey) == {"acked": 4, "missing": []}
    assert store.record_seqs("a1") == [1, 2, 3, 4]


def test_liveness_birth_will_and_heartbeat_deadline(setup, store: Store) -> None:  # noqa: ANN001
    """Birth → online; a stale Last Will is ignored; missed heartbeats → offline; both are events."""
    ing, a, _, clock = setup
    ing.handle([a.ctl("state", "birth", heartbeat_interval=1.0)])
    old = Agent("a1", a.key)
    old.boot = "boot0"
    ing.handle([old.ctl("state", "death")])
    assert ing.tracks["a1"].online
    ing.handle([a.ctl("hb", "heartbeat", interval=1.0, clock=NOW - 5, outbox_depth=7)])
    clock[0] += 3.5
    ing.tick()
    kinds = [(r["kind"], r["data"].get("reason")) for r in store.records_of("a1")]
    assert kinds == [("agent.online", "birth"), ("agent.clock_skew", None), ("agent.offline", "heartbeat_timeout")]
    row = next(r for r in store.agents() if r.id == "a1")
    assert row.online is False and row.outbox_depth == 7 and row.clock_offset == 5.0
    ing.handle([a.ctl("state", "birth", heartbeat_interval=1.0)])
    ing.handle([a.ctl("state", "death")])
    assert [r["data"]["reason"] for r in store.records_of("a1", "agent.offline")] == ["heartbeat_timeout", "last_will"]
    assert ing.vault.verify() == len(store.records_of("a1"))


def test_config_is_published_signed_when_the_inventory_moves(setup, store: Store) -> None:  # noqa: ANN001
    """A new inventory version goes out retained and signed to every agent of the venue, once; an
    agent whose birth reports an older version gets it again."""
    from protocol.inventory import Device, Inventory

    ing, a, ckey, _ = setup
    assert ing.tick() == []  # no inventory yet: nothing to push
    store.replace_inventory("V1", [Device("00:11:22:33:44:01", "192.0.2.21", "camera")])
    ing.configs._next_check = 0
    (topic, payload, retain), = ing.tick()
    env = decode(payload)
    assert (topic, retain, env.stream, env.seq) == ("vg/v1/a1/cfg", True, "cfg", 1)
    assert env.verify(ckey.public_key())
    assert Inventory.from_json(env.records[0]["data"]["inventory"]).by_mac["00:11:22:33:44:01"].ip == "192.0.2.21"
    ing.configs._next_check = 0
    assert ing.tick() == []
    ing.handle([a.ctl("state", "birth", heartbeat_interval=1.0, config_version=0)])
    assert [t for t, _, _ in ing.tick()] == ["vg/v1/a1/cfg"]


def test_shipped_log_lines_are_stored_once_per_offset(setup, store: Store) -> None:  # noqa: ANN001
    """Lines shipped at least once (re-shipped after an agent crash, in other records) are kept
    once per (file, offset); the records index keeps where they came from, not the text."""
    ing, a, _, _ = setup

    def lines(seq: int, pairs: list[tuple[int, str]]) -> Message:
        data = {"source": "app", "type": "application", "path": "/var/log/exam/app.log", "file_key": "8:77:abcd",
                "lines": [list(p) for p in pairs], "end": pairs[-1][0] + len(pairs[-1][1]) + 1}
        env = Envelope("a1", "boot1", seq, NOW, "log", (record("log.lines", NOW, data, seq=seq),)).signed(a.key)
        return Message("vg/v1/a1/log", env.encode(), NOW)

    ing.handle([lines(1, [(0, "考生 001 登录"), (20, "考生 002 登录")])])
    ing.handle([lines(2, [(20, "考生 002 登录"), (40, "考生 003 登录")]), lines(3, [(40, "考生 003 登录")])])
    stored = store.log_lines("a1")
    assert [(r["offset"], r["text"], r["seq"]) for r in stored] == [(0, "考生 001 登录", 1), (20, "考生 002 登录", 1),
                                                                  (40, "考生 003 登录", 2)]
    rec = store.records_of("a1", "log.lines")[0]
    assert rec["data"] == {"source": "app", "type": "application", "path": "/var/log/exam/app.log",
                           "file_key": "8:77:abcd", "end": 30, "first": 0, "count": 2}
