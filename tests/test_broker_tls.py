"""The production broker (deploy/mosquitto/mosquitto.conf + acl, started as shipped) with the PKI
from `pki init`: mutual TLS, the per-agent ACL, the CRL, and MQTT v3.1.1's silent drop.

Agents and the collector here are the real processes and the real CLI; the raw paho clients
stand in only for what no VenueGuard code would do (no certificate, v3.1.1, snooping)."""

from __future__ import annotations

import json
import signal
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
import pytest

from collector.broker import free_port
from collector.cli import main
from collector.pki import Pki, pki_of
from collector.store import Store
from protocol.tls import verifying_context
from tests.support import Proc, agent_toml, outbox_state, wait_for
from tests.tlsbroker import RawClient, TlsBroker, client_files


@dataclass
class Site:
    """A collector data dir with a PKI, its config, and the production broker trusting it."""

    tmp: Path
    toml: Path
    data: Path
    pki: Pki
    broker: TlsBroker
    store: Store

    def cli(self, *args: str) -> int:
        """Run ``venueguard-collector --config <toml> ARGS`` in this process."""
        return main(["--config", str(self.toml), *args])

    def enroll(self, agent_id: str) -> Path:
        """Enroll with the CLI; the bundle carries the TLS material."""
        out = self.tmp / f"{agent_id}.bundle.json"
        assert self.cli("enroll", agent_id, "--venue", "V1", "--out", str(out)) == 0
        return out

    def collector(self) -> Proc:
        return Proc(["-m", "collector.cli", "--config", str(self.toml), "run"], self.tmp / "collector.log").start()

    def agent(self, name: str, bundle: Path) -> tuple[Proc, Path]:
        """An agent process (host watcher playing a flip scenario) with ``bundle``."""
        home = self.tmp / name
        cfg = agent_toml(home, bundle)
        return Proc(["-m", "agent.cli", "run", "--config", str(cfg)], self.tmp / f"{name}.log").start(), home

    def drained(self, agent_id: str, home: Path) -> int:
        """Last seq when the outbox is empty and the store holds 1..last once each, else 0."""
        last, depth = outbox_state(home)
        ok = depth == 0 and last > 0 and self.store.record_seqs(agent_id) == list(range(1, last + 1))
        return last if ok else 0

    def agent_row(self, agent_id: str):  # noqa: ANN201 - AgentRow
        return next(a for a in self.store.agents() if a.id == agent_id)


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Site]:
    """`pki init` through the CLI, then the shipped broker config on a free loopback port."""
    port = free_port()
    toml = tmp_path / "collector.toml"
    toml.write_text(
        '[collector]\ndata_dir = "collector"\n\n'
        f'[broker]\nport = {port}\n'
        'tls_ca = "collector/pki/ca.crt"\ntls_cert = "collector/pki/collector.crt"\n'
        'tls_key = "collector/pki/collector.key"\n\n'  # relative to this file
        f"[web]\nport = {free_port()}\n")
    assert main(["--config", str(toml), "pki", "init", "--broker-host", "127.0.0.1"]) == 0
    init_out = capsys.readouterr()
    assert "PRIVATE" not in init_out.out + init_out.err
    data = tmp_path / "collector"
    pki = pki_of(data)
    broker = TlsBroker(tmp_path / "broker", pki, port).start()
    store = Store(f"sqlite:///{data / 'index.sqlite3'}")
    store.migrate()
    yield Site(tmp_path, toml, data, pki, broker, store)
    broker.kill()
    store.close()


def _key_lines(site: Site, *bundles: Path) -> set[str]:
    """Base64 body lines of every private key of the site and of the bundles' TLS keys."""
    texts = [p.read_text() for p in site.pki.folder.glob("*.key")]
    texts += [json.loads(b.read_text())["tls"]["key"] for b in bundles]
    return {line for text in texts for line in text.splitlines() if line and not line.startswith("-----")}


def _assert_no_keys_in(paths: list[Path], secrets: set[str]) -> None:
    for path in paths:
        text = path.read_text(errors="replace")
        assert "PRIVATE KEY" not in text, path
        assert not [s for s in secrets if s in text], f"key material in {path}"


def test_pki_init_keys_are_0600_and_never_printed(site: Site) -> None:
    """Every key `pki init` wrote is owner-only; the CLI printed paths, not keys (checked by the fixture)."""
    for name in ("ca.key", "broker.key", "collector.key"):
        assert stat.S_IMODE(site.pki.path(name).stat().st_mode) == 0o600
    assert site.cli("pki", "init", "--broker-host", "127.0.0.1") == 2  # a second init would orphan agents


