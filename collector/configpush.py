"""Signed configuration for agents: each venue's inventory and upcoming exam sessions, retained on
``vg/v1/<agent>/cfg``.

The collector is the only publisher. ``venues.inventory_version`` is the venue's *config version*
(the envelope seq; agents refuse an older one and ignore an equal one): an inventory import and a
schedule import that changes the venue's sessions each move it by one. The collector republishes
when it moves (an import by another process is noticed within seconds) and when an agent's birth
reports an older version than the venue's (an agent enrolled or reinstalled later). Retained, so an
agent that connects while the collector is down still gets it; signed, so nobody else can
whitelist a device or move an exam window.
"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.schedule_store import upcoming_sessions
from collector.store import Store
from protocol import topics
from protocol.envelope import Envelope, record
from protocol.inventory import Inventory
from protocol.schedule import Session

#: ``(topic, payload, retain)`` for the service to publish.
Outgoing = tuple[str, bytes, bool]
CHECK_EVERY = 2.0


def config_message(key: Ed25519PrivateKey, agent_id: str, inventory: Inventory, now: float,
                   sessions: tuple[Session, ...] = ()) -> Outgoing:
    """The signed, retained config of one agent; its seq is the venue's config version.

    ``sessions`` are the venue's exam sessions in force that have not ended: the agent probes
    harder inside their windows (past ones are left out to keep the message small).
    """
    data = {"inventory": inventory.to_json(), "sessions": [s.to_json() for s in sessions]}
    env = Envelope(agent_id, "collector", inventory.version, round(now, 3), "cfg", (record("config", now, data),))
    return topics.topic(agent_id, "cfg"), env.signed(key).encode(), True


class ConfigPublisher:
    """Decides which agents need their config (re)published."""

    def __init__(self, store: Store, key: Ed25519PrivateKey) -> None:
        self.store = store
        self.key = key
        self.published: dict[str, int] = {}  # agent -> inventory version it has (or was sent)
        self._next_check = 0.0

    def agent_has(self, agent_id: str, version: int) -> None:
        """What an agent reported holding (birth); an older one gets republished at the next check."""
        if version < self.published.get(agent_id, 0):
            self.published[agent_id] = version
            self._next_check = 0.0

    def due(self, now: float | None = None) -> list[Outgoing]:
        """Configs to publish now (checks the store at most every CHECK_EVERY seconds)."""
        mono = time.monotonic()
        if mono < self._next_check:
            return []
        self._next_check = mono + CHECK_EVERY
        versions = self.store.inventory_versions()
        stale = [a for a in self.store.agents()
                 if not a.revoked and versions.get(a.venue_id, 0) > 0
                 and self.published.get(a.id, -1) < versions[a.venue_id]]
        now = now or time.time()
        out: list[Outgoing] = []
        cache: dict[str, tuple[Inventory, tuple[Session, ...]]] = {}
        for agent in stale:
            if agent.venue_id not in cache:
                cache[agent.venue_id] = self._venue_config(agent.venue_id, now)
            inv, sessions = cache[agent.venue_id]
            out.append(config_message(self.key, agent.id, inv, now, sessions))
            self.published[agent.id] = inv.version
        return out

    def _venue_config(self, venue_id: str, now: float) -> tuple[Inventory, tuple[Session, ...]]:
        """The venue's inventory and its sessions that have not ended yet.

        The inventory (with the version) is read first: an import landing between the two reads
        then goes out under a version that is still older than the venue's, and is re-sent.
        """
        inventory = self.store.inventory(venue_id)
        sessions = tuple(s.session for s in upcoming_sessions(self.store, venue_id, now))
        return inventory, sessions
