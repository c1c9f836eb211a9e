"""The collector-cluster broker (deploy/mosquitto/cluster/: mosquitto.conf with the dynamic-security
plugin, rules from dynsec.py) with certificate identities: collectors share `$share/vg-collectors/…`,
an agent can neither join that group nor read or write another agent's topics (scale-out.md fact 3,
§6f), and the live add/remove commands of the README work.

Raw paho v5 clients stand in for collectors and agents where what is tested is the broker's answer
to each packet (SUBACK/PUBACK reason codes) and who receives what; the last test runs the real
clustered collector processes and an agent process on the same config."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from collector.broker import free_port
from collector import config
from collector.cli import main
from collector.doctor import Context, run_checks
from collector.pki import Pki, pki_of
from collector.store import Store
from tests.sharebroker import (ADMIN, CLUSTER_CONF, ShareBroker, ShareSite, dynsec, issue_agent_files, node_toml,
                               publish, subscribe)
from tests.support import Proc, agent_toml, outbox_state, wait_for
from tests.tlsbroker import SHIPPED_CONF, RawClient

COL_A, COL_B = "venueguard-collector-a", "venueguard-collector-b"
STREAMS = ("ev", "log", "hb", "rpt", "state")
SHARED = [f"$share/vg-collectors/vg/v1/+/{s}" for s in STREAMS]  # what collector/service.py subscribes to
GRANTED, NOT_AUTHORIZED = 1, 0x87  # SUBACK "granted QoS 1"; SUBACK/PUBACK "not authorized"


@pytest.fixture
def share(tmp_path: Path) -> Iterator[ShareSite]:
    """A PKI with two collector identities and the dynsec admin, agents a1 and a2 in the rules
    (taken from the certificate ledger, as the README does it), a3 enrolled only afterwards."""
    pki = Pki(tmp_path / "pki")
    pki.init(["127.0.0.1"], "venueguard-collector")
    for ident in (COL_A, COL_B, ADMIN):
        pki.issue_collector(ident)
    for agent in ("a1", "a2"):
        issue_agent_files(pki, agent, tmp_path)
    rules = tmp_path / "dynamic-security.json"
    done = dynsec("init", "--out", str(rules), "--collector", COL_A, "--collector", COL_B,
                  "--ledger", str(pki.path("ledger.json")))
    assert done.returncode == 0, done.stderr
    issue_agent_files(pki, "a3", tmp_path)
    broker = ShareBroker(tmp_path / "broker", pki, rules).start()
    site = ShareSite(tmp_path, pki, broker)
    yield site
    broker.kill()


def _collectors(site: ShareSite) -> tuple[RawClient, RawClient]:
    """Both collector identities, subscribed to the shared filters (all granted)."""
    a, b = site.client(COL_A), site.client(COL_B)
    assert subscribe(a, *SHARED) == [GRANTED] * len(SHARED)
    assert subscribe(b, *SHARED) == [GRANTED] * len(SHARED)
    return a, b


def _send(agent: RawClient, agent_id: str, count: int) -> list[bytes]:
    """``count`` distinct records on the agent's own ev topic, each PUBACKed as delivered (0)."""
    payloads = [f"{agent_id}-{i}".encode() for i in range(count)]
    mids = [agent.client.publish(f"vg/v1/{agent_id}/ev", p, qos=1).mid for p in payloads]
    wait_for(lambda: all(m in agent.pubacks for m in mids), 10, what=f"{agent_id}'s PUBACKs")
    assert [agent.pubacks[m].value for m in mids] == [0] * count
    return payloads


def _received(*clients: RawClient) -> list[bytes]:
    return [m.payload for c in clients for m in c.messages]


def test_two_collectors_share_the_streams_round_robin_and_together_get_everything(share: ShareSite) -> None:
    col_a, col_b = _collectors(share)
    a1, a2 = share.client("a1"), share.client("a2")
    sent = _send(a1, "a1", 20) + _send(a2, "a2", 20)
    wait_for(lambda: len(_received(col_a, col_b)) >= len(sent), 10, what="all 40 records at the collectors")
    got_a, got_b = _received(col_a), _received(col_b)
    assert sorted(got_a + got_b) == sorted(sent)  # all of it, none twice
    assert abs(len(got_a) - len(got_b)) <= 1  # Mosquitto's strict round robin (scale-out.md fact 1a)
    for agent in ("a1", "a2"):  # not sticky: each agent's records are split between both
        assert any(p.startswith(agent.encode()) for p in got_a) and any(p.startswith(agent.encode()) for p in got_b)
    for c in (col_a, col_b, a1, a2):
        c.close()


