"""State: turns watcher observations into edge events plus periodic snapshots.

Edges say what changed; snapshots say what is, so a silent agent is distinguishable from a quiet
LAN and a collector that lost history can resynchronise. The last observation of each watcher is
persisted, so a change that happened while the agent was stopped is still reported at start.
"""

from __future__ import annotations

import time
from typing import Any

from agent.outbox import Outbox, Pending
from agent.watchers import Observation


class State:
    """Per-watcher memory of the last observation, kept in the outbox's state table."""

    def __init__(self, outbox: Outbox, snapshot_interval: float) -> None:
        self._outbox = outbox
        self._snapshot_interval = snapshot_interval
        self._last_snapshot: dict[str, float] = {}

    def observe(self, watcher: str, obs: Observation, now: float | None = None) -> list[Pending]:
        """Events for ``obs``: edges against the previous view, and a snapshot when due."""
        now = time.time() if now is None else now
        current = obs.to_json()
        previous: dict[str, Any] | None = self._outbox.load_state(watcher)
        out: list[Pending] = []
        # On the first run there is nothing to compare with: ``diff({})`` lets an observation
        # report conditions that are violations by their mere presence (a breach, a remote tool).
        base = previous if previous is not None else {}
        out += [Pending("ev", kind, now, data) for kind, data in obs.diff(base)]
        due = now - self._last_snapshot.get(watcher, float("-inf")) >= self._snapshot_interval
        if due or previous is None:
            out.append(Pending("ev", f"{watcher}.snapshot", now, current))
            self._last_snapshot[watcher] = now
        if previous != current:
            self._outbox.save_state(watcher, current)
        return out

    def error(self, watcher: str, message: str, now: float | None = None) -> list[Pending]:
        """A ``watcher.error`` event, once per distinct error (not once per failed run)."""
        key = f"error:{watcher}"
        if self._outbox.load_state(key) == message:
            return []
        self._outbox.save_state(key, message)
        return [Pending("ev", "watcher.error", time.time() if now is None else now, {"watcher": watcher, "error": message})]

    def recovered(self, watcher: str, now: float | None = None) -> list[Pending]:
        """A ``watcher.recovered`` event when a watcher that was failing works again."""
        key = f"error:{watcher}"
        if self._outbox.load_state(key) is None:
            return []
        self._outbox.save_state(key, None)
        return [Pending("ev", "watcher.recovered", time.time() if now is None else now, {"watcher": watcher})]
