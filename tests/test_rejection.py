"""Bad input over the real broker: each refusal lands in the dead-letter table with its reason,
and the collector keeps ingesting the valid agent's traffic meanwhile."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.broker import Mosquitto
from protocol import keys
from protocol.envelope import MAX_PAYLOAD_BYTES, Envelope, record
from tests.support import Rig, enroll_agent, outbox_state, wait_for


def _publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_every_bad_message_is_dead_lettered_while_valid_traffic_flows(tmp_path: Path, broker: Mosquitto) -> None:
    """Forged signature, another agent's identity, unregistered agent, replayed seq with new
    content, malformed JSON, oversized payload and unknown version are each refused by name."""
    rig = Rig(tmp_path, broker.port)
    real = keys.read_bundle(rig.home / "agent.bundle.json")
    other = keys.read_bundle(enroll_agent(rig.store, rig.data, "a2", "V1", broker.port, tmp_path / "a2.json"))
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: len(rig.seqs()) >= 5, 30, what="first records")

    def env(agent_id: str, key, seq: int, **data: object) -> dict:  # noqa: ANN001
        e = Envelope(agent_id, "evil", seq, time.time(), "ev", (record("host.snapshot", time.time(), dict(data), seq=seq),))
        return json.loads(e.signed(key).encode())

    forged = env("a1", real.private_key, 10_000)
    forged["records"][0]["data"] = {"changed": True}
    unknown_version = env("a1", real.private_key, 10_001)
    unknown_version["v"] = 7
    bad = [
        ("vg/v1/a1/ev", forged, "bad_signature"),
        ("vg/v1/a1/ev", env("a2", other.private_key, 1), "agent_mismatch"),
        ("vg/v1/ghost/ev", env("ghost", keys.new_private_key(), 1), "unregistered_agent"),
        ("vg/v1/a1/ev", env("a1", real.private_key, 1, rewritten=True), "replayed_seq"),
        ("vg/v1/a1/ev", b"{\"v\": 1, broken", "bad_json"),
        ("vg/v1/a1/ev", b"[" + b"0," * (MAX_PAYLOAD_BYTES // 2) + b"0]", "oversized"),
        ("vg/v1/a1/ev", unknown_version, "unknown_version"),
    ]
    client = _publisher(broker.port)
    for topic, payload, _ in bad:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(topic, data, qos=1).wait_for_publish(5)
    expected = sorted(reason for _, _, reason in bad)
    wait_for(lambda: sorted(d["reason"] for d in rig.store.dead_letters()) == expected, 30, what="all dead letters")
    client.loop_stop()
    counts = rig.store.dead_letter_counts()
    assert all(counts[r] == 1 for r in expected)
    assert 10_000 not in rig.seqs() and 10_001 not in rig.seqs()
    # Meanwhile the real agent's stream keeps landing, exactly once.
    before = len(rig.seqs())
    wait_for(lambda: len(rig.seqs()) > before + 20, 30, what="valid traffic after the attack")
    wait_for(lambda: outbox_state(rig.home)[0] >= 150 and rig.drained(), 60, 0.25, what="the agent to drain")
    assert rig.collector.alive()
    rig.stop()