def test_an_agent_cannot_join_the_share_group_and_the_collectors_still_get_every_record(share: ShareSite) -> None:
    """fact 3 with acl_file: the agent's SUBACK was granted and it swallowed half the records.
    Here every such SUBSCRIBE is refused, and nothing goes missing."""
    col_a, col_b = _collectors(share)
    a1, a2 = share.client("a1"), share.client("a2")
    for stolen in (*SHARED, "$share/vg-collectors/vg/v1/a2/ev", "$share/own-group/vg/v1/+/ev",
                   "vg/v1/+/ev", "vg/v1/a2/ev", "vg/v1/a2/ack", "vg/v1/#", "#"):
        assert subscribe(a1, stolen) == [NOT_AUTHORIZED], stolen
    # One SUBSCRIBE mixing its own ack with the share filter: only its own is granted.
    assert subscribe(a1, "vg/v1/a1/ack", SHARED[0]) == [GRANTED, NOT_AUTHORIZED]
    sent = _send(a2, "a2", 30)
    wait_for(lambda: len(_received(col_a, col_b)) >= len(sent), 10, what="a2's 30 records at the collectors")
    assert sorted(_received(col_a, col_b)) == sorted(sent)
    assert _received(col_a) and _received(col_b)
    assert a1.messages == []
    for c in (col_a, col_b, a1, a2):
        c.close()


def test_an_agent_writes_only_its_own_streams_and_reads_only_its_own_ack_cmd_cfg(share: ShareSite) -> None:
    col_a, col_b = _collectors(share)
    a1, a2 = share.client("a1"), share.client("a2")
    assert subscribe(a1, "vg/v1/a1/ack", "vg/v1/a1/cmd", "vg/v1/a1/cfg") == [GRANTED] * 3  # as agent/uplink.py
    assert subscribe(a2, "vg/v1/a2/ack") == [GRANTED]
    for stream in STREAMS:
        assert publish(a1, f"vg/v1/a1/{stream}", stream.encode()) == 0, stream
    refused = ["vg/v1/a2/ev", "vg/v1/a2/state", "vg/v1/a1/ack", "vg/v1/a1/cmd", "vg/v1/a1/cfg", "vg/v1/a2/ack",
               "vg/v1/authority/cases", "$CONTROL/dynamic-security/v1", "vg/v1/a1/other"]
    for topic in refused:
        assert publish(a1, topic, b"forged") == NOT_AUTHORIZED, topic
    assert publish(col_a, "vg/v1/a1/ack", b"ack-a1") == 0
    assert publish(col_b, "vg/v1/a1/cfg", b"cfg-a1", retain=True) == 0  # as the config push does
    wait_for(lambda: len(a1.messages) >= 2, 10, what="a1's ack and cfg")
    assert sorted((m.topic, m.payload) for m in a1.messages) == [("vg/v1/a1/ack", b"ack-a1"), ("vg/v1/a1/cfg", b"cfg-a1")]
    wait_for(lambda: len(_received(col_a, col_b)) >= len(STREAMS), 10, what="a1's five streams at the collectors")
    assert sorted(_received(col_a, col_b)) == sorted(s.encode() for s in STREAMS)  # and no forged one
    assert a2.messages == []
    a1.close()
    # A restarted agent gets its retained config (check_retain_source: the collector may write it).
    again = share.client("a1")
    assert subscribe(again, "vg/v1/a1/cfg") == [GRANTED]
    wait_for(lambda: again.messages, 10, what="the retained config")
    assert again.messages[0].payload == b"cfg-a1" and again.messages[0].retain
    for c in (col_a, col_b, again, a2):
        c.close()


