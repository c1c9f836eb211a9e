"""The collector's list of event kinds (what rules may name) covers every kind the agent emits."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import WatchersSection
from collector.eventkinds import EVENT_KINDS

ROOT = Path(__file__).resolve().parents[1]
LITERAL = re.compile(
    r"[\"']((?:device|host|log|logs|isolation|lan|config|outbox|watcher|agent|camera|cameras|recorder|recorders)"
    r"\.[a-z_]+)[\"']")


def test_every_kind_the_agent_emits_is_known_to_the_collector() -> None:
    """Every event-kind literal in the agent's code, and every watcher's snapshot, is in EVENT_KINDS."""
    found = {m for path in (ROOT / "agent").rglob("*.py") for m in LITERAL.findall(path.read_text())}
    found |= {f"{name}.snapshot" for name in WatchersSection.model_fields}
    assert len(found) > 30
    assert sorted(found - set(EVENT_KINDS)) == []
