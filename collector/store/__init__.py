"""SQL index of the vault: registry, records, dead letters. Rebuildable from the vault."""

from collector.store.store import AgentRow, Store

__all__ = ["AgentRow", "Store"]
