"""The collector-signed configuration: the venue's registered-device inventory and its exam sessions.

Only a config signed by the collector's key (from the enrollment bundle), addressed to this
agent, and not older than the one held is applied; anything else is refused with a
``config.rejected`` event and the last good config stays in force. The venue has no way to add a
device locally: the inventory comes from here or not at all. The last good config is persisted,
so the agent judges the LAN correctly from its first second after a restart, broker or not.
"""

from __future__ import annotations

import logging
import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.outbox import Outbox, Pending
from protocol.envelope import decode
from protocol.errors import ProtocolError
from protocol.inventory import Inventory
from protocol.schedule import Session

log = logging.getLogger("venueguard.agent.config")


class RemoteConfig:
    """Holds the last good signed config; thread-safe reads of the inventory."""

    def __init__(self, outbox: Outbox, agent_id: str, collector_key: Ed25519PublicKey) -> None:
        self._outbox = outbox
        self._agent_id = agent_id
        self._key = collector_key
        self._lock = threading.Lock()
        saved = outbox.load_state("config") or {}
        self._inventory = Inventory.from_json(saved["inventory"]) if saved.get("inventory") else None
        self._sessions = tuple(Session.from_json(s) for s in saved.get("sessions", []))

    def inventory(self) -> Inventory | None:
        """The inventory in force (None before the first config ever arrived)."""
        with self._lock:
            return self._inventory

    def sessions(self) -> tuple[Session, ...]:
        """The venue's exam sessions as last signed (empty before the first config)."""
        with self._lock:
            return self._sessions

    @property
    def version(self) -> int:
        inv = self.inventory()
        return inv.version if inv else 0

    def receive(self, payload: bytes) -> list[Pending]:
        """Apply a ``cfg`` message; return the events it causes (none for a repeat of the current one)."""
        try:
            inv, sessions = self._verified(payload)
        except ProtocolError as exc:
            log.error("refused a config: %s", exc)
            return self._rejected(exc.reason, exc.detail)
        if inv.version <= self.version:
            if inv.version < self.version:
                return self._rejected("stale_version", f"version {inv.version} is older than {self.version} in force")
            return []
        with self._lock:
            self._inventory, self._sessions = inv, sessions
        self._outbox.save_state("config", {"inventory": inv.to_json(), "sessions": [x.to_json() for x in sessions]})
        self._outbox.save_state("config_rejected", None)
        log.info("applied config version %d (%d registered devices)", inv.version, len(inv.devices))
        return [Pending("ev", "config.applied", time.time(),
                        {"version": inv.version, "devices": len(inv.devices), "sessions": len(sessions)})]

    def _verified(self, payload: bytes) -> tuple[Inventory, tuple[Session, ...]]:
        env = decode(payload)
        if env.stream != "cfg" or env.agent_id != self._agent_id:
            raise ProtocolError("wrong_target", f"config for {env.agent_id!r} on stream {env.stream!r}")
        if not env.verify(self._key):
            raise ProtocolError("bad_signature", "config is not signed by this agent's collector")
        try:
            data = env.records[0]["data"]
            inv = Inventory.from_json(data["inventory"])
            sessions = tuple(Session.from_json(s) for s in data.get("sessions", []))
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolError("bad_schema", f"config unreadable: {exc}") from exc
        if inv.version != env.seq:
            raise ProtocolError("bad_schema", f"inventory version {inv.version} differs from envelope seq {env.seq}")
        return inv, sessions

    def _rejected(self, reason: str, detail: str) -> list[Pending]:
        """One ``config.rejected`` per distinct refusal (a retained bad config comes back on every reconnect)."""
        key = f"{reason}: {detail}"
        if self._outbox.load_state("config_rejected") == key:
            return []
        self._outbox.save_state("config_rejected", key)
        return [Pending("ev", "config.rejected", time.time(), {"reason": reason, "detail": detail, "version_in_force": self.version})]
