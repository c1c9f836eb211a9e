"""Agent silence: the collector marks an agent offline on its Last Will or on missed heartbeats,
online again on birth or heartbeat; each change is an event in the store."""

from __future__ import annotations

import signal
from pathlib import Path

from collector.broker import Mosquitto
from tests.support import Rig, wait_for


def _state(rig: Rig) -> bool | None:
    row = next((a for a in rig.store.agents() if a.id == "a1"), None)
    return None if row is None else row.online


def _offline_reasons(rig: Rig) -> list[str]:
    return [r["data"]["reason"] for r in rig.store.records_of("a1", "agent.offline")]


def test_killed_agent_goes_offline_and_comes_back(tmp_path: Path, broker: Mosquitto) -> None:
    """kill -9 → offline via the Last Will within the deadline; restart → online via birth;
    a frozen agent (SIGSTOP: socket open, no heartbeats) → offline via the heartbeat deadline."""
    rig = Rig(tmp_path, broker.port, agent={"heartbeat": 0.5}, deadline_factor=3)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: _state(rig) is True, 30, what="agent online")
    rig.agent.kill()
    wait_for(lambda: _state(rig) is False, 1.5 + 1.0, 0.05, what="offline within the 1.5 s deadline")
    assert _offline_reasons(rig) == ["last_will"]
    rig.agent.start()
    wait_for(lambda: _state(rig) is True, 15, what="online after restart")
    rig.agent.signal(signal.SIGSTOP)
    wait_for(lambda: _state(rig) is False, 1.5 + 1.5, 0.05, what="offline after missed heartbeats")
    assert _offline_reasons(rig) == ["last_will", "heartbeat_timeout"]
    rig.agent.signal(signal.SIGCONT)
    wait_for(lambda: _state(rig) is True, 10, what="online after heartbeats resume")
    online = [r["data"]["reason"] for r in rig.store.records_of("a1", "agent.online")]
    assert online[:2] == ["birth", "birth"] and online[-1] in ("heartbeat", "birth")
    rig.stop()


def test_stopped_agent_goes_offline_at_once(tmp_path: Path, broker: Mosquitto) -> None:
    """A deliberate stop (SIGTERM) asks the broker for the Last Will, so the agent is not left
    'online' until a deadline passes."""
    rig = Rig(tmp_path, broker.port, agent={"heartbeat": 5.0}, deadline_factor=3)
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: _state(rig) is True, 30, what="agent online")
    rig.agent.stop()
    wait_for(lambda: _state(rig) is False, 3, 0.05, what="offline well before the 15 s heartbeat deadline")
    assert _offline_reasons(rig) == ["last_will"]
    rig.stop()
