"""Nothing lost: every record the agent committed reaches the store exactly once, through
broker crashes, collector crashes, agent crashes and a broker that drops queued messages.

Real Mosquitto, a real collector process and a real agent process; failures are SIGKILLs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from collector import keys
from collector.broker import Mosquitto
from collector.vault import Vault
from tests.support import Rig, outbox_state, wait_for

DRAIN = 90.0


def _finish(rig: Rig, minimum: int) -> None:
    """Wait for the agent's whole scenario to be delivered, then check store and vault."""
    last = wait_for(lambda: outbox_state(rig.home)[0] >= minimum and rig.drained(), DRAIN, 0.25,
                    "the outbox to drain into the store")
    rig.stop()
    seqs = rig.seqs()  # records the agent committed after the check may have landed too
    assert seqs[:last] == list(range(1, last + 1)) and len(set(seqs)) == len(seqs)
    vault = Vault(rig.data / "vault", keys.load_or_create(rig.data / "vault.key"))  # the collector's vault key
    assert vault.verify() > 0
    vault.close()


def test_broker_killed_and_restarted_mid_stream(tmp_path: Path, broker: Mosquitto) -> None:
    """kill -9 of the broker mid-stream loses nothing and duplicates nothing."""
    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: len(rig.seqs()) >= 30, 30, what="first records")
    broker.kill()
    time.sleep(2)
    broker.start()
    _finish(rig, 150)


def test_collector_killed_and_restarted_mid_stream(tmp_path: Path, broker: Mosquitto, db_url: str) -> None:
    """kill -9 of the collector mid-stream (SQLite and PostgreSQL index) loses and duplicates nothing."""
    rig = Rig(tmp_path, broker.port, db_url)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: len(rig.seqs()) >= 30, 30, what="first records")
    rig.collector.kill()
    time.sleep(2)
    rig.collector.start()
    wait_for(lambda: len(rig.seqs()) >= 80, 30, what="records after the restart")
    rig.collector.kill()
    rig.collector.start()
    _finish(rig, 150)


def test_agent_killed_with_a_full_outbox_and_restarted(tmp_path: Path, broker: Mosquitto) -> None:
    """kill -9 of the agent while its outbox holds unsent records: they go out after restart."""
    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: len(rig.seqs()) >= 10, 30, what="first records")
    broker.kill()
    wait_for(lambda: outbox_state(rig.home)[1] >= 30, 30, what="the outbox to fill while the broker is down")
    rig.agent.kill()
    pending = outbox_state(rig.home)[1]
    broker.start()
    rig.agent.start()
    _finish(rig, 30 + pending)


def test_broker_drops_queued_messages_beyond_its_limit(tmp_path: Path, broker_factory: Callable[..., Mosquitto]) -> None:
    """The collector is away longer than the broker's queue (5 messages) holds; the broker
    PUBACKs and drops the rest; application acks make the agent resend what never arrived."""
    broker = broker_factory(max_queued_messages=5)
    rig = Rig(tmp_path, broker.port, agent={"uplink": {"batch_records": 2}})
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: len(rig.seqs()) >= 10, 30, what="first records")
    rig.collector.stop()  # clean disconnect: the broker keeps its session and queues (up to 5)
    before = outbox_state(rig.home)[0]
    wait_for(lambda: outbox_state(rig.home)[0] >= before + 60, 30, what="records produced while the collector is away")
    rig.collector.start()
    _finish(rig, before + 60)
    assert "being dropped" in (broker.workdir / "mosquitto.log").read_text()  # the premise held
    assert "resend" in (tmp_path / "agent.log").read_text()


def test_agent_reinstalled_with_an_empty_outbox_keeps_every_record(tmp_path: Path, broker: Mosquitto) -> None:
    """The agent's data dir is wiped (reinstall, same bundle): its seqs restart at 1 while the
    collector holds more; the agent renumbers above the collector's watermark and loses nothing."""
    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: outbox_state(rig.home)[0] >= 150 and rig.drained(), DRAIN, 0.25, "the first install to deliver")
    held = len(rig.seqs())
    rig.agent.stop()
    shutil.rmtree(rig.home / "data")
    rig.agent.start()
    wait_for(lambda: outbox_state(rig.home)[0] > held + 100 and rig.drained(), DRAIN, 0.25, "the reinstall to deliver")
    rebased = rig.store.records_of("a1", "outbox.rebased")
    assert len(rebased) == 1 and rebased[0]["data"]["collector_acked"] >= held
    kinds = [r["kind"] for r in rig.store.records_of("a1") if r["seq"] and r["seq"] > held]
    assert kinds.count("agent.started") == 1 and kinds.count("host.snapshot") >= 1
    rig.stop()


def test_a_quiet_agent_does_not_resend_what_it_just_sent(tmp_path: Path, broker: Mosquitto) -> None:
    """Events 3 s apart with a 2 s ack timeout: each is acked in time, so none is sent twice (the
    timeout runs from the send, not from the last ack before a quiet spell)."""
    rig = Rig(tmp_path, broker.port, agent={"interval": 3.0, "steps": 4})
    rig.collector.start()
    rig.agent.start()
    last = wait_for(rig.drained, 30, what="every record delivered")  # (a resend while the collector started is fine)
    before = len((tmp_path / "agent.log").read_text())
    wait_for(lambda: outbox_state(rig.home)[0] >= last + 2 and rig.drained(), 30, what="records after quiet spells")
    rig.stop()
    log = (tmp_path / "agent.log").read_text()[before:]
    assert "resending" not in log, [line for line in log.splitlines() if "resending" in line]