def test_unknown_identity_has_no_rights_until_added_and_none_after_removal(share: ShareSite) -> None:
    """a3's certificate is valid but it is not in the rules yet: dynsec 2.0 lets it connect (the
    certificate authenticates) but grants nothing. `dynsec.py add-agent` gives it its own topics
    at once; `remove-agent` disconnects it, and reconnecting it gets nothing again."""
    col_a, col_b = _collectors(share)
    a3 = share.client("a3")
    assert publish(a3, "vg/v1/a3/ev", b"before") == NOT_AUTHORIZED
    assert subscribe(a3, "vg/v1/a3/ack", SHARED[0]) == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    a3.close()
    added = share.ctrl("add-agent", "a3")
    assert added.returncode == 0, added.stderr
    assert share.ctrl("add-agent", "a3").returncode == 0  # repeating it is harmless
    a3 = share.client("a3")
    assert subscribe(a3, "vg/v1/a3/ack", SHARED[0]) == [GRANTED, NOT_AUTHORIZED]
    assert publish(a3, "vg/v1/a3/ev", b"after") == 0
    assert publish(a3, "vg/v1/a1/ev", b"forged") == NOT_AUTHORIZED
    wait_for(lambda: _received(col_a, col_b) == [b"after"], 10, what="a3's record at the collectors")
    removed = share.ctrl("remove-agent", "a3")
    assert removed.returncode == 0, removed.stderr
    assert a3.gone.wait(10)  # cut off at once (the shipped acl_file config cannot do that)
    assert share.ctrl("remove-agent", "a3").returncode == 0  # repeating it is harmless too
    a3.close()
    a3 = share.client("a3")
    assert publish(a3, "vg/v1/a3/ev", b"revoked") == NOT_AUTHORIZED
    a3.close()
    for c in (col_a, col_b):
        c.close()


def test_a_collector_identity_joins_the_share_group_only_once_added_and_leaves_it_when_removed(
        share: ShareSite) -> None:
    """A third node: its certificate alone does not let it subscribe; `add-collector` does.
    `remove-collector` while it runs: it reconnects into its kept session, whose shared
    subscriptions Mosquitto checks again and drops, so the other node gets everything at once."""
    col_c = "venueguard-collector-c"
    share.pki.issue_collector(col_c)
    before = share.client(col_c)
    assert subscribe(before, *SHARED) == [NOT_AUTHORIZED] * len(SHARED)
    before.close()
    done = share.ctrl("add-collector", col_c)
    assert done.returncode == 0, done.stderr
    col_a, node = share.client(COL_A, session_expiry=300), share.client(col_c, session_expiry=300)
    assert subscribe(col_a, *SHARED) == subscribe(node, *SHARED) == [GRANTED] * len(SHARED)
    a1 = share.client("a1")
    assert subscribe(a1, "vg/v1/a1/cmd") == [GRANTED]
    _send(a1, "a1", 4)
    wait_for(lambda: len(node.messages) == len(col_a.messages) == 2, 10, what="the new node's share")
    assert publish(node, "vg/v1/a1/cmd", b"cmd") == 0
    wait_for(lambda: [m.payload for m in a1.messages] == [b"cmd"], 10, what="the new node's command at a1")
    node.connected.clear()
    done = share.ctrl("remove-collector", col_c)
    assert done.returncode == 0, done.stderr
    assert node.gone.wait(10) and node.connected.wait(10)  # kicked, and paho is back in its session
    sent = _send(a1, "a1", 10)
    wait_for(lambda: len(col_a.messages) >= 2 + len(sent), 10, what="every record at the remaining node")
    assert [m.payload for m in col_a.messages][2:] == sent and len(node.messages) == 2
    for c in (node, col_a, a1):
        c.close()


