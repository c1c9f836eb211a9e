"""A broker that refuses a publish (PUBACK reason 0x87 under an ACL, MQTT v5) is a failure:
counted, logged with the topic, and the records stay in the outbox instead of being lost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from collector.broker import Mosquitto
from tests.support import Rig, outbox_state, wait_for


def test_refused_publish_keeps_records_and_is_reported(tmp_path: Path, broker_factory: Callable[..., Mosquitto]) -> None:
    """With ``ev`` denied by the ACL, nothing is acked or deleted and the agent logs 0x87."""
    acl = tmp_path / "acl"
    acl.write_text("topic read vg/v1/#\ntopic write vg/v1/+/hb\ntopic write vg/v1/+/state\ntopic write vg/v1/+/ack\n")
    broker = broker_factory(acl_file=acl)
    rig = Rig(tmp_path, broker.port)
    rig.collector.start()
    rig.agent.start()
    log = tmp_path / "agent.log"
    wait_for(lambda: "0x87" in log.read_text(), 30, what="the agent to see PUBACK 0x87")
    assert "vg/v1/a1/ev" in log.read_text() and "Not authorized" in log.read_text()
    wait_for(lambda: outbox_state(rig.home)[1] >= 20, 30, what="records to pile up in the outbox")
    time.sleep(1)
    assert rig.seqs() == []  # nothing got through...
    last, depth = outbox_state(rig.home)
    assert depth == last  # ...and nothing was deleted
    assert next(a for a in rig.store.agents() if a.id == "a1").online  # heartbeats (allowed) still arrive
    rig.stop()
