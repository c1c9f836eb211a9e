"""Rebuild the SQL index from the vault: the vault is the truth, the index only a copy of it.

The index tables filled from the vault (records, log_lines) are emptied and the agents' acked
watermarks reset, then every vault entry is indexed again by the ingest code itself
(:meth:`Ingestor._reindex_vault_tail`), so a rebuilt row is made exactly as the live one was.
The registry (venues, agents, devices), dead letters, the schedule and cases are not rebuilt and
are kept; the rulebook's cursor is moved past the rebuilt records.
Run it with the collector stopped.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from collector.ingest import Ingestor
from collector.store import Store
from collector.store import schema
from collector.store.store import NewRecord
from collector.vault import Vault
from protocol.keys import new_private_key


class _Rebuilder(Ingestor):
    """Ingest's re-indexing, replaying each agent's boot as the live collector knew it then."""

    def _collector_record(self, doc: dict[str, Any], received_at: float, payload: str, index: int) -> NewRecord:
        track = self.tracks[doc["agent_id"]]
        if doc["kind"] == "agent.online":
            track.boot = doc["data"]["boot"]  # live ingest set the boot before recording the event
        return super()._collector_record(doc, received_at, payload, index)


def rebuild(store: Store, vaults: dict[str, Vault]) -> int:
    """Drop the vault-derived index and re-create it from ``vaults`` (by vault id: one, or every
    collector's of a cluster, all stopped); return the number of records indexed.

    The vaults are indexed one after the other through ingest's locked path, so a seq held in two
    vaults (a collector killed between its vault write and its commit, whose agent resent to
    another) is indexed once, from the first vault that has it.
    """
    with store.engine.begin() as conn:
        conn.execute(schema.log_lines.delete())
        conn.execute(schema.records.delete())
        conn.execute(schema.vaults.update().values(indexed_upto=-1))
        conn.execute(schema.agents.update().values(acked_seq=0, above=[], gaps={}, clock_skewed=False,
                                                   ledger_version=schema.agents.c.ledger_version + 1))
    cursors: dict[str, int] = {}
    for vault_id, vault in sorted(vaults.items()):
        ing = _Rebuilder(store, vault, new_private_key(), vault_id=vault_id)  # the key signs acks, none are sent here
        ing.refresh_registry(force=True)
        for track in ing.tracks.values():
            track.boot = None
        ing._reindex_vault_tail(-1)  # noqa: SLF001 - the one place that indexes vault entries
        with store.engine.connect() as conn:
            top = conn.execute(sa.select(sa.func.max(schema.records.c.id)).where(schema.records.c.vault_id == vault_id)).scalar()
        cursors[vault_id] = int(top or 0)
    with store.engine.begin() as conn:
        # The rebuilt records are history the rulebook has already judged (cases keep vault leaves,
        # not record ids): its cursors move past them, or it would open every case again.
        conn.execute(schema.rule_state.delete().where(schema.rule_state.c.key == "cursor"))
        conn.execute(schema.rule_state.insert().values(key="cursor", value={"vaults": cursors}))
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.records)).scalar() or 0)