def test_init_takes_live_agents_from_the_ledger_with_no_passwords(share: ShareSite) -> None:
    """A revoked agent gets no rules; nobody has a password (identities are certificate CNs);
    the admin identity has no right on VenueGuard's topics."""
    share.pki.revoke_agent("a2")
    out = share.tmp / "after-revoke.json"
    done = dynsec("init", "--out", str(out), "--collector", COL_A, "--ledger", str(share.pki.path("ledger.json")))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert sorted(c["username"] for c in doc["clients"]) == sorted([COL_A, ADMIN, "a1", "a3"])
    assert not [c for c in doc["clients"] if "password" in c]
    admin_role = next(r for r in doc["roles"] if r["rolename"] == "vg-dynsec-admin")
    assert {a["topic"] for a in admin_role["acls"]} == {"$CONTROL/dynamic-security/#"}
    assert doc["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}
    refused = dynsec("init", "--out", str(out), "--collector", "bad/name")
    assert refused.returncode == 2 and "bad/name" in refused.stderr


def test_cluster_config_is_the_shipped_config_with_dynsec_instead_of_acl_file() -> None:
    """The two files must not drift apart: only comments and the ACL mechanism differ."""
    def settings(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    shipped, cluster = settings(SHIPPED_CONF), settings(CLUSTER_CONF)
    assert [s for s in shipped if not s.startswith("acl_file ")] == [s for s in cluster if not s.startswith("plugin")]
    assert not [s for s in cluster if re.match(r"acl_file|password_file|allow_anonymous true", s)]
    assert [s.split()[0] for s in cluster if s.startswith("plugin")] == ["plugin", "plugin_opt_config_file"]


def test_real_cluster_nodes_and_agent_deliver_everything_over_the_dynsec_broker(tmp_path: Path, pg_url: str,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The real software on this config: `pki init` and `issue_collector` give the nodes' identities,
    `dynsec.py init --ledger` the rules; two clustered collector processes and an enrolled agent
    process over mutual TLS. Every record is stored once, through both nodes' vaults."""
    port = free_port()
    data_a, data_b = tmp_path / "collector-a", tmp_path / "collector-b"
    pki_dir = data_a / "pki"
    toml_a, toml_b = tmp_path / "a.toml", tmp_path / "b.toml"
    toml_a.write_text(node_toml(data_a, "a", port, pg_url, pki_dir, "collector"))  # pki init's CN = client_id
    toml_b.write_text(node_toml(data_b, "b", port, pg_url, pki_dir, f"collector-{COL_B}"))
    assert main(["--config", str(toml_a), "pki", "init", "--broker-host", "127.0.0.1"]) == 0
    assert main(["--config", str(toml_a), "pki", "collector-cert", COL_B]) == 0
    for args in (["migrate"], ["enroll", "a1", "--venue", "V1", "--out", str(tmp_path / "a1.bundle.json")]):
        assert main(["--config", str(toml_a), *args]) == 0, args
    assert "dynsec.py add-agent a1" in capsys.readouterr().out  # enroll in a cluster names the broker step
    data_b.mkdir()
    shutil.copy(data_a / "collector.key", data_b / "collector.key")  # agents check acks against one key
    rules = tmp_path / "dynamic-security.json"
    done = dynsec("init", "--out", str(rules), "--collector", COL_A, "--collector", COL_B,
                  "--ledger", str(pki_dir / "ledger.json"))
    assert done.returncode == 0, done.stderr
    broker = ShareBroker(tmp_path / "broker", pki_of(data_a), rules, port).start()
    store = Store(pg_url)
    try:
        for name, toml in (("a", toml_a), ("b", toml_b)):
            Proc(["-m", "collector.cli", "--config", str(toml), "run"], tmp_path / f"collector-{name}.log").start()
        home = tmp_path / "a1"
        Proc(["-m", "agent.cli", "run", "--config", str(agent_toml(home, tmp_path / "a1.bundle.json"))],
             tmp_path / "a1.log").start()

        def drained() -> int:
            last, depth = outbox_state(home)
            return last if depth == 0 and last >= 30 and store.record_seqs("a1") == list(range(1, last + 1)) else 0

        wait_for(drained, 60, 0.3, "a1's outbox to drain with the store holding 1..last once each")
        with store.engine.connect() as conn:
            vaults = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT vault_id FROM records WHERE agent_id = 'a1'"))}
        assert vaults == {"a", "b"}  # both nodes took their share
        log = broker.log_text
        assert f"as {COL_A} (p5," in log and f"as {COL_B} (p5," in log and "as a1 (p5," in log
        # doctor, on this broker: its identity is refused the share-group probe; a leader holds the lock
        found = {f.item: f for f in run_checks(Context(config.load(toml_a), "venueguard-collector", []))}
        assert found["broker"].result == "pass", found["broker"].detail
        assert found["cluster"].result == "pass", found["cluster"].detail
    finally:
        store.close()
        broker.kill()


def test_a_collector_whose_subscriptions_are_refused_says_so(share: ShareSite, caplog: pytest.LogCaptureFixture) -> None:
    """A node whose identity was never added connects fine but may subscribe to nothing: the
    collector logs each refused filter and how to grant it, rather than idling in silence."""
    from collector.ingest import Ingestor
    from collector.service import IngestService
    from collector.vault import Vault
    from protocol.keys import new_private_key
    from tests.tlsbroker import client_files

    ident = "venueguard-collector-x"
    share.pki.issue_collector(ident)
    store = Store(f"sqlite:///{share.tmp / 'x.sqlite3'}")
    store.migrate()
    vault = Vault(share.tmp / "vault-x")
    service = IngestService(Ingestor(store, vault, new_private_key(), vault_id="x"), "127.0.0.1", share.broker.port,
                            ident, tls=client_files(share.pki, f"collector-{ident}", share.tmp), session_expiry=0,
                            share_group="vg-collectors")
    with caplog.at_level("ERROR", logger="venueguard.collector.service"):
        service.start()
        try:
            wait_for(lambda: "refused the collector's subscriptions" in caplog.text, 10, what="the refusal logged")
        finally:
            service.stop()
            vault.close()
            store.close()
    assert all(f in caplog.text for f in SHARED) and "dynsec.py add-collector" in caplog.text