def test_enrolled_agent_delivers_through_tls_and_is_acked(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """Happy path: bundle with certificate → mutual TLS, MQTT v5, user name = agent id; every
    record is stored once and acked (outbox drained); no key material in any log."""
    bundle = site.enroll("a1")
    assert "TLS" in capsys.readouterr().out
    collector = site.collector()
    agent, home = site.agent("a1", bundle)
    last = wait_for(lambda: site.drained("a1", home) >= 20, 90, what="a1's records stored and acked over TLS")
    assert last and site.agent_row("a1").online
    log = site.broker.log_text
    assert "as a1 (p5," in log and "u'a1'" in log  # MQTT v5, user name from the certificate's CN
    assert "as venueguard-collector (p5," in log and "u'venueguard-collector'" in log
    agent.stop()
    collector.stop()
    _assert_no_keys_in([site.tmp / "a1.log", site.tmp / "collector.log", site.broker.workdir / "mosquitto.log"],
                       _key_lines(site, bundle))


def test_agent_publishing_on_another_agents_topic_is_refused_and_keeps_its_records(site: Site) -> None:
    """An agent whose bundle claims a1 but whose certificate is a2's: every publish on vg/v1/a1/…
    gets PUBACK 0x87, the uplink counts it as a failure and the records stay in its outbox."""
    a1 = json.loads(site.enroll("a1").read_text())
    a2 = json.loads(site.enroll("a2").read_text())
    impostor = site.tmp / "impostor.bundle.json"
    impostor.write_text(json.dumps({**a1, "tls": a2["tls"]}))
    collector = site.collector()
    agent, home = site.agent("impostor", impostor)
    log = site.tmp / "impostor.log"
    wait_for(lambda: "0x87" in log.read_text(), 60, what="the impostor to see PUBACK 0x87")
    assert "broker refused publish on vg/v1/a1/" in log.read_text()
    wait_for(lambda: outbox_state(home)[1] >= 20, 60, what="records to pile up in the impostor's outbox")
    last, depth = outbox_state(home)
    assert depth == last  # nothing was deleted...
    assert site.store.record_seqs("a1") == []  # ...because nothing got through
    assert not site.agent_row("a1").online  # not even its birth
    agent.stop()
    collector.stop()


def test_revoked_agent_cannot_connect(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """`pki revoke` + broker reload (SIGHUP, as `systemctl reload mosquitto`): the agent that
    delivered a moment ago is refused at the TLS handshake when it reconnects; the registry says revoked."""
    bundle = site.enroll("a1")
    collector = site.collector()
    agent, home = site.agent("a1", bundle)
    wait_for(lambda: site.drained("a1", home) >= 5, 90, what="a1 delivering before the revocation")
    capsys.readouterr()
    assert site.cli("pki", "revoke", "a1") == 0
    assert "crl.pem" in capsys.readouterr().out
    assert site.agent_row("a1").revoked
    assert site.broker.proc is not None
    site.broker.proc.send_signal(signal.SIGHUP)
    tls = bundle_ctx(site, bundle)
    wait_for(lambda: not _connects(site, tls), 30, interval=0.5, what="the reloaded broker to refuse a1's certificate")
    agent.kill()
    refused_before = site.broker.log_text.count("certificate verify failed")
    connects_before = (site.tmp / "a1.log").read_text().count("connected to broker as a1")
    agent.start()
    wait_for(lambda: site.broker.log_text.count("certificate verify failed") >= refused_before + 2, 60,
             what="the broker to refuse the restarted agent twice")
    agent_log = (site.tmp / "a1.log").read_text()
    assert agent_log.count("connected to broker as a1") == connects_before
    assert "certificate is revoked, expired or not from the broker's CA" in agent_log  # said, not a bare drop
    agent.stop()
    collector.stop()


def _connects(site: Site, tls: ssl.SSLContext) -> bool:
    """Whether a client with ``tls`` gets a CONNACK within 3 s."""
    probe = RawClient("probe", site.broker.port, tls)
    try:
        probe.connect()
    except OSError:
        return False
    ok = probe.connected.wait(3)
    probe.close()
    return ok


def bundle_ctx(site: Site, bundle: Path) -> ssl.SSLContext:
    """A client context from a bundle's TLS material."""
    tls = json.loads(bundle.read_text())["tls"]
    return client_files(site.pki, bundle.stem, site.tmp, tls["cert"], tls["key"])


def test_client_without_a_certificate_of_our_ca_cannot_connect(site: Site, tmp_path: Path) -> None:
    """No certificate, a certificate from another CA, or no TLS at all: no CONNACK ever."""
    no_cert = RawClient("nocert", site.broker.port, verifying_context(ca_file=str(site.pki.path("ca.crt")))).connect()
    other = Pki(tmp_path / "other")
    other.init(["127.0.0.1"], "venueguard-collector")
    foreign = other.issue_agent("a1")
    stranger_ctx = client_files(site.pki, "stranger", tmp_path, foreign.cert_pem, foreign.key_pem)
    stranger = RawClient("a1", site.broker.port, stranger_ctx).connect()
    plain = RawClient("plain", site.broker.port, None)
    try:
        plain.connect()
    except OSError:
        pass  # the TLS listener may reset a plain MQTT CONNECT outright
    for client in (no_cert, stranger, plain):
        assert not client.connected.wait(3) and client.connack is None
        client.close()
    log = site.broker.log_text
    assert "peer did not return a certificate" in log and "certificate verify failed" in log


def test_mqtt_311_publish_on_another_agents_topic_is_dropped_unseen(site: Site) -> None:
    """v3.1.1 gets PUBACK "success" for a denied publish (DESIGN.md §8) but nothing reaches the
    collector identity; the same publish over v5 is answered 0x87."""
    site.enroll("a1")
    a2 = site.enroll("a2")
    watcher = RawClient("venueguard-collector", site.broker.port, client_files(site.pki, "collector", site.tmp)).connect()
    assert watcher.connected.wait(10)
    watcher.client.subscribe("vg/v1/+/ev", qos=1)
    wait_for(lambda: watcher.subacks, 10, what="the collector's subscription")
    v311 = RawClient("a2", site.broker.port, bundle_ctx(site, a2), protocol=mqtt.MQTTv311).connect()
    assert v311.connected.wait(10)
    denied = v311.client.publish("vg/v1/a1/ev", b"forged", qos=1)
    own = v311.client.publish("vg/v1/a2/ev", b"own", qos=1)
    wait_for(lambda: own.mid in v311.pubacks and denied.mid in v311.pubacks, 10, what="both PUBACKs")
    wait_for(lambda: watcher.messages, 10, what="a2's own message")
    assert [(m.topic, m.payload) for m in watcher.messages] == [("vg/v1/a2/ev", b"own")]
    v311.close()
    v5 = RawClient("a2", site.broker.port, bundle_ctx(site, a2)).connect()
    assert v5.connected.wait(10)
    again = v5.client.publish("vg/v1/a1/ev", b"forged", qos=1)
    wait_for(lambda: again.mid in v5.pubacks, 10, what="the v5 PUBACK")
    assert v5.pubacks[again.mid].value == 0x87
    v5.close()
    watcher.close()


def test_acl_confines_agents_and_lets_the_collector_read_all(site: Site) -> None:
    """An agent cannot write its own ack/cmd/cfg nor read another agent's streams; the collector
    identity reads every agent stream, also through a shared subscription, and writes cfg."""
    a1, a2 = site.enroll("a1"), site.enroll("a2")
    col = RawClient("venueguard-collector", site.broker.port, client_files(site.pki, "collector", site.tmp)).connect()
    snoop = RawClient("a1", site.broker.port, bundle_ctx(site, a1)).connect()
    peer = RawClient("a2", site.broker.port, bundle_ctx(site, a2)).connect()
    assert col.connected.wait(10) and snoop.connected.wait(10) and peer.connected.wait(10)
    col.client.subscribe("$share/vg/vg/v1/+/ev", qos=1)
    snoop.client.subscribe([("vg/v1/+/ev", 1), ("vg/v1/a2/cfg", 1), ("$share/x/vg/v1/+/ev", 1)])
    peer.client.subscribe("vg/v1/a2/cfg", qos=1)
    wait_for(lambda: len(col.subacks) + len(snoop.subacks) + len(peer.subacks) == 3, 10, what="SUBACKs")
    forged = [snoop.client.publish(f"vg/v1/a1/{s}", b"x", qos=1).mid for s in ("ack", "cmd", "cfg")]
    wait_for(lambda: all(m in snoop.pubacks for m in forged), 10, what="PUBACKs of the forged collector topics")
    assert [snoop.pubacks[m].value for m in forged] == [0x87] * 3
    peer.client.publish("vg/v1/a2/ev", b"event", qos=1)
    col.client.publish("vg/v1/a2/cfg", b"config", qos=1, retain=True)  # as the config push does
    wait_for(lambda: col.messages and peer.messages, 10, what="the collector's and a2's deliveries")
    assert [(m.topic, m.payload) for m in col.messages] == [("vg/v1/a2/ev", b"event")]
    assert [(m.topic, m.payload) for m in peer.messages] == [("vg/v1/a2/cfg", b"config")]
    assert snoop.messages == []
    peer.close()
    # A restarted agent gets its retained config (check_retain_source: the collector may write it).
    later = RawClient("a2", site.broker.port, bundle_ctx(site, a2)).connect()
    assert later.connected.wait(10)
    later.client.subscribe("vg/v1/a2/cfg", qos=1)
    wait_for(lambda: later.messages, 10, what="the retained config")
    assert later.messages[0].payload == b"config" and later.messages[0].retain
    for c in (col, snoop, later):
        c.close()


def test_agent_cannot_take_the_collectors_session(site: Site) -> None:
    """An agent connecting with the collector's client id gets its certificate's name as client id
    (use_username_as_clientid): the collector is not kicked off nor its queued session taken."""
    a1 = site.enroll("a1")
    col = RawClient("venueguard-collector", site.broker.port, client_files(site.pki, "collector", site.tmp)).connect()
    assert col.connected.wait(10)
    imp = RawClient("venueguard-collector", site.broker.port, bundle_ctx(site, a1)).connect()
    assert imp.connected.wait(10)
    wait_for(lambda: "as a1 (p5," in site.broker.log_text, 10, what="the broker to name the impostor a1")
    assert not col.gone.wait(2)
    imp.close()
    col.close()
