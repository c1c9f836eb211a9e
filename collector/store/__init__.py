"""SQL index of the vault: registry, records, dead letters. Rebuildable from the vault."""

from collector.store.store import AgentRow, Store, insert_with_conflicts

__all__ = ["AgentRow", "Store", "insert_with_conflicts"]
